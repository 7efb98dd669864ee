"""The single tree of errors commuter expects and can explain to a user, and the exit codes.

CommuterError                     exit 1 unless noted; `code` is its id on the wire
 +-- ConfigError
 +-- BundleError           a bundle is truncated, corrupt, hostile or of a newer format
 |    +-- DeltaBaseMismatch  a delta bundle's base is not what this machine holds (409)
 +-- OutputError           an output path commuter will not write to (not a regular file, ...)
 +-- BackendError
 |    +-- SessionNotFound
 |    +-- AmbiguousSession
 |    +-- SessionBusy       a running agent is writing to the session
 +-- PeerError
 |    +-- NotPaired
 |    |    +-- NotPairedThere   the peer's daemon no longer knows this machine
 |    |    +-- UnknownPeer      no paired machine goes by that name here
 |    +-- BadSignature
 |    +-- ReplayedRequest
 |    +-- RateLimited
 |    +-- NonceStoreError
 |    +-- PairingFailed
 |    +-- PeerUnreachable   exit 3
 |    +-- TooLarge
 +-- TransportError
      +-- UnknownTransport
      +-- RelayError
           +-- RelayUnreachable   exit 3
           +-- QuotaExceeded
           +-- MailboxForbidden
           +-- ItemNotFound
           +-- StorageFull
           +-- StorageLocked
           +-- UploadStalled
"""

from __future__ import annotations

from enum import IntEnum
from typing import ClassVar


class ExitStatus(IntEnum):
    """What `commuter` exits with (as httpie's ExitStatus); docs/user-guide.md has the table."""

    SUCCESS = 0
    ERROR = 1  # a failure commuter explains in one line (the default of every CommuterError)
    USAGE = 2  # click: an unknown option, a missing argument
    UNREACHABLE = 3  # a peer or a relay did not answer (worth trying again later)
    INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT
    BROKEN_PIPE = 141  # the reader of stdout went away: 128 + SIGPIPE


class CommuterError(Exception):
    """Base for every failure commuter expects and can explain."""

    exit_code: ClassVar[ExitStatus] = ExitStatus.ERROR
    code: ClassVar[str] = "error"
    hint: ClassVar[str | None] = None
    http_status: ClassVar[int] = 400


class ConfigError(CommuterError):
    code = "config"


class BundleError(CommuterError):
    code = "bad-bundle"


class DeltaBaseMismatch(BundleError):
    """A delta bundle (only what changed since a base) whose base this machine does not hold
    as the sender believes: the sender sends the whole session instead (LAN: HTTP 409)."""

    code, http_status = "delta-base", 409


class OutputError(CommuterError):
    code = "bad-output"


class BackendError(CommuterError):
    code = "backend"


class SessionNotFound(BackendError):
    code, http_status = "no-session", 404
    hint: ClassVar[str | None] = "see `commuter list`"


class AmbiguousSession(BackendError):
    code = "ambiguous-session"


class SessionBusy(BackendError):
    code = "session-busy"


class PeerError(CommuterError):
    code = "peer"


class NotPaired(PeerError):
    code, http_status = "not-paired", 403
    hint: ClassVar[str | None] = "run `commuter pair` first"


class NotPairedThere(NotPaired):
    """The peer's daemon does not know this machine's key (it unpaired us); the message says
    what to do, so no generic hint."""

    hint = None


class UnknownPeer(NotPaired):
    """No paired machine goes by this name or id. The message says what to do, and "pair
    first" would be wrong for a typo or for `unpair`."""

    hint = None


class BadSignature(PeerError):
    code, http_status = "bad-signature", 401


class ReplayedRequest(PeerError):
    code, http_status = "replayed", 401


class RateLimited(PeerError):
    """A key (or the crowd of keys this server has not heard from lately) is over its rate."""

    code, http_status = "rate-limited", 429


class NonceStoreError(PeerError):
    """The file that remembers nonces cannot be written: refuse rather than forget."""

    code, http_status = "nonce-store", 503


class PairingFailed(PeerError):
    code, http_status = "pairing-failed", 403


class PeerUnreachable(PeerError):
    exit_code = ExitStatus.UNREACHABLE
    code, http_status = "unreachable", 502


class TooLarge(PeerError):
    code, http_status = "too-large", 413


class TransportError(CommuterError):
    code = "transport"


class UnknownTransport(TransportError):
    code = "unknown-transport"


class RelayError(TransportError):
    code = "relay"


class RelayUnreachable(RelayError):
    """The relay did not answer, or stopped taking an upload."""

    exit_code = ExitStatus.UNREACHABLE
    code, http_status = "relay-unreachable", 502


class QuotaExceeded(RelayError):
    """The mailbox or the sender has too much queued already."""

    code, http_status = "relay-full", 429


class MailboxForbidden(RelayError):
    """A request for a mailbox signed by a key that does not own it."""

    code, http_status = "relay-forbidden", 403


class ItemNotFound(RelayError):
    code, http_status = "relay-not-found", 404


class StorageFull(RelayError):
    """The relay as a whole holds as much as it may (`total_bytes`)."""

    code, http_status = "relay-storage-full", 507


class StorageLocked(RelayError):
    """The data dir belongs to another running relay."""

    code = "relay-locked"


class UploadStalled(RelayError):
    """An upload body made no progress for `Limits.body_stall` seconds: dropped."""

    code, http_status = "relay-stalled", 408


def _by_code() -> dict[str, type[CommuterError]]:
    """Every class here that has a code of its own (a subclass that only changes the hint
    shares its parent's), so an error read back from the wire keeps its type."""
    found: dict[str, type[CommuterError]] = {}
    for value in list(globals().values()):
        if isinstance(value, type) and issubclass(value, CommuterError) and "code" in vars(value):
            if value.code in found:
                raise AssertionError(f"error code {value.code!r} is used twice")
            found[value.code] = value
    return found


ERRORS_BY_CODE: dict[str, type[CommuterError]] = _by_code()
