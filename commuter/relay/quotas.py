"""Relay limits (size cap, expiry, quotas per mailbox, sender, sender for one mailbox and
for the whole relay, request rates, stalled uploads); their errors are in commuter.errors.

Both stores check the same quotas in the same order with the same messages: `quota_table`
names them, `quota_error` words a refusal. The file store counts in memory (`check_quota`
and the upload steps below); the PostgreSQL store counts in one table, in the transaction
that stores the bytes (commuter/relay/pgstore.py)."""

from __future__ import annotations

from dataclasses import dataclass

from commuter.errors import QuotaExceeded, RelayError, StorageFull, TooLarge
from commuter.peer.auth import DEFAULT_RATES, Rates
from commuter.relay.storage import Storage, UsageKey

MB = 1024 * 1024
DAY = 86400.0
UNLIMITED = 1 << 62  # no cap on that count (the relay's item count)


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


def quota_table(limits: Limits, mailbox: str, sender: str) -> list[tuple[UsageKey, int, int]]:
    """(usage key, most items, most bytes) of every quota an upload from `sender` to
    `mailbox` counts against, in the order they are checked."""
    return [
        (("box", mailbox), limits.mailbox_items, limits.mailbox_bytes),
        (("pair", mailbox, sender), limits.sender_mailbox_items, limits.sender_mailbox_bytes),
        (("from", sender), limits.sender_items, limits.sender_bytes),
        (("all",), UNLIMITED, limits.total_bytes),
    ]


def quota_error(kind: str, items: int, used: int) -> RelayError:
    """The refusal for the quota of kind `kind` (a usage key's first part) holding `items`
    bundles and `used` bytes."""
    if kind == "box":
        return QuotaExceeded(
            f"the recipient's relay mailbox is full ({items} bundles, {used // MB} MB); "
            "it empties as the recipient runs `commuter pull`"
        )
    if kind == "pair":
        return QuotaExceeded(
            f"this machine has too much queued on the relay for that recipient ({items} "
            f"bundles, {used // MB} MB); wait until it pulls"
        )
    if kind == "from":
        return QuotaExceeded(
            f"this machine has too much queued on the relay ({items} bundles, {used // MB} MB); "
            "wait until the recipients pull"
        )
    return StorageFull("the relay's storage is full; try again after recipients pull")


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
    for key, most_items, most_bytes in quota_table(limits, mailbox, sender):
        n, used = storage.usage_of(key)
        if n + more > most_items or used + size > most_bytes:
            raise quota_error(key[0], n, used)


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
        raise quota_error("box", n, used)
    storage.finalize(token)
