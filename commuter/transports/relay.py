"""Relay transport: signed uploads to the recipient's mailbox on `commuter relay serve`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from commuter.errors import CommuterError, ConfigError, RelayError, TooLarge
from commuter.peer import auth
from commuter.peer.client import connect_reason, watched_body
from commuter.peer.peers import Peer
from commuter.transports import Incoming, Receipt, Transport, TransportContext
from commuter.transports.state import CHUNK, sha256_file

PROBE_TIMEOUT = 3.0


def _error_from(status: int, body: bytes, url: str) -> CommuterError:
    from commuter.relay.quotas import RELAY_ERRORS

    try:
        data = json.loads(body)
        code, message = str(data["error"]), str(data["message"])
    except (ValueError, KeyError, TypeError):
        return RelayError(f"the relay at {url} answered HTTP {status}")
    return RELAY_ERRORS.get(code, RelayError)(f"relay: {message}")


class RelayTransport(Transport):
    """Store-and-forward through the relay named by config `relay`."""

    scheme = "relay"
    discard_strangers = True  # anyone who knows a device id can fill its mailbox's quota

    def __init__(self, ctx: TransportContext, *, url: str | None = None,
                 probe_timeout: float = PROBE_TIMEOUT) -> None:
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
            timeout = aiohttp.ClientTimeout(
                total=None, sock_connect=self.ctx.settings.connect_timeout,
                sock_read=self.ctx.settings.stall_timeout,
            )
            self._session = aiohttp.ClientSession(timeout=timeout)
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _down(self, exc: BaseException) -> RelayError:
        if isinstance(exc, TimeoutError) and not str(exc):
            return RelayError(f"the relay at {self.url} is unreachable (it did not answer in time)")
        return RelayError(f"the relay at {self.url} is unreachable ({connect_reason(exc)})")

    async def _request(self, method: str, path: str, *, body: Any = None,
                       digest: str = auth.EMPTY_SHA256, length: int | None = None,
                       dst: Path | None = None, signed: bool = True) -> Any:
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
                async with http.request(method, URL(self.url + path, encoded=True), data=data,
                                        headers=headers) as resp:
                    if resp.status >= 400:
                        raise _error_from(resp.status, await resp.read(), self.url)
                    if dst is None:
                        return await resp.json(content_type=None)
                    fh = await asyncio.to_thread(dst.open, "wb")
                    try:
                        async for chunk in resp.content.iter_chunked(CHUNK):
                            await asyncio.to_thread(fh.write, chunk)
                    finally:
                        fh.close()
                    return None
        except CommuterError:
            raise
        except (aiohttp.SocketTimeoutError, TimeoutError) as exc:
            if deadline.expired():
                raise RelayError(f"the relay at {self.url} took nothing of the upload for "
                                 f"{stall:g} s") from exc
            raise self._down(exc) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise self._down(exc) from exc
        except ValueError as exc:
            raise RelayError(f"the relay at {self.url} sent a malformed reply") from exc

    async def health(self) -> dict[str, Any]:
        """GET / of the relay (cached): status and limits."""
        if self._health is None:
            data = await asyncio.wait_for(self._request("GET", "/", signed=False),
                                          self.probe_timeout)
            if not isinstance(data, dict) or data.get("service") != "commuter-relay":
                raise RelayError(f"{self.url} is not a commuter relay")
            self._health = data
        return self._health

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
        try:
            limit = int((await self.health()).get("limits", {}).get("max_bundle", 0))
        except TimeoutError as exc:
            raise self._down(exc) from exc
        if limit and size > limit:
            raise TooLarge(f"bundle is {size // 2**20 + 1} MB, the relay at {self.url} accepts "
                           f"at most {limit // 2**20} MB")
        ids = []
        for peer in to:
            answer = await self._request("POST", f"/v1/mailbox/{peer.device_id}",
                                         body=_chunks(sealed), digest=digest, length=size)
            ids.append(str(answer.get("id", "")))
        return Receipt(self.scheme, ",".join(ids), tuple(p.name for p in to), self.url, size)

    def _box(self) -> str:
        return f"/v1/mailbox/{self.ctx.identity.device_id}"

    async def pending(self) -> list[Incoming]:
        """This machine's mailbox on the relay."""
        try:
            await self.health()  # a relay that does not answer fails in seconds, not minutes
        except TimeoutError as exc:
            raise self._down(exc) from exc
        data = await self._request("GET", self._box())
        try:
            return [
                Incoming(self.scheme, str(i["id"]), f"relay:{i['id']}", int(i["size"]),
                         str(i["digest"]), True, str(i["sender"]))
                for i in data["items"]
            ]
        except (KeyError, TypeError, ValueError) as exc:
            raise RelayError(f"the relay at {self.url} sent a malformed listing") from exc

    async def fetch(self, item: Incoming, dst_dir: Path) -> Path:
        """Download one item; its digest must match the listing."""
        dst = dst_dir / f"{item.id}.sealed"
        await self._request("GET", f"{self._box()}/{item.id}", dst=dst)
        if await asyncio.to_thread(sha256_file, dst) != item.digest:
            raise RelayError(f"relay item {item.id} arrived damaged; will retry next pull")
        return dst

    async def ack(self, item: Incoming) -> None:
        """Delete the item from the mailbox (after a successful import)."""
        await self._request("DELETE", f"{self._box()}/{item.id}")


def _digest_size(path: Path) -> tuple[str, int]:
    return sha256_file(path), path.stat().st_size


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    fh = await asyncio.to_thread(path.open, "rb")
    try:
        while chunk := await asyncio.to_thread(fh.read, CHUNK):
            yield chunk
    finally:
        fh.close()
