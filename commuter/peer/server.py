"""The peer daemon's aiohttp app (/v1: info, bundles, sessions) and the pairing listener."""

from __future__ import annotations

import asyncio
import contextlib
import io
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from commuter import core
from commuter.errors import (
    BadSignature,
    BundleError,
    CommuterError,
    NotPaired,
    PairingFailed,
    PeerError,
    SessionNotFound,
    TooLarge,
)
from commuter.growing import Growing
from commuter.http import OUT_OF_FDS, error_middleware
from commuter.peer import auth, pairing, seal
from commuter.peer.identity import Identity
from commuter.peer.inbox import Inbox, InboxItem, Upload
from commuter.peer.peers import Peer, Peers
from commuter.peer.protocol import API, PROTOCOL_VERSION, safe_token
from commuter.peer.protocol import DEFAULT_PORT as DEFAULT_PORT  # commands import it from here
from commuter.settings import Settings

MAX_BUNDLE = 2 * 1024**3

Log = Callable[[str], None]
# Runs after a bundle is stored; returns the upload's "status" for the sender ("imported",
# "receiving"), or None to leave it "stored" (waiting in the inbox for `commuter pull`).
OnReceived = Callable[[InboxItem, Peer], Awaitable[str | None]]
# Imports a whole bundle while it arrives (pipeline.Arriving); returns the upload's status,
# or None to have it stored after all (then `on_received` runs as for any other upload).
OnUpload = Callable[[Upload], Coroutine[Any, Any, str | None]]


def _log_of(request: web.Request) -> Log:
    state = request.app.get(STATE)
    return state.log if state is not None else (lambda _msg: None)


# CommuterError -> {"error": code, "message": ...} with the class's status; JSON 404s.
errors_middleware = error_middleware(_log_of)


@dataclass
class ServerState:
    """What the handlers share; stored on the app."""

    settings: Settings
    identity: Identity
    peers: Peers
    name: str
    max_body: int = MAX_BUNDLE
    on_received: OnReceived | None = None
    log: Log = field(default=lambda _msg: None)
    on_upload: OnUpload | None = None
    nonces: auth.NonceCache = field(default_factory=auth.NonceCache)
    peers_mtime: int = 0


STATE = web.AppKey("state", ServerState)


def make_app(
    settings: Settings,
    identity: Identity,
    peers: Peers,
    *,
    name: str | None = None,
    max_body: int = MAX_BUNDLE,
    on_received: OnReceived | None = None,
    log: Log | None = None,
    on_upload: OnUpload | None = None,
) -> web.Application:
    """The /v1 peer API; `on_received` runs after a bundle is stored (e.g. auto-import),
    `on_upload` (if given) first tries to import a whole bundle while it arrives."""
    app = web.Application(middlewares=[errors_middleware], client_max_size=1 << 20)
    app[STATE] = ServerState(
        settings,
        identity,
        peers,
        name or settings.hostname,
        max_body,
        on_received,
        log or (lambda _msg: None),
        on_upload,
        # Persistent: a request captured before a restart is still refused after it.
        nonces=auth.NonceCache(path=settings.state_dir / auth.NONCE_DB),
    )
    app.router.add_get(f"{API}/info", handle_info)
    app.router.add_post(f"{API}/bundles", handle_bundle)
    app.router.add_get(f"{API}/sessions", handle_sessions)
    app.router.add_get(API + "/sessions/{session_id}/bundle", handle_session_bundle)
    app.on_startup.append(_sweep_inbox)
    return app


async def _sweep_inbox(app: web.Application) -> None:
    # A daemon killed mid-receive (kill -9, power cut) left its temp file behind.
    st = app[STATE]
    removed = await asyncio.to_thread(Inbox(st.settings).sweep)
    if removed:
        st.log(f"removed {removed} unfinished upload(s) left in the inbox by a stopped daemon")


async def handle_info(request: web.Request) -> web.Response:
    """Public: who this is (a hint; keys are checked on every signed request)."""
    st = request.app[STATE]
    return web.json_response(
        {"name": st.name, "device_id": st.identity.device_id, "protocol": PROTOCOL_VERSION}
    )


def _reload_peers(st: ServerState) -> Peers:
    # `commuter pair` may run while the daemon does: pick up a changed trust store.
    try:
        mtime = st.peers.path.stat().st_mtime_ns
    except OSError:
        return st.peers
    if mtime != st.peers_mtime:
        st.peers = Peers.load(st.settings)
        st.peers_mtime = mtime
    return st.peers


def _paired_sender(st: ServerState, request: web.Request) -> Peer:
    """The paired peer a request claims to come from (signature checked later)."""
    key = auth.claimed_key(request.headers)
    peer = _reload_peers(st).by_key(key)
    if peer is None:
        raise NotPaired("this machine is not paired with the sender")
    return peer


async def _verified_get(request: web.Request) -> Peer:
    st = request.app[STATE]
    peer = _paired_sender(st, request)
    auth.verify_headers(
        request.headers,
        request.method,
        request.raw_path,
        auth.EMPTY_SHA256,
        st.nonces,
        audience=st.identity.device_id,
    )
    return peer


async def handle_bundle(request: web.Request) -> web.Response:
    """Paired senders only: a sealed bundle for this machine, verified as it streams in."""
    st = request.app[STATE]
    peer = _paired_sender(st, request)
    if request.content_length is not None and request.content_length > st.max_body:
        raise TooLarge(f"bundle is larger than this machine accepts ({st.max_body} bytes)")
    inbox = Inbox(st.settings)
    tmp = inbox.temp_path()
    got = _Received()
    arriving = (
        _Arriving(st.on_upload, st.log, inbox, peer, request.content_length)
        if st.on_upload
        else None
    )
    try:
        try:
            header = await _receive_sealed(request, tmp, st, peer, got, arriving)
        except BaseException as exc:
            if arriving is not None:
                await arriving.abandon(exc)
            raise
        digest = header.digest.hex()
        if arriving is not None and (status := await arriving.outcome()) is not None:
            done = _DONE.get(status, status)
            st.log(f"received {_what(got)} from {peer.name} ({got.count} bytes): {done}")
            return web.json_response({"status": status, "id": arriving.id, "digest": digest})
        item = inbox.add(tmp, peer, digest, arriving.id if arriving else None)
    except ConnectionError:
        # The sender went away mid-body (killed, Ctrl-C, network gone): nobody to answer.
        st.log(
            f"{_what(got)} from {peer.name} stopped after {_size(got.count)}"
            f"{_of(request.content_length)}: the sender went away; nothing was kept"
        )
        return web.json_response({"error": "http", "message": "connection lost"}, status=400)
    except CommuterError as exc:
        st.log(f"refused {_what(got)} from {peer.name}: {exc}")
        raise
    finally:
        tmp.unlink(missing_ok=True)
    what = _what(got)
    status = "stored"
    if st.on_received is not None:
        try:
            status = await st.on_received(item, peer) or status
        except CommuterError as exc:
            st.log(f"received {what} from {peer.name} ({item.size} bytes), refused: {exc}")
            raise
    st.log(f"received {what} from {peer.name} ({item.size} bytes): {_DONE.get(status, status)}")
    return web.json_response({"status": status, "id": item.id, "digest": item.digest})


# How the log line of a received bundle ends, by the upload's status.
_DONE = {
    "stored": "in the inbox for `commuter pull`",
    "imported": "imported",
    "receiving": "taken by `commuter receive`",
}


@dataclass
class _Received:
    """What an upload in progress has shown so far: body bytes read, the first plain bytes."""

    count: int = 0
    head: bytes = b""
    _manifest: Any = None

    @property
    def manifest(self) -> Any:
        """The manifest at the start of `head` (the sender's claim, authenticated by the seal;
        read once), or None."""
        if self._manifest is None and self.head:
            self._manifest = _manifest_of(self.head) or False
        return self._manifest or None


def _what(got: _Received) -> str:
    """`session 9f4898fa (claude) of /home/me/app` from the manifest at the start of the
    plain bundle (the sender's claim, authenticated by the seal, shown for the log only),
    else `a bundle`."""
    manifest = got.manifest
    if manifest is None:
        return "a bundle"
    sid = safe_token(manifest.session_id)
    backend = safe_token(manifest.backend)
    project = manifest.project_dir if isinstance(manifest.project_dir, str) else ""
    if len(project) > 80:
        project = "…" + project[-79:]
    what = f"session {sid[:8] if sid else '?'}"
    if backend:
        what += f" ({backend})"
    return what + (f" of {project}" if project else "")


class _Seen(Exception):
    """Not an error: the manifest, raised by the router to stop reading, caught at once."""

    def __init__(self, manifest: Any) -> None:
        self.manifest = manifest


def _manifest_of(head: bytes) -> Any:
    """The manifest of a plain bundle that starts with `head`, or None."""
    if not head:
        return None
    from commuter.bundle.model import DEFAULT_LIMITS
    from commuter.bundle.read import read_plain

    def stop(manifest: Any) -> None:
        raise _Seen(manifest)

    try:
        read_plain(_Unseekable(head), None, DEFAULT_LIMITS, stop)
    except _Seen as seen:
        return seen.manifest
    except Exception:  # the sender's claim, for the log line and for choosing the import
        return None  # while arriving: never an error here (the import checks everything)
    return None


class _Unseekable(io.BytesIO):
    """Bytes read once, front to back (the reader then checks no frame size ahead)."""

    def seekable(self) -> bool:
        return False


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _of(total: int | None) -> str:
    return f" of {_size(total)}" if total else ""


class _Body:
    """Exact reads from a request body, capped at `limit` bytes in all.

    Takes whatever blocks the socket delivered and joins just enough of them (one copy):
    aiohttp's `readexactly` and a bytearray buffer both cost several copies per byte.
    """

    def __init__(self, request: web.Request, limit: int, stall: float) -> None:
        self._content = request.content
        self._limit = limit
        self._stall = stall
        self._seen = 0
        self._rest = b""

    async def exactly(self, n: int) -> bytes:
        """`n` bytes; BundleError if the body ends first, TooLarge past the cap."""
        got = await self._read(n)
        if len(got) != n:
            raise BundleError("sealed bundle is truncated")
        return got

    async def frame_lead(self) -> bytes | None:
        """A frame's 4-byte length prefix, or None if the body ended cleanly before it."""
        got = await self._read(4)
        if not got:
            return None
        if len(got) != 4:
            raise BundleError("sealed bundle is truncated")
        return got

    async def ended(self) -> bool:
        """True if nothing is left to read."""
        return not await self._read(1)

    async def _read(self, n: int) -> bytes:
        self._seen += n
        if self._seen > self._limit:
            raise TooLarge(f"bundle is larger than this machine accepts ({self._limit} bytes)")
        blocks, have = [self._rest], len(self._rest)
        while have < n:
            try:
                async with asyncio.timeout(self._stall):
                    block = await self._content.readany()
            except TimeoutError:
                raise PeerError(
                    f"the upload stalled: nothing arrived for {self._stall:g} s"
                ) from None
            if not block:
                break
            blocks.append(block)
            have += len(block)
        last = blocks[-1]
        keep = max(0, have - n)  # what of the last block belongs to the next read
        self._rest = last[len(last) - keep :] if keep else b""
        if keep:
            blocks[-1] = last[: len(last) - keep]
        return blocks[0] if len(blocks) == 1 else b"".join(blocks)


class _Arriving:
    """An upload imported while it arrives (`on_upload`): once the first frame shows a
    whole bundle (not a delta, not a refusal: those take the inbox path), each authenticated
    frame's opened bytes go to a growing file the import reads meanwhile; the file ends for
    it only after the seal's last frame checked out. What the import did not take is stored
    in the inbox as any upload is, under the id chosen here."""

    def __init__(
        self, on_upload: OnUpload, log: Log, inbox: Inbox, peer: Peer, size: int | None
    ) -> None:
        self._on_upload, self._log, self._inbox = on_upload, log, inbox
        self._peer, self._size = peer, size
        self.id = ""
        self._digest = ""
        self.upload: Upload | None = None
        self._growing: Growing | None = None
        self._task: asyncio.Task[str | None] | None = None
        self._decided = False

    def start(self, header: seal.SealHeader) -> None:
        self.id = self._inbox.new_id(header.digest.hex())
        self._digest = header.digest.hex()

    def feed(self, plain: bytes, manifest: Any) -> None:
        if not self._decided:
            self._decided = True
            if manifest is None or manifest.delta is not None:
                return  # a refusal, a delta, a legacy bundle, junk: the inbox path
            path = self._inbox.opened_path()
            self._growing = Growing(path)
            self.upload = Upload(self.id, self._peer, self._digest, self._size or 0, path)
            self._task = asyncio.create_task(self._on_upload(self.upload))
        if self._growing is not None:
            self._growing.write(plain)

    def finish(self) -> None:
        if self._growing is not None:
            self._growing.finish()

    async def outcome(self) -> str | None:
        """The import's status, or None: store the upload in the inbox after all."""
        if self._task is None:
            return None
        try:
            return await self._task
        except CommuterError:  # the inbox path runs it again and says what is wrong
            return None
        except Exception as exc:  # a bug: said once here, the inbox path still runs
            self._log(f"import while arriving failed: {type(exc).__name__}: {exc}")
            return None
        finally:
            self._remove()

    async def abandon(self, exc: BaseException) -> None:
        """The upload failed: the import reading it fails too (nothing of it is visible)."""
        if self._growing is not None:
            self._growing.fail(exc)
        if self._task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._task
        self._remove()

    def _remove(self) -> None:
        if self.upload is not None:
            self.upload.plain.unlink(missing_ok=True)


async def _receive_sealed(
    request: web.Request,
    dst: Path,
    st: ServerState,
    peer: Peer,
    got: _Received,
    arriving: _Arriving | None = None,
) -> seal.SealHeader:
    """Check the request against the seal's signed header, then authenticate each frame as
    it arrives and write it to `dst`; returns the verified seal header.

    Nothing here trusts the body before its check: the header signature and the request
    signature come first, each frame is authenticated, the end must be the final frame.
    Frames are opened on the event loop: a 1 MiB AEGIS-256 frame takes well under a
    millisecond, less than handing it to a thread and back.
    """
    body = _Body(request, st.max_body, st.settings.stall_timeout)
    start = await body.exactly(len(seal.MAGIC) + 4)
    rest = await body.exactly(seal.header_size(start) + 64)
    header = seal.parse_header(start, rest)
    auth.verify_headers(
        request.headers,
        "POST",
        request.raw_path,
        auth.sealed_body_digest(header.digest),
        st.nonces,
        audience=st.identity.device_id,
    )
    if header.sender != peer.public_key:
        raise BadSignature("bundle is sealed by another key than the request's signer")
    opener = seal.Opener(header, st.identity)
    if arriving is not None:
        arriving.start(header)
    got.count = len(start) + len(rest)
    with dst.open("wb") as fh:
        fh.write(start + rest)
        while not opener.done:
            lead = await body.frame_lead()
            if lead is None:
                raise BundleError("sealed bundle is truncated")
            frame = await body.exactly(seal.Opener.frame_size(lead))
            plain = opener.pull(lead, frame)
            if not got.head:
                got.head = plain  # the manifest is in the first frame: for the log line
            got.count += len(lead) + len(frame)
            fh.write(lead)
            fh.write(frame)
            if arriving is not None:
                arriving.feed(plain, got.manifest)
        if not await body.ended():
            raise BundleError("sealed bundle has trailing data after its end")
    if arriving is not None:
        arriving.finish()
    return header


async def handle_sessions(request: web.Request) -> web.Response:
    """Paired only: this machine's sessions, newest first (optionally one project's).

    The listing crosses the LAN in cleartext, so it holds no conversation text (no prompt,
    no title): only what a puller needs to pick a session.
    """
    st = request.app[STATE]
    await _verified_get(request)
    project = request.query.get("project")
    refs = await asyncio.to_thread(core.list_sessions, st.settings)
    sessions = [
        {
            "id": ref.session_id,
            "backend": ref.backend,
            "project": str(ref.project) if ref.project else None,
            "updated_at": ref.updated_at.isoformat(),
            "size": ref.size,
        }
        for ref in refs
        if ref.has_messages and (project is None or str(ref.project) == project)
    ]
    return web.json_response({"sessions": sessions})


async def handle_session_bundle(request: web.Request) -> web.StreamResponse:
    """Paired only: export one session and stream it back sealed to the requester."""
    st = request.app[STATE]
    peer = await _verified_get(request)
    session_id = request.match_info["session_id"]
    if safe_token(session_id) is None:
        raise SessionNotFound("no session with such an id here")
    st.settings.staging_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    plain = st.settings.staging_dir / f".export-{secrets.token_hex(8)}.tmp"
    try:
        await asyncio.to_thread(_export_plain, st, session_id, plain)
        sealer = seal.Sealer(st.identity, [peer.public_key])
        size = (await asyncio.to_thread(plain.stat)).st_size
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = seal.sealed_size(size, len(sealer.prefix))
        await response.prepare(request)
        try:
            async for chunk in seal.sealed_chunks(plain, sealer):
                async with asyncio.timeout(st.settings.stall_timeout):
                    await response.write(chunk)
            await response.write_eof()
        except (TimeoutError, ConnectionError) as exc:
            # Headers are out: there is no error answer to give, only the connection to end.
            why = "stopped reading" if isinstance(exc, TimeoutError) else "went away"
            st.log(f"sending session {session_id} to {peer.name} failed: it {why}")
            if request.transport is not None:
                request.transport.close()
            return response
    finally:
        plain.unlink(missing_ok=True)
    st.log(f"sent session {session_id} to {peer.name}")
    return response


def _export_plain(st: ServerState, session_id: str, plain: Path) -> None:
    with plain.open("wb") as fh:
        core.export_to(st.settings, fh, session=session_id)


# The pairing listener: one invite, one attempt.


@dataclass
class Invite:
    """An open pairing invitation: the code, its deadline and the single attempt's state."""

    settings: Settings
    identity: Identity
    name: str
    code: pairing.Code
    expires_at: float
    serve_port: int = DEFAULT_PORT
    # A hello or confirm body must arrive within this (it is a few hundred bytes).
    body_timeout: float = 10.0
    used: bool = False
    session: pairing.PairingSession | None = None
    result: asyncio.Future[Peer] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def fail(self, message: str) -> PairingFailed:
        exc = PairingFailed(message)
        if not self.result.done():
            self.result.set_exception(exc)
        return exc


INVITE = web.AppKey("invite", Invite)


def make_pair_app(invite: Invite) -> web.Application:
    """The short-lived listener `commuter pair` opens (POST /pair/v1/hello, /pair/v1/confirm)."""
    app = web.Application(middlewares=[errors_middleware], client_max_size=64 * 1024)
    app[INVITE] = invite
    app.router.add_post("/pair/v1/hello", handle_pair_hello)
    app.router.add_post("/pair/v1/confirm", handle_pair_confirm)
    return app


async def _json_body(request: web.Request, timeout: float) -> Any:  # noqa: ASYNC109
    try:
        async with asyncio.timeout(timeout):
            return await request.json()
    except TimeoutError:
        raise PairingFailed(
            f"pairing failed: the joiner's message did not arrive within {timeout:g} s"
        ) from None
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # nested too deep: not JSON
        raise PairingFailed("pairing failed: request is not JSON") from exc


async def handle_pair_hello(request: web.Request) -> web.Response:
    """Joiner's SPAKE2 message in, ours out. The code is spent by the first hello."""
    invite = request.app[INVITE]
    if invite.result.done() or invite.used:
        raise PairingFailed(
            "pairing failed: this code was already used; start a new `commuter pair`"
        )
    if time.time() > invite.expires_at:
        raise invite.fail("pairing failed: code expired")
    # Claimed before the first await: a hello whose body is still coming must not let a
    # second one in (two answered hellos would be two guesses, and the later one's session
    # would replace the first's).
    invite.used = True
    try:
        data = await _json_body(request, invite.body_timeout)
    except PairingFailed as exc:
        raise invite.fail(str(exc)) from None
    except BaseException:
        invite.fail("pairing failed: the joiner went away before its first message arrived")
        raise
    try:
        nameplate, theirs = pairing.parse_hello_request(data)
    except PairingFailed as exc:
        raise invite.fail(str(exc)) from None
    if nameplate != invite.code.nameplate:
        raise invite.fail(pairing.WRONG_CODE)
    session = pairing.PairingSession(invite.code, "inviter")
    try:
        session.finish(theirs)
    except PairingFailed as exc:
        raise invite.fail(str(exc)) from None
    invite.session = session
    return web.json_response(pairing.hello_reply(session))


async def handle_pair_confirm(request: web.Request) -> web.Response:
    """Check the joiner's key confirmation; only then store it and reveal who we are."""
    invite = request.app[INVITE]
    session = invite.session
    if session is None or invite.result.done():
        raise PairingFailed("pairing failed: no pairing attempt in progress")
    try:
        mac, blob = pairing.parse_confirm_message(await _json_body(request, invite.body_timeout))
        session.check_confirmation(mac)
        info = session.open_info(blob)
        pairing.refuse_itself(invite.identity.public_key, info)
    except PairingFailed as exc:
        raise invite.fail(str(exc)) from None
    from commuter.peer.discovery import format_address

    remote = request.remote or (info.addresses[0] if info.addresses else None)
    address = format_address(remote, info.port or DEFAULT_PORT) if remote else None
    peer = Peer.new(info.name, info.public_key, address)
    from commuter.peer.discovery import local_addresses

    mine = pairing.PeerInfo(
        invite.name,
        invite.identity.public_key,
        tuple(local_addresses(invite.settings)),
        invite.serve_port,
    )
    peers = Peers.load(invite.settings)
    if peers.name_taken(peer) is not None:
        raise invite.fail(
            f"pairing failed: {invite.name} already trusts another machine named {peer.name!r} "
            f"(run `commuter unpair {peer.name}` on {invite.name}, then pair again)"
        )
    reply = pairing.confirm_message(session, invite.identity, mine)
    peers.add(peer)
    peers.save()
    if not invite.result.done():
        invite.result.set_result(peer)
    return web.json_response(reply)


@dataclass(frozen=True, slots=True)
class Limits:
    """What a listener grants: how long a connection may idle, how many it keeps at once."""

    # A connection with no request in progress is closed after this long: a keep-alive one
    # between requests, and one whose request headers have not all arrived (aiohttp's
    # keep-alive timer runs from the connection's start until a whole request is in).
    idle_timeout: float = 15.0
    # Past this many open connections, a new one closes the oldest one that is not in a
    # request; if every one is, the new one gets 503 and is closed. Lowered to fit the
    # process's file descriptor limit.
    max_connections: int = 32
    # How long stopping waits for requests in progress before cancelling them.
    shutdown_timeout: float = 2.0
    backlog: int = 64


DAEMON_LIMITS = Limits()
# The pairing listener expects one joiner: a hello and a confirm of a few hundred bytes each.
PAIR_LIMITS = Limits(idle_timeout=10.0, max_connections=8, shutdown_timeout=1.0, backlog=16)
_FD_RESERVE = 24  # listening and mDNS sockets, stdio, the nonce database, logs


def connection_cap(wanted: int) -> int:
    """`wanted`, lowered so that every connection plus one open file fits the soft limit on
    file descriptors (RLIMIT_NOFILE) with some to spare."""
    try:
        import resource
    except ImportError:  # not POSIX
        return wanted
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(2, min(wanted, (soft - _FD_RESERVE) // 2))


_BUSY_ANSWER = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class _Gate:
    """The connections of one runner's listeners, oldest first, and which are in a request
    (`middleware` marks them); keeps them at `cap` as `Limits.max_connections` says."""

    def __init__(self, runner: web.AppRunner, cap: int) -> None:
        self._runner = runner
        self.cap = cap
        self.open: dict[_Counted, None] = {}
        self.busy: set[object] = set()

    def __call__(self) -> _Counted:
        server = self._runner.server
        assert server is not None  # sites start after setup
        return _Counted(self, server())

    @web.middleware
    async def middleware(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        transport = request.transport
        self.busy.add(transport)
        try:
            return await handler(request)
        finally:
            self.busy.discard(transport)

    def admit(self, new: _Counted) -> bool:
        """Count `new`; if that is one too many, close the oldest idle connection for it.
        False: every other connection is in a request, so `new` must go."""
        self.open[new] = None
        if len(self.open) <= self.cap:
            return True
        for conn in self.open:
            if conn is not new and conn.transport not in self.busy:
                self.gone(conn)
                conn.inner.force_close()
                return True
        self.gone(new)
        return False

    def gone(self, conn: _Counted) -> None:
        self.open.pop(conn, None)


class _Counted(asyncio.Protocol):
    """aiohttp's protocol for one connection, counted by a _Gate."""

    def __init__(self, gate: _Gate, inner: Any) -> None:
        self.gate = gate
        self.inner = inner
        self.transport: asyncio.BaseTransport | None = None
        self.admitted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.admitted = self.gate.admit(self)
        if self.admitted:
            self.inner.connection_made(transport)
            return
        if isinstance(transport, asyncio.WriteTransport):
            transport.write(_BUSY_ANSWER)
        transport.close()  # after the answer goes out

    def connection_lost(self, exc: Exception | None) -> None:
        self.gate.gone(self)
        if self.admitted:
            self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.admitted:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return bool(self.inner.eof_received()) if self.admitted else None

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class _GatedSite(web.BaseSite):
    """A TCP site whose connections go through a _Gate."""

    def __init__(
        self, runner: web.AppRunner, host: str | None, port: int, gate: _Gate, backlog: int
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._host, self._port, self._gate = host, port, gate

    @property
    def name(self) -> str:
        from commuter.peer.discovery import format_address

        return f"http://{format_address(self._host or '0.0.0.0', self._port)}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._gate, self._host, self._port, backlog=self._backlog, reuse_address=True
        )


async def start_site(
    app: web.Application, host: str | None, port: int, *, limits: Limits | None = None
) -> tuple[web.AppRunner, int]:
    """Start `app` on host:port (all interfaces if host is None); return the runner and port.
    With `limits`, idle connections are closed and their number is capped (see Limits);
    without, aiohttp's defaults apply."""
    gate = None
    if limits is None:
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
    else:
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            keepalive_timeout=limits.idle_timeout,
            shutdown_timeout=limits.shutdown_timeout,
        )
        gate = _Gate(runner, connection_cap(limits.max_connections))
        app.middlewares.append(gate.middleware)

    def site(host: str | None, port: int) -> web.BaseSite:
        if gate is None or limits is None:
            return web.TCPSite(runner, host=host, port=port, reuse_address=True)
        return _GatedSite(runner, host, port, gate, limits.backlog)

    await runner.setup()
    try:
        if host is None and port == 0:
            # Each address family would get its own random port: take one for IPv4 (what
            # mDNS and printed addresses use), then listen on IPv6 on the same port if we can.
            await site("0.0.0.0", 0).start()
            port = next(int(a[1]) for a in runner.addresses if isinstance(a, tuple))
            with contextlib.suppress(OSError):
                await site("::", port).start()
        else:
            await site(host, port).start()
    except OSError as exc:
        await runner.cleanup()
        where = f"{host or '*'}:{port}"
        raise CommuterError(f"cannot listen on {where}: {exc.strerror or exc}") from exc
    bound = next((int(a[1]) for a in runner.addresses if isinstance(a, tuple)), port)
    return runner, bound


async def serve(
    settings: Settings,
    identity: Identity,
    *,
    name: str,
    host: str | None = None,
    port: int = DEFAULT_PORT,
    mdns: bool = True,
    on_received: OnReceived | None = None,
    on_upload: OnUpload | None = None,
    log: Log | None = None,
    stop: asyncio.Event | None = None,
    run_for: float | None = None,
    limits: Limits = DAEMON_LIMITS,
) -> None:
    """Run the peer daemon until `stop` is set or `run_for` seconds pass (forever if neither)."""
    from commuter.peer.discovery import advertise_peer

    say = log or (lambda _msg: None)
    app = make_app(
        settings,
        identity,
        Peers.load(settings),
        name=name,
        on_received=on_received,
        log=say,
        on_upload=on_upload,
    )
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(_FdExhaustion(say, previous))
    try:
        runner, bound = await start_site(app, host, port, limits=limits)
        try:
            advert = (
                advertise_peer(settings, name, identity.device_id, bound, log=say)
                if mdns
                else contextlib.nullcontext()
            )
            async with advert:
                say(f"serving as {name} ({identity.device_id}) on {host or '*'}:{bound}")
                waiter = (stop or asyncio.Event()).wait()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter, run_for)
        finally:
            await runner.cleanup()
    finally:
        loop.set_exception_handler(previous)


class _FdExhaustion:
    """A loop exception handler: asyncio's accept() out of file descriptors (it pauses
    accepting for a second, then goes on) is one log line a minute, not a traceback each
    time; anything else goes to the handler before it."""

    def __init__(self, say: Log, previous: Any) -> None:
        self._say = say
        self._previous = previous
        self._said = -1e9

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in OUT_OF_FDS:
            if time.monotonic() - self._said > 60:
                self._said = time.monotonic()
                self._say(f"out of file descriptors ({exc.strerror}): new connections wait")
            return
        if self._previous is not None:
            self._previous(loop, context)
        else:
            loop.default_exception_handler(context)
