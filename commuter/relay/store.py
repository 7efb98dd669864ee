"""What the relay's handlers need from storage, and the two stores that provide it.

`RelayStore` is the interface: nonces, uploads (`Upload`: streamed in, counted against the
quotas as they arrive, visible only once committed), listings, downloads as chunks, deletion
after the recipient's acknowledgement, expiry, usage. Two implementations:

- `FileStore` (the default, embedded): one relay process over a data dir
  (commuter/relay/storage.py; its nonces in SQLite beside it).
- `PgStore` (commuter/relay/pgstore.py, `--store postgresql://...`): any number of relay
  processes over one PostgreSQL database; everything, the ciphertext too, lives there.

A store holds only what the handlers give it: ciphertext whose signed digest and seal header
the app checks before `Upload.commit`.
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO, NamedTuple

from commuter.errors import RelayError
from commuter.fsutil import CHUNK
from commuter.peer import auth
from commuter.relay import quotas
from commuter.relay.quotas import Limits
from commuter.relay.storage import Item, Storage

__all__ = ["Claim", "FileStore", "Item", "RelayStore", "StoreUnavailable", "Upload"]


class StoreUnavailable(RelayError):
    """The relay's database did not answer: 503, try again (the code stays `relay`)."""

    http_status = 503


class Claim(NamedTuple):
    """A signed request's nonce, for `RelayStore.claim_nonce` (`claim_nonce(*claim)`), or
    for the request's first store call to record in the same step (`claim=`)."""

    key: bytes
    nonce: str
    now: float


class Upload(abc.ABC):
    """One upload in progress. `write` counts each chunk against the quotas before it is
    kept (TooLarge, QuotaExceeded, StorageFull); nothing is visible until `commit`; `close`
    (always called) releases what an uncommitted upload holds."""

    size: int = 0

    @abc.abstractmethod
    async def write(self, chunk: bytes) -> None: ...

    @abc.abstractmethod
    async def commit(self, digest: str, ttl: float) -> Item:
        """Take one of the mailbox's item slots (QuotaExceeded if none is free) and make
        the item visible, durably, in one step."""

    @abc.abstractmethod
    async def close(self) -> None: ...


class RelayStore(abc.ABC):
    """Storage for the relay app; see the module docstring."""

    limits: Limits
    # The cache `auth.verify_headers` checks and records nonces in; `claim_nonce` then
    # completes the check where the cache alone is not the whole truth (several relays).
    nonces: auth.NonceCache

    def describe(self) -> str:
        """Where the data lives, for the start-up line (no secrets)."""
        return type(self).__name__

    async def start(self) -> None:
        """Connect, create or migrate what is needed."""
        return

    async def close(self) -> None:
        """Release connections and locks."""
        return

    async def claim_nonce(self, key: bytes, nonce: str, now: float) -> None:
        """ReplayedRequest if another relay on this store saw (key, nonce) within the
        window; RateLimited past the rates (kept where the nonces are). No-op where `nonces`
        is all.

        Each request's first store call below takes its Claim as `claim=` and records it in
        the same step (PgStore: in the same statement, one round trip); a handler that
        answers without a store call claims with this."""
        return

    @abc.abstractmethod
    async def begin_upload(
        self, mailbox: str, sender: str, declared: int | None, *, claim: Claim | None = None
    ) -> Upload:
        """Check an upload of `declared` bytes (None: unknown) could fit; count it in
        progress with 0 bytes (it holds what arrives). TooLarge/QuotaExceeded/StorageFull."""

    @abc.abstractmethod
    async def items(self, mailbox: str, *, claim: Claim | None = None) -> list[Item]:
        """The mailbox's unexpired items, oldest first."""

    @abc.abstractmethod
    async def get(self, mailbox: str, item_id: str) -> Item | None: ...

    async def open_item(
        self, mailbox: str, item_id: str, *, claim: Claim | None = None
    ) -> tuple[Item, AsyncIterator[bytes]] | None:
        """An item and its bytes (`read`, not started), for a download; None if it is not
        there. A store may fetch the first chunk along with the item (PgStore)."""
        if claim is not None:
            await self.claim_nonce(*claim)
        item = await self.get(mailbox, item_id)
        return None if item is None else (item, self.read(item))

    def local_path(self, item: Item) -> Path | None:
        """A file holding the item's bytes, if the store has one (sent with sendfile)."""
        return None

    @abc.abstractmethod
    def read(self, item: Item) -> AsyncIterator[bytes]:
        """The item's bytes in chunks of at most the store's chunk size; ItemNotFound if it
        goes (expiry, a DELETE) before the last chunk."""

    @abc.abstractmethod
    async def delete(self, mailbox: str, item_id: str, *, claim: Claim | None = None) -> bool:
        """Remove an item for good (the recipient's acknowledgement); False if it is not
        there (already deleted, never was)."""

    @abc.abstractmethod
    async def expire(self, now: float | None = None) -> int:
        """Delete items past their expiry (cheap enough to call on every request)."""

    async def sweep(self) -> int:
        """The periodic clean-up: expiry, and whatever else the store keeps tidy."""
        return await self.expire()

    @abc.abstractmethod
    async def usage(
        self, *, mailbox: str | None = None, sender: str | None = None
    ) -> tuple[int, int]:
        """(items, bytes) as `Storage.usage` defines them."""


class FileStore(RelayStore):
    """The data dir of one relay process (`Storage`, indexed in memory, nonces in SQLite)."""

    def __init__(self, root: Path, limits: Limits, *, exclusive: bool = False) -> None:
        self.root = root
        self.limits = limits
        self.storage = Storage(root)
        if exclusive:
            self.storage.lock()
        self.storage.recover()
        # Nonces persist in the data dir: a request captured before a restart is refused after.
        self.nonces = auth.NonceCache(path=root / auth.NONCE_DB, rates=limits.rates)

    def describe(self) -> str:
        return f"data in {self.root}"

    async def close(self) -> None:
        self.nonces.close()
        self.storage.unlock()

    # A claim= is ignored here: verify_headers recorded the nonce in self.nonces already.

    async def begin_upload(
        self, mailbox: str, sender: str, declared: int | None, *, claim: Claim | None = None
    ) -> Upload:
        self.storage.expire()
        token = quotas.start_upload(self.storage, self.limits, mailbox, sender, declared)
        tmp = self.storage.temp_path()
        try:
            fh = await asyncio.to_thread(tmp.open, "wb")
        except BaseException:
            self.storage.release(token)
            raise
        return _FileUpload(self, token, tmp, fh)

    async def items(self, mailbox: str, *, claim: Claim | None = None) -> list[Item]:
        return self.storage.items(mailbox)

    async def get(self, mailbox: str, item_id: str) -> Item | None:
        return self.storage.get(mailbox, item_id)

    def local_path(self, item: Item) -> Path | None:
        return self.storage.path(item)

    async def read(self, item: Item) -> AsyncIterator[bytes]:
        with self.storage.path(item).open("rb") as fh:
            while chunk := await asyncio.to_thread(fh.read, CHUNK):
                yield chunk

    async def delete(self, mailbox: str, item_id: str, *, claim: Claim | None = None) -> bool:
        item = self.storage.get(mailbox, item_id)
        return item is not None and self.storage.delete(item)

    async def expire(self, now: float | None = None) -> int:
        return self.storage.expire(now)

    async def usage(
        self, *, mailbox: str | None = None, sender: str | None = None
    ) -> tuple[int, int]:
        return self.storage.usage(mailbox=mailbox, sender=sender)


class _FileUpload(Upload):
    """Streams into <data>/tmp/; committed by two renames (Storage.commit)."""

    def __init__(self, store: FileStore, token: int, tmp: Path, fh: BinaryIO) -> None:
        self.store, self.token, self.tmp, self.fh = store, token, tmp, fh
        self.mailbox = store.storage.reservation(token).mailbox
        self.sender = store.storage.reservation(token).sender

    async def write(self, chunk: bytes) -> None:
        quotas.receive(self.store.storage, self.store.limits, self.token, len(chunk))
        self.size += len(chunk)
        await asyncio.to_thread(self.fh.write, chunk)

    async def commit(self, digest: str, ttl: float) -> Item:
        storage = self.store.storage
        quotas.finish_upload(storage, self.store.limits, self.token)
        self.fh.close()
        return await asyncio.to_thread(
            storage.commit, self.tmp, self.mailbox, self.sender, digest, self.size, ttl
        )

    async def close(self) -> None:
        self.store.storage.release(self.token)
        self.fh.close()
        await asyncio.to_thread(self.tmp.unlink, True)


class Throttle:
    """True at most once per `every` seconds (work a request may trigger but need not repeat)."""

    def __init__(self, every: float) -> None:
        self.every = every
        self._last = -float("inf")

    def __call__(self) -> bool:
        now = time.monotonic()
        if now - self._last < self.every:
            return False
        self._last = now
        return True
