"""Relay limits (size cap, expiry, per-mailbox and per-sender quotas) and their errors."""

from __future__ import annotations

from dataclasses import dataclass

from commuter.errors import ERRORS_BY_CODE, CommuterError, RelayError, TooLarge
from commuter.relay.storage import Storage

MB = 1024 * 1024
DAY = 86400.0


class QuotaExceeded(RelayError):
    """The mailbox or the sender has too much queued already."""

    code, http_status = "relay-full", 429


class MailboxForbidden(RelayError):
    """A request for a mailbox signed by a key that does not own it."""

    code, http_status = "relay-forbidden", 403


class ItemNotFound(RelayError):
    code, http_status = "relay-not-found", 404


RELAY_ERRORS: dict[str, type[CommuterError]] = {
    **ERRORS_BY_CODE,
    QuotaExceeded.code: QuotaExceeded,
    MailboxForbidden.code: MailboxForbidden,
    ItemNotFound.code: ItemNotFound,
}


@dataclass(frozen=True, slots=True)
class Limits:
    """What one relay accepts; defaults suit a personal relay for a few machines."""

    max_bundle: int = 512 * MB
    ttl: float = 7 * DAY
    mailbox_items: int = 200
    mailbox_bytes: int = 2048 * MB
    sender_items: int = 400
    sender_bytes: int = 4096 * MB
    sweep_interval: float = 60.0

    def public(self) -> dict[str, float]:
        """The limits a client may plan with (shown by GET /)."""
        return {"max_bundle": self.max_bundle, "ttl": self.ttl,
                "mailbox_items": self.mailbox_items, "mailbox_bytes": self.mailbox_bytes}


def check_size(limits: Limits, size: int) -> None:
    """TooLarge if one bundle of `size` bytes is over the cap."""
    if size > limits.max_bundle:
        raise TooLarge(
            f"bundle is {size // MB + 1} MB, the relay accepts at most {limits.max_bundle // MB} MB"
        )


def check_quota(storage: Storage, limits: Limits, mailbox: str, sender: str, size: int) -> None:
    """QuotaExceeded if adding `size` bytes would put the mailbox or the sender over quota."""
    check_size(limits, size)
    n, used = storage.usage(mailbox=mailbox)
    if n + 1 > limits.mailbox_items or used + size > limits.mailbox_bytes:
        raise QuotaExceeded(
            f"the recipient's relay mailbox is full ({n} bundles, {used // MB} MB); "
            "it empties as the recipient runs `commuter pull`"
        )
    n, used = storage.usage(sender=sender)
    if n + 1 > limits.sender_items or used + size > limits.sender_bytes:
        raise QuotaExceeded(
            f"this machine has too much queued on the relay ({n} bundles, {used // MB} MB); "
            "wait until the recipients pull"
        )


def reserve(storage: Storage, limits: Limits, mailbox: str, sender: str, size: int) -> int:
    """check_quota, then count `size` bytes as in use until `storage.release(token)`."""
    check_quota(storage, limits, mailbox, sender, size)
    return storage.reserve(mailbox, sender, size)
