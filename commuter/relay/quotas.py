"""Relay limits (size cap, expiry, quotas per mailbox, sender, sender for one mailbox and
for the whole relay, request rates, stalled uploads); their errors are in commuter.errors."""

from __future__ import annotations

from dataclasses import dataclass

from commuter.errors import QuotaExceeded, StorageFull, TooLarge
from commuter.peer.auth import DEFAULT_RATES, Rates
from commuter.relay.storage import Storage

MB = 1024 * 1024
DAY = 86400.0


@dataclass(frozen=True, slots=True)
class Limits:
    """What one relay accepts; defaults suit a personal relay for a few machines."""

    max_bundle: int = 512 * MB
    ttl: float = 7 * DAY
    mailbox_items: int = 200
    mailbox_bytes: int = 2048 * MB
    sender_items: int = 400
    sender_bytes: int = 4096 * MB
    # One sender's share of one mailbox: a stranger's key cannot fill a mailbox on its own.
    sender_mailbox_items: int = 100
    sender_mailbox_bytes: int = 1024 * MB
    total_bytes: int = 20 * 1024 * MB  # everything the relay stores (507 past it)
    body_stall: float = 60.0  # an upload that sends nothing for this long is dropped
    rates: Rates = DEFAULT_RATES  # signed requests per key, and from keys not seen lately
    sweep_interval: float = 60.0

    def public(self) -> dict[str, float]:
        """The limits a client may plan with (shown by GET /)."""
        return {
            "max_bundle": self.max_bundle,
            "ttl": self.ttl,
            "mailbox_items": self.mailbox_items,
            "mailbox_bytes": self.mailbox_bytes,
        }


def check_size(limits: Limits, size: int) -> None:
    """TooLarge if one bundle of `size` bytes is over the cap."""
    if size > limits.max_bundle:
        raise TooLarge(
            f"bundle is {size // MB + 1} MB, the relay accepts at most {limits.max_bundle // MB} MB"
        )


def check_quota(
    storage: Storage, limits: Limits, mailbox: str, sender: str, size: int, *, new_item: bool = True
) -> None:
    """QuotaExceeded (StorageFull for the whole relay) if `size` more bytes, and one more
    item if `new_item`, would pass a quota. Uploads in progress count as Storage.usage says."""
    more = 1 if new_item else 0
    n, used = storage.usage(mailbox=mailbox)
    if n + more > limits.mailbox_items or used + size > limits.mailbox_bytes:
        raise QuotaExceeded(
            f"the recipient's relay mailbox is full ({n} bundles, {used // MB} MB); "
            "it empties as the recipient runs `commuter pull`"
        )
    n, used = storage.usage(mailbox=mailbox, sender=sender)
    if n + more > limits.sender_mailbox_items or used + size > limits.sender_mailbox_bytes:
        raise QuotaExceeded(
            f"this machine has too much queued on the relay for that recipient ({n} bundles, "
            f"{used // MB} MB); wait until it pulls"
        )
    n, used = storage.usage(sender=sender)
    if n + more > limits.sender_items or used + size > limits.sender_bytes:
        raise QuotaExceeded(
            f"this machine has too much queued on the relay ({n} bundles, {used // MB} MB); "
            "wait until the recipients pull"
        )
    _, used = storage.usage()
    if used + size > limits.total_bytes:
        raise StorageFull("the relay's storage is full; try again after recipients pull")


def start_upload(
    storage: Storage, limits: Limits, mailbox: str, sender: str, declared: int | None
) -> int:
    """Check that an upload of `declared` bytes (None: unknown) could fit, then count it as
    in progress with 0 bytes: it holds only what arrives (`receive`) until `storage.release`.
    No await between check and reservation, so concurrent uploads cannot pass a quota."""
    if declared is not None:
        check_size(limits, declared)
    check_quota(storage, limits, mailbox, sender, declared or 1)
    return storage.reserve(mailbox, sender)


def receive(storage: Storage, limits: Limits, token: int, nbytes: int) -> None:
    """`nbytes` more arrived for upload `token`: QuotaExceeded/StorageFull if they do not fit."""
    res = storage.reservation(token)
    check_size(limits, res.size + nbytes)
    check_quota(storage, limits, res.mailbox, res.sender, nbytes, new_item=False)
    storage.grow(token, nbytes)


def finish_upload(storage: Storage, limits: Limits, token: int) -> None:
    """The upload is verified: it takes one of its mailbox's item slots, if one is free."""
    res = storage.reservation(token)
    n, used = storage.usage(mailbox=res.mailbox)
    if n + 1 > limits.mailbox_items:
        raise QuotaExceeded(
            f"the recipient's relay mailbox is full ({n} bundles, {used // MB} MB); "
            "it empties as the recipient runs `commuter pull`"
        )
    storage.finalize(token)
