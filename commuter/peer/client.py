"""PeerClient (signed requests to a peer's daemon), address lookup, send, fetch and pairing join."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, TypeVar, cast

from commuter import progress
from commuter.errors import (
    CommuterError,
    ConfigError,
    NotPaired,
    NotPairedThere,
    PairingFailed,
    PeerError,
    PeerUnreachable,
    SessionNotFound,
)
from commuter.fsutil import CHUNK
from commuter.http import (
    MAX_MESSAGE,
    client_timeout,
    connect_reason,
    loads,
    read_capped,
    read_error,
    watched_body,
)
from commuter.peer import auth, pairing
from commuter.peer.discovery import format_address
from commuter.peer.identity import Identity
from commuter.peer.peers import Peer, Peers
from commuter.peer.protocol import DEFAULT_PORT, safe_token
from commuter.peer.seal import (
    FRAME_OVERHEAD,
    PipeAbandoned,
    Sealer,
    SealingPipe,
    read_header,
    sealed_chunks,
    sealed_size,
)
from commuter.settings import Settings

# Kept importable from here: the transports and the tests name them so.
__all__ = ["connect_reason", "loads", "read_capped", "safe_token", "watched_body"]

Progress = Callable[[int], None]
T = TypeVar("T")
# What this machine downloads from a peer at most: the size a daemon accepts as an upload.
MAX_FETCH = 2 * 1024**3
# A /v1/sessions answer (about 300 bytes per session); every other JSON answer.
MAX_LISTING = 16 * 1024**2
MAX_REPLY = 64 * 1024

_HOST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})")


def parse_address(text: str) -> tuple[str, int]:
    """("host", port) from "host:port" or "[v6]:port"; ConfigError if malformed."""
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if (
        not sep
        or not _is_host(host)
        or not port.isascii()
        or not port.isdigit()
        or not 0 < int(port) < 65536
    ):
        raise ConfigError(f"{text!r} is not an address (expected HOST:PORT)")
    return host, int(port)


def _is_host(host: str) -> bool:
    # The host goes into a URL: an IP address or a DNS name, nothing that could add a path,
    # a user or a query to it (an address may come from an mDNS answer or a pairing message).
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return bool(_HOST_NAME.fullmatch(host))
    return True


def base_url(address: str) -> str:
    host, port = parse_address(address)
    return f"http://{format_address(host, port)}"


@dataclass(frozen=True, slots=True)
class ListedSession:
    """One entry of a peer's /v1/sessions listing, checked field by field."""

    id: str
    backend: str
    project: str | None
    updated_at: str
    size: int


def parse_listing(data: Any) -> tuple[list[ListedSession], int]:
    """The well-formed entries of a /v1/sessions answer, in order, and how many others were
    skipped; ValueError if the answer itself is not a listing."""
    if not isinstance(data, dict) or not isinstance(data.get("sessions"), list):
        raise ValueError("not a session listing")
    good: list[ListedSession] = []
    entries = data["sessions"]
    for entry in entries:
        listed = _listed(entry)
        if listed is not None:
            good.append(listed)
    return good, len(entries) - len(good)


def _listed(entry: Any) -> ListedSession | None:
    if not isinstance(entry, dict):
        return None
    sid, backend = safe_token(entry.get("id")), safe_token(entry.get("backend"))
    project, updated, size = entry.get("project"), entry.get("updated_at"), entry.get("size")
    if sid is None or backend is None:
        return None
    if project is not None and not (
        isinstance(project, str) and 0 < len(project) <= 4096 and "\0" not in project
    ):
        return None
    if not isinstance(updated, str) or len(updated) > 64:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size < 1 << 50:
        return None
    return ListedSession(sid, backend, project, updated, size)


class PeerClient:
    """Signed requests to one paired peer's `commuter serve` (use `async with`)."""

    def __init__(
        self,
        settings: Settings,
        identity: Identity,
        peer: Peer,
        address: str,
        *,
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

        self._session = aiohttp.ClientSession(timeout=client_timeout(self.settings))
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
        max_reply: int = MAX_REPLY,
        max_download: int = MAX_FETCH,
    ) -> Any:
        """One signed request; its JSON answer (at most `max_reply` bytes), or with `dst` its
        body written there (it must announce its length, at most `max_download`). `wait` bounds
        the silence before the answer and between its reads (default settings.stall_timeout);
        a body that cannot be written for stall_timeout seconds (the peer stopped reading)
        also fails."""
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
        timeout = client_timeout(self.settings, read=wait)
        deadline = asyncio.timeout(None)
        try:
            async with deadline:
                data = None if body is None else watched_body(body, deadline, self.settings)
                async with self._session.request(
                    method, url, data=data, headers=headers, timeout=timeout
                ) as resp:
                    if resp.status >= 400:
                        raise self._refusal(
                            await read_error(resp, where=self.peer.name, fallback=PeerError)
                        )
                    if dst is None:
                        reply = await read_capped(resp, max_reply)
                        if reply is None:
                            raise PeerError(
                                f"{self.peer.name} sent a reply larger than {max_reply} bytes"
                            )
                        return loads(reply)
                    await self._download(resp, dst, max_download)
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

    async def _download(self, resp: Any, dst: Path, limit: int) -> None:
        """Write the body to `dst`, which this call creates; never more than the length the
        answer announced (required, at most `limit`). On any failure `dst` is deleted."""
        announced = resp.content_length
        if announced is None:
            raise PeerError(f"{self.peer.name} sent a bundle without announcing its size")
        if announced > limit:
            raise PeerError(
                f"{self.peer.name} offers a bundle of {announced} bytes; this machine takes at "
                f"most {limit}"
            )
        got = 0
        shown = progress.shown()  # else a bar of its own, now that the size is known
        try:
            with (
                dst.open("xb") as fh,
                progress.step(f"from {self.peer.name}", None if shown else announced),
            ):
                async for chunk in resp.content.iter_chunked(CHUNK):
                    got += len(chunk)
                    if got > announced:
                        raise PeerError(
                            f"{self.peer.name} sent more than the {announced} bytes it announced"
                        )
                    fh.write(chunk)
                    progress.advance(len(chunk))
            if got != announced:
                raise PeerError(
                    f"{self.peer.name} sent {got} of the {announced} bytes it announced"
                )
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(dst)
            raise

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
            name, device_id = (str(info.get(k))[:MAX_MESSAGE] for k in ("name", "device_id"))
            raise PeerUnreachable(
                f"{self.address} answers as another machine ({name!r}, {device_id!r}), not "
                f"{self.peer.name} ({self.peer.device_id})" + advice
            )

    async def upload(self, sealed_path: Path, progress: Progress | None = None) -> dict[str, Any]:
        """POST an already sealed file to the peer's inbox; returns its JSON answer."""
        header = await asyncio.to_thread(read_header, sealed_path)
        size = (await asyncio.to_thread(sealed_path.stat)).st_size
        data = await self._request(
            "POST",
            "/v1/bundles",
            body=_chunks(sealed_path, progress),
            digest=auth.sealed_body_digest(header.digest),
            length=size,
        )
        return self._upload_answer(data)

    async def upload_sealing(
        self, plain_path: Path, progress: Progress | None = None
    ) -> dict[str, Any]:
        """Seal a plain bundle to the peer while uploading it: no temp file, and sealing
        chunk n+1 (on a thread) overlaps sending chunk n."""
        sealer = Sealer(self.identity, [self.peer.public_key])
        size = (await asyncio.to_thread(plain_path.stat)).st_size
        data = await self._request(
            "POST",
            "/v1/bundles",
            body=sealed_chunks(plain_path, sealer, progress),
            digest=auth.sealed_body_digest(sealer.digest),
            length=sealed_size(size, len(sealer.prefix)),
        )
        return self._upload_answer(data)

    async def upload_export(
        self, export: Callable[[BinaryIO], T], progress: Progress | None = None
    ) -> tuple[dict[str, Any], T]:
        """Upload a bundle while it is being made: `export(fh)` runs on a thread writing the
        plain bundle into `fh`, each chunk is sealed to the peer there and sent as it comes
        (a bounded queue between them; chunked transfer, as the size is not known before the
        end). No temp bundle; a failed export or upload ends both, and the peer, which
        stores nothing before the final frame is verified, keeps nothing. Returns the
        peer's answer and what `export` returned."""
        sealer = Sealer(self.identity, [self.peer.public_key])
        pipe = SealingPipe(sealer, asyncio.get_running_loop())

        def produce() -> T:
            try:
                result = export(cast(BinaryIO, pipe))  # a write-only file is all it needs
            except PipeAbandoned:
                raise
            except BaseException as exc:
                pipe.fail(exc)
                raise
            pipe.close()
            return result

        async def body() -> AsyncIterator[bytes]:
            async for frame in pipe.frames():
                if progress is not None and frame is not sealer.prefix:
                    progress(len(frame) - FRAME_OVERHEAD)
                yield frame

        task = asyncio.ensure_future(asyncio.to_thread(produce))
        try:
            data = await self._request(
                "POST",
                "/v1/bundles",
                body=body(),
                digest=auth.sealed_body_digest(sealer.digest),
            )
        except BaseException as exc:
            pipe.abandon()
            try:
                await task
            except PipeAbandoned:
                pass
            except Exception as failed:  # the export failed first: that is the cause
                if failed is not exc:
                    raise failed from None
            raise
        pipe.abandon()
        return self._upload_answer(data), await task

    def _upload_answer(self, data: Any) -> dict[str, str]:
        """The fields of an upload's answer that are plain tokens ("status", "id", "digest");
        anything else a peer put there is dropped."""
        if not isinstance(data, dict):
            raise PeerError(f"{self.peer.name} sent a malformed reply")
        fields = ((k, safe_token(data.get(k))) for k in ("status", "id", "digest"))
        return {k: v for k, v in fields if v is not None}

    async def list_sessions(self, project: str | None = None) -> list[ListedSession]:
        """The peer's well-formed sessions, newest first (see `list_sessions_counted`)."""
        return (await self.list_sessions_counted(project))[0]

    async def list_sessions_counted(
        self, project: str | None = None
    ) -> tuple[list[ListedSession], int]:
        """The peer's sessions, newest first, each field checked (an entry with an unsafe id,
        a missing size or a wrong type is skipped), and how many were skipped."""
        from urllib.parse import urlencode

        path = "/v1/sessions" + (f"?{urlencode({'project': project})}" if project else "")
        data = await self._request("GET", path, max_reply=MAX_LISTING)
        try:
            return parse_listing(data)
        except ValueError as exc:
            raise PeerError(f"{self.peer.name} sent a malformed session list") from exc

    async def fetch(self, session_id: str, dst_path: Path, *, limit: int = MAX_FETCH) -> Path:
        """Download one session, sealed to me, to `dst_path` (created here: it must not
        exist); at most `limit` bytes."""
        from urllib.parse import quote

        if safe_token(session_id) is None:
            raise PeerError(f"{session_id!r} is not a session id")
        path = f"/v1/sessions/{quote(session_id, safe='')}/bundle"
        await self._request("GET", path, dst=dst_path, max_download=limit)
        return dst_path


def _or_address(suggest: bool) -> str:
    return " (or pass --address HOST:PORT)" if suggest else ""


async def _chunks(path: Path, progress: Progress | None) -> AsyncIterator[bytes]:
    # Read on the loop: a page-cache read of 1 MiB is cheaper than a thread hop.
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            if progress is not None:
                progress(len(chunk))
            yield chunk


async def find_addresses(settings: Settings, peer: Peer, explicit: str | None = None) -> list[str]:
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
            f"cannot find {peer.name} on the LAN and no address is known; pass --address HOST:PORT"
        )
    return list(dict.fromkeys(candidates))


async def find_address(settings: Settings, peer: Peer, explicit: str | None = None) -> str:
    """The first of `find_addresses`: --address, else mDNS, else the last known address."""
    return (await find_addresses(settings, peer, explicit))[0]


@contextlib.asynccontextmanager
async def _answering(
    settings: Settings,
    identity: Identity,
    peer: Peer,
    addresses: Sequence[str],
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


async def send_export(
    settings: Settings,
    identity: Identity,
    peer: Peer,
    export: Callable[[BinaryIO], T],
    address: str | Sequence[str],
    progress: Progress | None = None,
    *,
    suggest_address: bool = False,
) -> tuple[dict[str, Any], T]:
    """`send_file` without a bundle file: `export(fh)` writes the plain bundle on a thread
    while it is sealed and uploaded (PeerClient.upload_export). Returns the peer's answer
    and what `export` returned (pipeline.send_session's Exported)."""
    addresses = [address] if isinstance(address, str) else list(address)
    async with _answering(settings, identity, peer, addresses, suggest_address) as client:
        answer = await client.upload_export(export, progress)
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


@dataclass(frozen=True, slots=True)
class Fetched:
    """A session downloaded from a peer and opened: `path`, the plain bundle, inside `dir`, a
    temp dir this process created under staging_dir. `close()` (or leaving `with`) deletes
    `dir`, and only it: no path here comes from the peer."""

    path: Path
    dir: Path
    session_id: str

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Fetched:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


async def fetch_latest(
    settings: Settings,
    peer: Peer,
    cwd: Path,
    *,
    address: str | None = None,
    identity: Identity | None = None,
    limit: int = MAX_FETCH,
) -> Fetched:
    """Download the peer's newest session for `cwd`'s project (at most `limit` bytes) and
    open it; the caller closes the result."""
    from commuter.peer.seal import open_file

    me = identity or Identity.load_or_create(settings)
    candidates = await find_addresses(settings, peer, address)
    async with _answering(settings, me, peer, candidates, address is None) as client:
        best = await _newest_of(client, settings, peer, cwd)
        settings.staging_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmpdir = Path(tempfile.mkdtemp(prefix="fetch-", dir=settings.staging_dir))
        fetched = Fetched(tmpdir / "bundle.commuter", tmpdir, best.id)
        sealed = tmpdir / "bundle.sealed"
        try:
            await client.fetch(best.id, sealed, limit=limit)
            sender = await asyncio.to_thread(
                open_file, sealed, fetched.path, me, is_trusted=lambda k: k == peer.public_key
            )
            if sender != peer.public_key:
                raise NotPaired(f"the bundle from {peer.name} is sealed by another key")
        except BaseException:
            fetched.close()
            raise
        sealed.unlink(missing_ok=True)
    _remember(settings, peer, client.address)
    return fetched


async def newest_session(
    settings: Settings,
    me: Identity,
    peer: Peer,
    cwd: Path,
    *,
    address: str | None = None,
) -> tuple[ListedSession, str]:
    """The peer's newest session for `cwd`'s project and the address that answered."""
    candidates = await find_addresses(settings, peer, address)
    async with _answering(settings, me, peer, candidates, address is None) as client:
        best = await _newest_of(client, settings, peer, cwd)
    return best, client.address


async def _newest_of(
    client: PeerClient, settings: Settings, peer: Peer, cwd: Path
) -> ListedSession:
    sessions, skipped = await client.list_sessions_counted()
    ranked = [(_project_matches(settings, s.project, cwd), i, s) for i, s in enumerate(sessions)]
    ranked = [r for r in ranked if r[0] >= 0]
    if not ranked:
        if skipped:
            raise PeerError(
                f"{peer.name} has no usable session for {cwd.name} ({skipped} "
                f"malformed {'entry' if skipped == 1 else 'entries'} of its session list "
                "skipped)"
            )
        raise SessionNotFound(f"{peer.name} has no session for {cwd.name}")
    return min(ranked, key=lambda r: (r[0], r[1]))[2]


async def fetch_one(
    settings: Settings,
    me: Identity,
    peer: Peer,
    address: str,
    session_id: str,
    dst: Path,
    *,
    limit: int = MAX_FETCH,
) -> Path:
    """Download one session of `peer` at `address`, sealed, into `dst` (at most `limit` bytes);
    the address is remembered as the peer's last."""
    async with PeerClient(settings, me, peer, address) as client:
        await client.fetch(session_id, dst, limit=limit)
    _remember(settings, peer, address)
    return dst


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

    host, _port = parse_address(address)
    session = pairing.PairingSession(code, "joiner")
    base = base_url(address)
    timeout = client_timeout(settings, total=30)

    async def post(path: str, payload: dict[str, Any]) -> Any:
        try:
            async with http.post(base + path, json=payload) as resp:
                if resp.status == 404:
                    raise PairingFailed(f"no pairing invitation is open at {address}")
                if resp.status >= 400:
                    raise await read_error(resp, where=address, fallback=PeerError)
                body = await read_capped(resp, MAX_REPLY)
                if body is None:
                    raise ValueError("reply too long")
                return loads(body)
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
    pairing.refuse_itself(identity.public_key, info)  # an inviter that let it through
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
