"""The single tree of errors commuter expects and can explain to a user.

CommuterError
 +-- ConfigError
 +-- BundleError           a bundle is truncated, corrupt, hostile or of a newer format
 +-- OutputError           an output path commuter will not write to (not a regular file, ...)
 +-- BackendError
 |    +-- SessionNotFound
 |    +-- AmbiguousSession
 |    +-- SessionBusy       a running agent is writing to the session
 |    +-- ConsentRequired   replacing a local file needs a yes on a TTY or a flag
 +-- PeerError
 |    +-- NotPaired
 |    +-- BadSignature
 |    +-- ReplayedRequest
 |    +-- PairingFailed
 |    +-- PeerUnreachable
 |    +-- TooLarge
 +-- TransportError
      +-- UnknownTransport
      +-- RelayError
"""

from __future__ import annotations

from typing import ClassVar


class CommuterError(Exception):
    """Base for every failure commuter expects and can explain."""

    exit_code: ClassVar[int] = 1
    code: ClassVar[str] = "error"
    hint: ClassVar[str | None] = None
    http_status: ClassVar[int] = 400


class ConfigError(CommuterError):
    code = "config"


class BundleError(CommuterError):
    code = "bad-bundle"


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


class ConsentRequired(BackendError):
    code = "consent-required"


class PeerError(CommuterError):
    code = "peer"


class NotPaired(PeerError):
    code, http_status = "not-paired", 403
    hint: ClassVar[str | None] = "run `commuter pair` first"


class BadSignature(PeerError):
    code, http_status = "bad-signature", 401


class ReplayedRequest(PeerError):
    code, http_status = "replayed", 401


class PairingFailed(PeerError):
    code, http_status = "pairing-failed", 403


class PeerUnreachable(PeerError):
    code, http_status = "unreachable", 502


class TooLarge(PeerError):
    code, http_status = "too-large", 413


class TransportError(CommuterError):
    code = "transport"


class UnknownTransport(TransportError):
    code = "unknown-transport"


class RelayError(TransportError):
    code = "relay"


ERRORS_BY_CODE: dict[str, type[CommuterError]] = {
    cls.code: cls
    for cls in (
        CommuterError, ConfigError, BundleError, OutputError, BackendError, SessionNotFound,
        AmbiguousSession, SessionBusy, ConsentRequired, PeerError, NotPaired, BadSignature,
        ReplayedRequest, PairingFailed, PeerUnreachable, TooLarge, TransportError,
        UnknownTransport, RelayError,
    )
}
