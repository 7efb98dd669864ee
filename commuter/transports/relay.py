"""Relay transport: signed uploads to the recipient's mailbox on `commuter relay serve`."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from commuter import progress
from commuter.errors import CommuterError, ConfigError, RelayError, RelayUnreachable, TooLarge
from commuter.fsutil import CHUNK, sha256_file
from commuter.http import (
    client_timeout,
    connect_reason,
    loads,
    read_capped,
    read_error,
    shown,
    watched_body,
)
from commuter.peer import auth
from commuter.peer.identity import normalize_device_id
from commuter.peer.peers import Peer
from commuter.transports import Incoming, Receipt, Transport, TransportContext

PROBE_TIMEOUT = 3.0
# A relay is untrusted (and plain HTTP can be altered on the way): everything it says is
# checked. Item ids are what relay.storage makes, and only ever go into a URL, never a path.
ITEM_ID = re.compile(r"^[0-9]{10}-[0-9a-f]{16}\Z")
SHA256 = re.compile(r"^[0-9a-f]{64}\Z")
MAX_JSON = 4 << 20  # a listing of thousands of items is well under this
MAX_ITEM = 8 << 30  # no download is larger, whatever the relay's advertised max_bundle
FETCHED = "relay-item.sealed"  # the name a download gets in its (fresh) staging dir


def _shown(text: str, limit: int = 80) -> str:
    """An id or a name from the relay, safe to print (see http.shown)."""
    return shown(text, limit)


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _device_id(value: object) -> str | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        return value if normalize_device_id(value) == value else None
    except ValueError:
        return None


class RelayTransport(Transport):
    """Store-and-forward through the relay named by config `relay`."""

    scheme = "relay"
    discard_strangers = True  # anyone who knows a device id can fill its mailbox's quota

    def __init__(
        self, ctx: TransportContext, *, url: str | None = None, probe_timeout: float = PROBE_TIMEOUT
    ) -> None:
        super().__init__(ctx)
        self._url = (url or ctx.config.relay or "").rstrip("/") or None
        self.probe_timeout = probe_timeout
        self._session: Any = None
        self._health: dict[str, Any] | None = None

    @property
    def url(self) -> str:
        if self._url is None:
            raise ConfigError("no relay configured; run `commuter config set relay URL`")
        return self._url

    async def _http(self) -> Any:
        import aiohttp

        if self._session is None:
            # sock_read bounds every silence of the answer; the upload body has its own bound.
            self._session = aiohttp.ClientSession(timeout=client_timeout(self.ctx.settings))
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _down(self, exc: BaseException) -> RelayUnreachable:
        if isinstance(exc, TimeoutError) and not str(exc):
            return RelayUnreachable(
                f"the relay at {self.url} is unreachable (it did not answer in time)"
            )
        return RelayUnreachable(f"the relay at {self.url} is unreachable ({connect_reason(exc)})")

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        digest: str = auth.EMPTY_SHA256,
        length: int | None = None,
        dst: Path | None = None,
        max_bytes: int = 0,
        signed: bool = True,
    ) -> Any:
        """The relay's JSON answer (at most MAX_JSON bytes); with `dst`, the body written there
        instead (at most `max_bytes`: RelayError as soon as more arrives) and its sha256."""
        import aiohttp
        from yarl import URL

        headers = auth.sign_headers(self.ctx.identity, method, path, digest) if signed else {}
        if length is not None:
            headers["Content-Length"] = str(length)
            headers["Content-Type"] = "application/octet-stream"
        http = await self._http()
        stall = self.ctx.settings.stall_timeout
        # aiohttp's sock_read starts only once the body is written: a relay that stops taking
        # the upload is caught by this deadline, pushed back as each chunk is taken.
        deadline = asyncio.timeout(None)
        try:
            async with deadline:
                data = None if body is None else watched_body(body, deadline, self.ctx.settings)
                async with http.request(
                    method, URL(self.url + path, encoded=True), data=data, headers=headers
                ) as resp:
                    if resp.status >= 400:
                        raise await read_error(
                            resp,
                            where=f"the relay at {self.url}",
                            fallback=RelayError,
                            prefix="relay: ",
                        )
                    if dst is None:
                        raw = await read_capped(resp, MAX_JSON)
                        if raw is None:
                            raise RelayError(f"the relay at {self.url} sent an oversized reply")
                        return loads(raw)
                    return await self._download(resp, dst, max_bytes)
        except CommuterError:
            raise
        except (aiohttp.SocketTimeoutError, TimeoutError) as exc:
            if deadline.expired():
                raise RelayUnreachable(
                    f"the relay at {self.url} took nothing of the upload for {stall:g} s"
                ) from exc
            raise self._down(exc) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise self._down(exc) from exc
        except ValueError as exc:
            raise RelayError(f"the relay at {self.url} sent a malformed reply") from exc

    async def _download(self, resp: Any, dst: Path, max_bytes: int) -> str:
        """The body into `dst`, hashed as it is written (one pass); its sha256. What arrives
        (pieces of ~25 KB when many downloads share the loop) is handed to the writing
        thread a CHUNK at a time, not a piece at a time."""
        import hashlib

        too_big = RelayError(
            f"the relay at {self.url} sent more than the {max_bytes} bytes it listed; dropped"
        )
        if resp.content_length is not None and resp.content_length > max_bytes:
            raise too_big
        size = 0
        digest = hashlib.sha256()
        held: list[bytes] = []
        held_size = 0

        def keep(parts: list[bytes]) -> None:
            for part in parts:
                digest.update(part)
                fh.write(part)

        fh = await asyncio.to_thread(dst.open, "wb")
        try:
            async for chunk in resp.content.iter_chunked(CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise too_big
                held.append(chunk)
                held_size += len(chunk)
                if held_size >= CHUNK:
                    await asyncio.to_thread(keep, held)
                    held, held_size = [], 0
                progress.advance(len(chunk))
            if held:
                await asyncio.to_thread(keep, held)
        except BaseException:
            fh.close()
            await asyncio.to_thread(dst.unlink, True)
            raise
        fh.close()
        return digest.hexdigest()

    async def health(self) -> dict[str, Any]:
        """GET / of the relay (cached): status and limits."""
        if self._health is None:
            data = await asyncio.wait_for(
                self._request("GET", "/", signed=False), self.probe_timeout
            )
            if not isinstance(data, dict) or data.get("service") != "commuter-relay":
                raise RelayError(f"{self.url} is not a commuter relay")
            if not isinstance(data.get("limits", {}), dict):
                raise RelayError(f"the relay at {self.url} sent a malformed reply")
            self._health = data
        return self._health

    async def _max_bundle(self) -> int:
        """The largest bundle the relay says it takes (0: it does not say)."""
        try:
            limits = (await self.health()).get("limits", {})
        except TimeoutError as exc:
            raise self._down(exc) from exc
        value = _int(limits.get("max_bundle"))
        return value if value is not None and value > 0 else 0

    async def reachable(self, peer: Peer | None) -> str | None:
        if self._url is None:
            return "no relay is configured (run `commuter config set relay URL`)"
        try:
            await self.health()
        except (CommuterError, TimeoutError) as exc:
            return str(exc) or f"the relay at {self._url} did not answer"
        return None

    async def send(self, sealed: Path, to: Sequence[Peer]) -> Receipt:
        """Upload the sealed file once per recipient mailbox."""
        if not to:
            raise RelayError("the relay needs a recipient (push --to PEER, or pair first)")
        digest, size = await asyncio.to_thread(_digest_size, sealed)
        limit = await self._max_bundle()
        if limit and size > limit:
            raise TooLarge(
                f"bundle is {size // 2**20 + 1} MB, the relay at {self.url} accepts "
                f"at most {limit // 2**20} MB"
            )
        ids = []
        for peer in to:
            answer = await self._request(
                "POST",
                f"/v1/mailbox/{peer.device_id}",
                body=_chunks(sealed),
                digest=digest,
                length=size,
            )
            item_id = answer.get("id") if isinstance(answer, dict) else None
            ids.append(item_id if isinstance(item_id, str) and ITEM_ID.match(item_id) else "?")
        return Receipt(self.scheme, ",".join(ids), tuple(p.name for p in to), self.url, size)

    def _box(self) -> str:
        return f"/v1/mailbox/{self.ctx.identity.device_id}"

    def _item_path(self, item: Incoming) -> str:
        if not ITEM_ID.match(item.id):  # pending() made it; checked again before any use
            raise RelayError(f"relay item id {_shown(item.id)!r} is malformed")
        return f"{self._box()}/{item.id}"

    async def pending(self) -> list[Incoming]:
        """This machine's mailbox on the relay; malformed items are skipped with one warning."""
        limit = min(await self._max_bundle() or MAX_ITEM, MAX_ITEM)
        data = await self._request("GET", self._box())
        listed = data.get("items") if isinstance(data, dict) else None
        if not isinstance(listed, list):
            raise RelayError(f"the relay at {self.url} sent a malformed listing")
        items: list[Incoming] = []
        bad: list[str] = []
        seen: set[str] = set()
        for entry in listed:
            item, why = self._incoming(entry, limit)
            if item is None or item.id in seen:
                bad.append(why or f"item {item.id if item else '?'} listed twice")
                continue
            seen.add(item.id)
            items.append(item)
        if bad:
            self.warnings.append(
                f"relay: skipped {len(bad)} malformed item(s) in the listing of {self.url} "
                f"(first: {bad[0]})"
            )
        return items

    def _incoming(self, entry: object, limit: int) -> tuple[Incoming | None, str]:
        """One listing entry, checked field by field (None and why if any is wrong)."""
        if not isinstance(entry, dict):
            return None, "not an object"
        item_id, size, digest = entry.get("id"), _int(entry.get("size")), entry.get("digest")
        sender = _device_id(entry.get("sender"))
        if not isinstance(item_id, str) or not ITEM_ID.match(item_id):
            shown = _shown(item_id) if isinstance(item_id, str) else type(item_id).__name__
            return None, f"bad id {shown!r}"
        if size is None or not 0 < size <= limit:
            return None, f"item {item_id}: bad size"
        if not isinstance(digest, str) or not SHA256.match(digest):
            return None, f"item {item_id}: bad digest"
        if sender is None:
            return None, f"item {item_id}: bad sender"
        if entry.get("mailbox", self.ctx.identity.device_id) != self.ctx.identity.device_id:
            return None, f"item {item_id}: listed for another mailbox"
        return Incoming(self.scheme, item_id, f"relay:{item_id}", size, digest, True, sender), ""

    async def fetch(self, item: Incoming, dst_dir: Path) -> Path:
        """Download one item to a name of this process's choosing; at most its listed size,
        and its digest must match the listing."""
        path = self._item_path(item)
        dst = dst_dir / FETCHED
        got = await self._request("GET", path, dst=dst, max_bytes=min(item.size, MAX_ITEM))
        if got != item.digest:
            await asyncio.to_thread(dst.unlink, True)
            raise RelayError(f"relay item {item.id} arrived damaged; will retry next pull")
        return dst

    async def peek(self, item: Incoming, n: int, *, offset: int = 0) -> bytes:
        """`n` bytes of an item from `offset` (fewer at its end), for its label (`status`,
        `pull --dry-run`) without downloading it: an HTTP Range request; of a relay that
        ignores Range, only `offset + n` bytes are read before the connection is dropped."""
        import aiohttp
        from yarl import URL

        n = max(n, 1)
        path = self._item_path(item)
        headers = auth.sign_headers(self.ctx.identity, "GET", path, auth.EMPTY_SHA256)
        headers["Range"] = f"bytes={offset}-{offset + n - 1}"
        http = await self._http()
        out = bytearray()
        try:
            async with asyncio.timeout(self.ctx.settings.stall_timeout):
                url = URL(self.url + path, encoded=True)
                async with http.get(url, headers=headers) as resp:
                    if resp.status == 416:  # offset at or past the end
                        return b""
                    if resp.status not in (200, 206):
                        raise RelayError(f"relay item {item.id}: HTTP {resp.status}")
                    skip = offset if resp.status == 200 else 0  # Range ignored: from byte 0
                    async for chunk in resp.content.iter_chunked(CHUNK):
                        out += chunk
                        if len(out) >= skip + n:
                            break
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise self._down(exc) from exc
        return bytes(out[skip : skip + n])

    async def ack(self, item: Incoming) -> None:
        """Delete the item from the mailbox (after a successful import)."""
        await self._request("DELETE", self._item_path(item))


def _digest_size(path: Path) -> tuple[str, int]:
    return sha256_file(path), path.stat().st_size


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    fh = await asyncio.to_thread(path.open, "rb")
    try:
        while chunk := await asyncio.to_thread(fh.read, CHUNK):
            yield chunk
            progress.advance(len(chunk))
    finally:
        fh.close()
