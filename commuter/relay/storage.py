"""The relay's mailboxes on disk: <data>/mailboxes/<device-id>/<item>.sealed plus <item>.json.

An upload streams into <data>/tmp/, is renamed into its mailbox, and counts only once its
meta file exists (written last, atomically). On start, tmp/ is emptied and a sealed file
without meta (a crash between the two renames) is removed: nothing is ever half-stored.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import re
import secrets
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from commuter.errors import StorageLocked
from commuter.fsutil import atomic_write_text, fsync_dir

SEALED = ".sealed"
META = ".json"
ITEM_ID = re.compile(r"^[0-9]{10}-[0-9a-f]{16}\Z")


@dataclass(frozen=True, slots=True)
class Item:
    """One queued bundle: ciphertext for `mailbox` from `sender` (device ids)."""

    id: str
    mailbox: str
    sender: str
    size: int
    digest: str
    created_at: float
    expires_at: float

    def public(self) -> dict[str, object]:
        """What the recipient sees in its listing."""
        return asdict(self)


@dataclass(slots=True)
class Reservation:
    """An upload in progress: the bytes received so far count against the quotas; it counts
    as one of the sender's items at once, as one of the mailbox's only once `final` (verified,
    about to be committed), so uploads that stall or fail never hold a mailbox's item slots."""

    mailbox: str
    sender: str
    size: int = 0
    final: bool = False


# Usage is counted under these keys: the mailbox, the sender, the pair, the whole relay.
UsageKey = tuple[str, ...]


def usage_key_for(mailbox: str | None, sender: str | None) -> UsageKey:
    """The one key `usage(mailbox=, sender=)` reads: the pair's, the mailbox's, the sender's
    or the whole relay's."""
    if mailbox is not None and sender is not None:
        return ("pair", mailbox, sender)
    if mailbox is not None:
        return ("box", mailbox)
    if sender is not None:
        return ("from", sender)
    return ("all",)


def _usage_keys(mailbox: str, sender: str) -> tuple[UsageKey, ...]:
    return (("box", mailbox), ("from", sender), ("pair", mailbox, sender), ("all",))


class Storage:
    """Mailboxes under `root`, indexed in memory; every change is a rename on disk."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.boxes_dir = root / "mailboxes"
        self.tmp_dir = root / "tmp"
        self._index: dict[str, dict[str, Item]] = {}
        self._reserved: dict[int, Reservation] = {}  # uploads in progress, by token
        self._tokens = itertools.count(1)
        # Running totals (items, bytes) under _usage_keys, stored items and reservations both.
        self._items: Counter[UsageKey] = Counter()
        self._bytes: Counter[UsageKey] = Counter()
        self._lock_fd: int | None = None

    def lock(self) -> None:
        """Hold `<root>/lock` for this process's life: two relays on one data dir would delete
        each other's uploads in progress. StorageLocked if another process holds it."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise StorageLocked(f"another relay is using {self.root}") from None
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def reserve(self, mailbox: str, sender: str) -> int:
        """Count an upload in progress in `usage` (as `grow` adds bytes) until `release`."""
        token = next(self._tokens)
        self._reserved[token] = Reservation(mailbox, sender)
        self._count(mailbox, sender, 1, 0, box_item=False)
        return token

    def reservation(self, token: int) -> Reservation:
        return self._reserved[token]

    def grow(self, token: int, nbytes: int) -> None:
        """`nbytes` more of the upload `token` arrived."""
        res = self._reserved[token]
        res.size += nbytes
        self._count(res.mailbox, res.sender, 0, nbytes)

    def finalize(self, token: int) -> None:
        """The upload is verified: it now takes one of its mailbox's item slots too."""
        res = self._reserved[token]
        if not res.final:
            res.final = True
            self._add(("box", res.mailbox), 1, 0)

    def release(self, token: int) -> None:
        res = self._reserved.pop(token, None)
        if res is not None:
            self._count(res.mailbox, res.sender, -1, -res.size, box_item=res.final)

    def _count(
        self, mailbox: str, sender: str, items: int, nbytes: int, *, box_item: bool = True
    ) -> None:
        for key in _usage_keys(mailbox, sender):
            self._add(key, items if box_item or key[0] != "box" else 0, nbytes)

    def _add(self, key: UsageKey, items: int, nbytes: int) -> None:
        self._items[key] += items
        self._bytes[key] += nbytes
        if not self._items[key] and not self._bytes[key]:
            del self._items[key], self._bytes[key]  # an idle key costs no memory

    def recover(self) -> int:
        """Create the folders, drop partial uploads and orphans, index what is complete."""
        self.boxes_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._index.clear()
        self._items.clear()
        self._bytes.clear()
        for box in sorted(p for p in self.boxes_dir.iterdir() if p.is_dir()):
            for path in sorted(box.iterdir()):
                if path.name.startswith(".") or path.suffix not in (SEALED, META):
                    path.unlink(missing_ok=True)  # a temp file left by a crash
                    continue
                if path.suffix == META:
                    item = self._load(path)
                    if item is None or item.mailbox != box.name:
                        path.unlink(missing_ok=True)
                        path.with_suffix(SEALED).unlink(missing_ok=True)
                        continue
                    self._index.setdefault(item.mailbox, {})[item.id] = item
                    self._count(item.mailbox, item.sender, 1, item.size)
                elif not path.with_suffix(META).is_file():
                    path.unlink(missing_ok=True)
        return self.count()

    def _load(self, meta: Path) -> Item | None:
        try:
            data = json.loads(meta.read_text(encoding="utf-8"))
            item = Item(
                id=str(data["id"]),
                mailbox=str(data["mailbox"]),
                sender=str(data["sender"]),
                size=int(data["size"]),
                digest=str(data["digest"]),
                created_at=float(data["created_at"]),
                expires_at=float(data["expires_at"]),
            )
            sealed = meta.with_suffix(SEALED)
            if item.id != meta.stem or sealed.stat().st_size != item.size:
                return None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return item

    def temp_path(self) -> Path:
        """A fresh name for an upload in progress."""
        return self.tmp_dir / f".upload-{secrets.token_hex(8)}.tmp"

    def path(self, item: Item) -> Path:
        return self.boxes_dir / item.mailbox / (item.id + SEALED)

    def commit(
        self, tmp: Path, mailbox: str, sender: str, digest: str, size: int, ttl: float
    ) -> Item:
        """Move a verified upload into `mailbox` (sealed file first, meta last)."""
        now = time.time()
        item = Item(
            id=f"{int(now):010d}-{secrets.token_hex(8)}",
            mailbox=mailbox,
            sender=sender,
            size=size,
            digest=digest,
            created_at=now,
            expires_at=now + ttl,
        )
        box = self.boxes_dir / mailbox
        box.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, self.path(item))
        atomic_write_text(box / (item.id + META), json.dumps(asdict(item)) + "\n")
        fsync_dir(box)  # the two renames survive a power cut before the 201 is sent
        self._index.setdefault(mailbox, {})[item.id] = item
        self._count(mailbox, sender, 1, size)
        return item

    def items(self, mailbox: str) -> list[Item]:
        """The mailbox's items, oldest first."""
        return sorted(self._index.get(mailbox, {}).values(), key=lambda i: i.id)

    def get(self, mailbox: str, item_id: str) -> Item | None:
        return self._index.get(mailbox, {}).get(item_id)

    def delete(self, item: Item) -> bool:
        """Remove an item (meta first, so a crash leaves at worst an orphan to sweep); False
        if it was no longer indexed."""
        box = self._index.get(item.mailbox, {})
        found = box.pop(item.id, None) is not None
        if found:
            self._count(item.mailbox, item.sender, -1, -item.size)
        if not box:
            self._index.pop(item.mailbox, None)
        folder = self.boxes_dir / item.mailbox
        (folder / (item.id + META)).unlink(missing_ok=True)
        self.path(item).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            folder.rmdir()
        return found

    def all_items(self) -> Iterator[Item]:
        for box in list(self._index.values()):
            yield from list(box.values())

    def expire(self, now: float | None = None) -> int:
        """Delete every item past its expiry; return how many."""
        current = time.time() if now is None else now
        gone = [item for item in self.all_items() if item.expires_at <= current]
        for item in gone:
            self.delete(item)
        return len(gone)

    def count(self) -> int:
        return sum(len(box) for box in self._index.values())

    def usage(self, *, mailbox: str | None = None, sender: str | None = None) -> tuple[int, int]:
        """(items, bytes) queued for `mailbox`, from `sender`, from `sender` for `mailbox`, or
        in all; uploads in progress count with the bytes received so far (see Reservation)."""
        return self.usage_of(usage_key_for(mailbox, sender))

    def usage_of(self, key: UsageKey) -> tuple[int, int]:
        """(items, bytes) counted under one of the keys `usage` names."""
        return self._items[key], self._bytes[key]
