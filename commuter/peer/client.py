"""PeerClient (signed requests to a peer's daemon), address lookup, send, fetch and pairing join."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from commuter.errors import (
    ERRORS_BY_CODE,
    CommuterError,
    ConfigError,
    NotPaired,
    PairingFailed,
    PeerError,
    PeerUnreachable,
    SessionNotFound,
)
from commuter.peer import auth, pairing
from commuter.peer.discovery import format_address
from commuter.peer.identity import Identity
from commuter.peer.peers import Peer, Peers
from commuter.peer.seal import Sealer, read_header, sealed_chunks, sealed_size
from commuter.settings import Settings

CHUNK = 1 << 20
Progress = Callable[[int], None]


def parse_address(text: str) -> tuple[str, int]:
    """("host", port) from "host:port" or "[v6]:port"; ConfigError if malformed."""
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{text!r} is not an address (expected HOST:PORT)")
    return host, int(port)


def base_url(address: str) -> str:
    host, port = parse_address(address)
    return f"http://{format_address(host, port)}"


_ERRNO_REASONS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.ECONNABORTED: "connection aborted",
    errno.EPIPE: "connection closed",
    errno.EHOSTUNREACH: "no route to host",
    errno.ENETUNREACH: "network is unreachable",
    errno.EHOSTDOWN: "host is down",
    errno.ETIMEDOUT: "timed out",
    errno.EADDRNOTAVAIL: "address not available",
}


def connect_reason(exc: BaseException) -> str:
    """Why a connection failed, in a few words ("connection refused"). aiohttp's own text
    repeats the host, the port and the socket call: `Cannot connect to host h:p ssl:default
    [Connect call failed ('h', p)]`; callers name the address once themselves."""
    import socket

    import aiohttp

    cause = exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else exc
    if isinstance(cause, socket.gaierror):
        return "cannot resolve the host name"
    if isinstance(exc, TimeoutError):  # aiohttp's ConnectionTimeoutError is one
        return "timed out"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the connection closed before an answer"
    number = getattr(cause, "errno", None)
    if not isinstance(number, int):
        # "Multiple exceptions: [Errno 111] ..., [Errno 111] ..." (one per resolved address)
        found = {int(n) for n in re.findall(r"\[Errno (\d+)\]", str(cause))}
        number = found.pop() if len(found) == 1 else None
    if number is not None and number > 0:
        reason = _ERRNO_REASONS.get(number) or os.strerror(number)
        return reason[:1].lower() + reason[1:]
    return str(cause) or type(cause).__name__


def _error_from(status: int, body: bytes, where: str) -> CommuterError:
    import json

    try:
        data = json.loads(body)
        code, message = str(data["error"]), str(data["message"])
    except (ValueError, KeyError, TypeError):
        return PeerError(f"{where} answered HTTP {status}")
    return ERRORS_BY_CODE.get(code, PeerError)(message)


class NotPairedThere(NotPaired):
    """The peer's daemon does not know this machine's key (it unpaired us); the message says
    what to do, so no generic hint."""

    hint = None


class PeerClient:
    """Signed requests to one paired peer's `commuter serve` (use `async with`)."""

    def __init__(
        self, settings: Settings, identity: Identity, peer: Peer, address: str, *,
        suggest_address: bool = False,
    ) -> None:
        self.settings = settings
        self.identity = identity
        self.peer = peer
        self.address = address
        # Errors end with "(or pass --address HOST:PORT)": only for a command that has that
        # option and where it was not given.
        self.suggest_address = suggest_address
        self.base = base_url(address)
        self._session: Any = None

    async def __aenter__(self) -> PeerClient:
        import aiohttp

        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.settings.connect_timeout,
            sock_read=self.settings.stall_timeout,
        )
        self._session = aiohttp.ClientSession(timeout=timeout)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()

    def _unreachable(self, exc: BaseException) -> PeerUnreachable:
        return PeerUnreachable(
            f"{self.peer.name} is unreachable at {self.address} ({connect_reason(exc)}); is "
            f"`commuter serve` running there?{_or_address(self.suggest_address)}"
        )

    def _refusal(self, exc: CommuterError) -> CommuterError:
        # The daemon words it from its own side ("this machine is not paired with the
        # sender"): say it from ours.
        if type(exc) is NotPaired:
            return NotPairedThere(
                f"{self.peer.name} does not accept this machine (it is not paired with it any "
                "more); run `commuter pair` on both machines to pair again"
            )
        return exc

    def _silent(self, waited: float) -> PeerUnreachable:
        return PeerUnreachable(
            f"{self.peer.name} at {self.address} did not answer within {waited:g} s; is "
            f"`commuter serve` running there?{_or_address(self.suggest_address)}"
        )

    async def _request(
        self,
        method: str,
        path_qs: str,
        *,
        body: AsyncIterator[bytes] | None = None,
        digest: str = auth.EMPTY_SHA256,
        length: int | None = None,
        dst: Path | None = None,
        wait: float | None = None,
    ) -> Any:
        """One signed request. `wait` bounds the silence before the answer and between its
        reads (default settings.stall_timeout); a body that cannot be written for
        stall_timeout seconds (the peer stopped reading) also fails."""
        import aiohttp
        from yarl import URL

        wait = self.settings.stall_timeout if wait is None else wait
        headers = auth.sign_headers(
            self.identity, method, path_qs, digest, audience=self.peer.device_id
        )
        if length is not None:
            headers["Content-Length"] = str(length)
            headers["Content-Type"] = "application/octet-stream"
        url = URL(self.base + path_qs, encoded=True)
        # aiohttp's sock_read only starts once the body is written: bound the writing here.
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.settings.connect_timeout, sock_read=wait
        )
        deadline = asyncio.timeout(None)
        try:
            async with deadline:
                data = None if body is None else watched_body(body, deadline, self.settings)
                async with self._session.request(
                    method, url, data=data, headers=headers, timeout=timeout
                ) as resp:
                    if resp.status >= 400:
                        raise self._refusal(
                            _error_from(resp.status, await resp.read(), self.peer.name)
                        )
                    if dst is None:
                        return await resp.json(content_type=None)
                    with dst.open("wb") as fh:
                        async for chunk in resp.content.iter_chunked(CHUNK):
                            fh.write(chunk)
                    return None
        except CommuterError:
            raise
        except aiohttp.ConnectionTimeoutError as exc:
            raise self._unreachable(exc) from exc
        except (aiohttp.SocketTimeoutError, TimeoutError) as exc:
            if deadline.expired():
                raise PeerUnreachable(
                    f"{self.peer.name} at {self.address} stalled: it took nothing of the "
                    f"upload for {self.settings.stall_timeout:g} s"
                ) from exc
            raise self._silent(wait) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise self._unreachable(exc) from exc
        except ValueError as exc:
            raise PeerError(f"{self.peer.name} sent a malformed reply") from exc

    async def info(self) -> dict[str, Any]:
        """The peer's public /v1/info (bounded by settings.reply_timeout)."""
        data = await self._request("GET", "/v1/info", wait=self.settings.reply_timeout)
        if not isinstance(data, dict):
            raise PeerError(f"{self.peer.name} sent a malformed reply")
        return dict(data)

    async def probe(self) -> None:
        """Fail fast unless a daemon answers here, as this peer (its device id; a hint only,
        the signed requests that follow are what count)."""
        info = await self.info()
        if info.get("device_id") != self.peer.device_id:
            advice = "; pass --address HOST:PORT" if self.suggest_address else ""
            raise PeerUnreachable(
                f"{self.address} answers as another machine ({info.get('name')!r}, "
                f"{info.get('device_id')}), not {self.peer.name} ({self.peer.device_id})"
                + advice
            )

    async def upload(self, sealed_path: Path, progress: Progress | None = None) -> dict[str, Any]:
        """POST an already sealed file to the peer's inbox; returns its JSON answer."""
        header = await asyncio.to_thread(read_header, sealed_path)
        size = (await asyncio.to_thread(sealed_path.stat)).st_size
        data = await self._request(
            "POST", "/v1/bundles", body=_chunks(sealed_path, progress),
            digest=auth.sealed_body_digest(header.digest), length=size,
        )
        return dict(data)

    async def upload_sealing(
        self, plain_path: Path, progress: Progress | None = None
    ) -> dict[str, Any]:
        """Seal a plain bundle to the peer while uploading it: no temp file, and sealing
        chunk n+1 (on a thread) overlaps sending chunk n."""
        sealer = Sealer(self.identity, [self.peer.public_key])
        size = (await asyncio.to_thread(plain_path.stat)).st_size
        data = await self._request(
            "POST", "/v1/bundles", body=sealed_chunks(plain_path, sealer, progress),
            digest=auth.sealed_body_digest(sealer.digest),
            length=sealed_size(size, len(sealer.prefix)),
        )
        return dict(data)

    async def list_sessions(self, project: str | None = None) -> list[dict[str, Any]]:
        """The peer's sessions, newest first."""
        from urllib.parse import urlencode

        path = "/v1/sessions" + (f"?{urlencode({'project': project})}" if project else "")
        data = await self._request("GET", path)
        return list(data["sessions"])

    async def fetch(self, session_id: str, dst_path: Path) -> Path:
        """Download one session, sealed to me, to `dst_path`."""
        from urllib.parse import quote

        path = f"/v1/sessions/{quote(session_id, safe='')}/bundle"
        await self._request("GET", path, dst=dst_path)
        return dst_path


def _or_address(suggest: bool) -> str:
    return " (or pass --address HOST:PORT)" if suggest else ""


async def watched_body(
    chunks: AsyncIterator[bytes], deadline: asyncio.Timeout, settings: Settings
) -> AsyncIterator[bytes]:
    """`chunks`, pushing `deadline` back each time the sender asks for the next one (the
    previous one was written); off once all is written (sock_read bounds the answer)."""
    loop = asyncio.get_running_loop()
    # The sender pulls this from aiohttp's writer task: the request may have ended already.
    async for chunk in chunks:
        with contextlib.suppress(RuntimeError):
            deadline.reschedule(loop.time() + settings.stall_timeout)
        yield chunk
    with contextlib.suppress(RuntimeError):
        deadline.reschedule(None)


async def _chunks(path: Path, progress: Progress | None) -> AsyncIterator[bytes]:
    # Read on the loop: a page-cache read of 1 MiB is cheaper than a thread hop.
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            if progress is not None:
                progress(len(chunk))
            yield chunk


async def find_addresses(
    settings: Settings, peer: Peer, explicit: str | None = None
) -> list[str]:
    """Where to try a peer, in order: --address alone; else what mDNS finds for its device
    id, then its last known address (if different). PeerUnreachable if there is nothing."""
    if explicit:
        parse_address(explicit)
        return [explicit]
    from commuter.peer.discovery import resolve

    try:
        found = await resolve(settings, peer, settings.mdns_timeout)
    except OSError:
        found = None
    candidates = [a for a in (found, peer.last_address) if a]
    if not candidates:
        raise PeerUnreachable(
            f"cannot find {peer.name} on the LAN and no address is known; "
            "pass --address HOST:PORT"
        )
    return list(dict.fromkeys(candidates))


async def find_address(settings: Settings, peer: Peer, explicit: str | None = None) -> str:
    """The first of `find_addresses`: --address, else mDNS, else the last known address."""
    return (await find_addresses(settings, peer, explicit))[0]


@contextlib.asynccontextmanager
async def _answering(
    settings: Settings, identity: Identity, peer: Peer, addresses: Sequence[str],
    suggest_address: bool,
) -> AsyncIterator[PeerClient]:
    """A client on the first of `addresses` where `peer` answers the probe (an mDNS answer
    may be stale while the last known address works, or the other way round)."""
    failed: list[PeerUnreachable] = []
    for address in addresses:
        async with PeerClient(
            settings, identity, peer, address, suggest_address=suggest_address
        ) as client:
            try:
                await client.probe()
            except PeerUnreachable as exc:
                failed.append(exc)
                continue
            yield client
            return
    if len(failed) == 1:
        raise failed[0]
    tried = " nor at ".join(f"{a} ({_why(e)})" for a, e in zip(addresses, failed, strict=True))
    raise PeerUnreachable(
        f"{peer.name} does not answer at {tried}; is `commuter serve` running there?"
        + _or_address(suggest_address)
    ) from failed[-1]


def _why(exc: PeerUnreachable) -> str:
    cause = exc.__cause__
    if cause is None:
        return "it is another machine"
    if isinstance(cause, TimeoutError):
        return "no answer"
    return connect_reason(cause)


async def send_file(
    settings: Settings,
    identity: Identity,
    peer: Peer,
    bundle: Path,
    address: str | Sequence[str],
    progress: Progress | None = None,
    *,
    suggest_address: bool = False,
) -> dict[str, Any]:
    """Seal a plain bundle to `peer` while uploading it to the first address where it
    answers (`address`: one, or candidates in order); remember that address on success.
    `suggest_address`: errors may advise --address (the user did not give one)."""
    addresses = [address] if isinstance(address, str) else list(address)
    async with _answering(settings, identity, peer, addresses, suggest_address) as client:
        answer = await client.upload_sealing(bundle, progress)
    _remember(settings, peer, client.address)
    return answer


def _remember(settings: Settings, peer: Peer, address: str) -> None:
    peers = Peers.load(settings)
    if peers.by_key(peer.public_key) is not None:
        peers.touch_address(peer.public_key, address)
        peers.save()


def _project_matches(settings: Settings, project: str | None, cwd: Path) -> int:
    """0 = same path, 1 = same via a path map, 2 = same repo basename, -1 = no match."""
    from commuter import config
    from commuter.pathmap import under

    if not project:
        return -1
    here = str(cwd.resolve())
    if project in (here, str(cwd)):
        return 0
    for a, b in config.load(settings).path_maps:
        for src, dst in ((a, b), (b, a)):
            if under(project, src) and under(here, dst):
                rest_p, rest_h = project[len(src.rstrip("/")) :], here[len(dst.rstrip("/")) :]
                if rest_p == rest_h:
                    return 1
    return 2 if Path(project).name == cwd.resolve().name else -1


async def fetch_latest(
    settings: Settings, peer: Peer, cwd: Path, *, address: str | None = None,
    identity: Identity | None = None,
) -> Path:
    """Download the peer's newest session for `cwd`'s project; the opened plain bundle path."""
    from commuter.peer.seal import open_file

    me = identity or Identity.load_or_create(settings)
    candidates = await find_addresses(settings, peer, address)
    async with _answering(settings, me, peer, candidates, address is None) as client:
        sessions = await client.list_sessions()
        ranked = [(_project_matches(settings, s.get("project"), cwd), i, s)
                  for i, s in enumerate(sessions)]
        ranked = [r for r in ranked if r[0] >= 0]
        if not ranked:
            raise SessionNotFound(f"{peer.name} has no session for {cwd.name}")
        _, _, best = min(ranked, key=lambda r: (r[0], r[1]))
        settings.staging_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmpdir = Path(tempfile.mkdtemp(prefix="fetch-", dir=settings.staging_dir))
        sealed = tmpdir / "bundle.sealed"
        try:
            await client.fetch(str(best["id"]), sealed)
            plain = tmpdir / f"{best['id']}.commuter"
            sender = await asyncio.to_thread(
                open_file, sealed, plain, me, is_trusted=lambda k: k == peer.public_key
            )
            if sender != peer.public_key:
                raise NotPaired(f"the bundle from {peer.name} is sealed by another key")
        except BaseException:
            shutil.rmtree(tmpdir, ignore_errors=True)
            raise
        sealed.unlink(missing_ok=True)
    _remember(settings, peer, client.address)
    return plain


async def join(
    settings: Settings,
    identity: Identity,
    name: str,
    code: pairing.Code,
    address: str,
    *,
    serve_port: int | None = None,
) -> Peer:
    """Pair with the inviter at `address` using `code`; store and return it (only if confirmed)."""
    import aiohttp

    from commuter.peer.discovery import local_addresses
    from commuter.peer.server import DEFAULT_PORT

    host, _port = parse_address(address)
    session = pairing.PairingSession(code, "joiner")
    base = base_url(address)
    timeout = aiohttp.ClientTimeout(total=30, sock_connect=settings.connect_timeout)

    async def post(path: str, payload: dict[str, Any]) -> Any:
        try:
            async with http.post(base + path, json=payload) as resp:
                body = await resp.read()
                if resp.status == 404:
                    raise PairingFailed(f"no pairing invitation is open at {address}")
                if resp.status >= 400:
                    raise _error_from(resp.status, body, address)
                import json

                return json.loads(body)
        except CommuterError:
            raise
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise PairingFailed(
                f"no pairing invitation is open at {address} ({connect_reason(exc)})"
            ) from exc
        except ValueError as exc:
            raise PairingFailed("pairing failed: the inviter sent a malformed reply") from exc

    async with aiohttp.ClientSession(timeout=timeout) as http:
        reply = await post("/pair/v1/hello", pairing.hello_request(code, session))
        session.finish(pairing.parse_spake(reply))
        mine = pairing.PeerInfo(
            name, identity.public_key, tuple(local_addresses(settings)), serve_port or DEFAULT_PORT
        )
        answer = await post("/pair/v1/confirm", pairing.confirm_message(session, identity, mine))
    mac, blob = pairing.parse_confirm_message(answer)
    session.check_confirmation(mac)
    info = session.open_info(blob)
    peer = Peer.new(info.name, info.public_key, format_address(host, info.port or DEFAULT_PORT))
    peers = Peers.load(settings)
    if peers.name_taken(peer) is not None:
        # The inviter learns our name first and has stored us by now; we learn its name last.
        raise PairingFailed(
            f"pairing failed: another machine is already paired here as {peer.name!r} (run "
            f"`commuter unpair {peer.name}`, then pair again; {peer.name} did store this one)"
        )
    peers.add(peer)
    peers.save()
    return peer

