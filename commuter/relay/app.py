"""The relay's aiohttp app: a store-and-forward mailbox per recipient device id.

POST   /v1/mailbox/{id}          signed by the sender; body is a bundle sealed to {id}
GET    /v1/mailbox/{id}          signed by {id}'s key: the queued items
GET    /v1/mailbox/{id}/{item}   signed by {id}'s key: the sealed bytes
DELETE /v1/mailbox/{id}/{item}   signed by {id}'s key: after a successful import
GET    /                         health and limits (public)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from commuter.errors import (
    BadSignature,
    BundleError,
    ItemNotFound,
    MailboxForbidden,
    RelayError,
    UploadStalled,
)
from commuter.fsutil import CHUNK
from commuter.http import error_middleware
from commuter.peer import auth
from commuter.peer.identity import device_id_for, normalize_device_id
from commuter.relay import quotas
from commuter.relay.quotas import Limits
from commuter.relay.storage import ITEM_ID, Item, Storage

PROTOCOL = 1
Log = Callable[[str], None]


@dataclass
class RelayState:
    """What the handlers share."""

    storage: Storage
    limits: Limits
    log: Log
    nonces: auth.NonceCache = field(default_factory=auth.NonceCache)  # the app's persists


STATE = web.AppKey("relay_state", RelayState)


def _log_of(request: web.Request) -> Log:
    return request.app[STATE].log


# CommuterError -> {"error": code, "message": ...} with the class's HTTP status; a stalled
# upload's connection is closed (the rest of that body is not waited for).
errors_middleware = error_middleware(_log_of, close_after=(UploadStalled,))


def make_relay_app(
    data_dir: Path, limits: Limits | None = None, log: Log | None = None, *, exclusive: bool = False
) -> web.Application:
    """The relay app over `data_dir` (recovered at once: partial uploads are dropped).

    `exclusive` (the `relay serve` process): hold the data dir's lock until cleanup, so a
    second relay started on it fails instead of deleting this one's uploads in progress.
    """
    storage = Storage(data_dir)
    if exclusive:
        storage.lock()
    storage.recover()
    limits = limits or Limits()
    # Nonces persist in the data dir: a request captured before a restart is refused after it.
    nonces = auth.NonceCache(path=data_dir / auth.NONCE_DB, rates=limits.rates)
    state = RelayState(storage, limits, log or (lambda _msg: None), nonces)
    app = web.Application(middlewares=[errors_middleware], client_max_size=1 << 20)
    app[STATE] = state
    app.router.add_get("/", handle_health)
    app.router.add_post("/v1/mailbox/{box}", handle_upload)
    app.router.add_get("/v1/mailbox/{box}", handle_list)
    app.router.add_get("/v1/mailbox/{box}/{item}", handle_download)
    app.router.add_delete("/v1/mailbox/{box}/{item}", handle_delete)
    app.cleanup_ctx.append(_sweeper)
    app.on_cleanup.append(_unlock)
    return app


async def _unlock(app: web.Application) -> None:
    app[STATE].nonces.close()
    app[STATE].storage.unlock()


async def _sweeper(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]

    async def loop() -> None:
        while True:
            await asyncio.sleep(state.limits.sweep_interval)
            gone = state.storage.expire()
            if gone:
                state.log(f"expired {gone} bundle(s)")

    task = asyncio.create_task(loop())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def handle_health(request: web.Request) -> web.Response:
    """Public: the relay is up; its limits."""
    state = request.app[STATE]
    return web.json_response(
        {
            "service": "commuter-relay",
            "protocol": PROTOCOL,
            "status": "ok",
            "limits": state.limits.public(),
        }
    )


def _mailbox(request: web.Request) -> str:
    text = request.match_info["box"]
    try:
        box = normalize_device_id(text)
    except ValueError:
        raise ItemNotFound(f"{text!r} is not a device id") from None
    if box != text:
        raise ItemNotFound("mailbox ids are canonical device ids (AAAAAA-BBBBBB-...)")
    return box


def _owner(request: web.Request, body_sha256: str = auth.EMPTY_SHA256) -> str:
    """The mailbox, after checking the request is signed by its owner's key."""
    state = request.app[STATE]
    box = _mailbox(request)
    key = auth.verify_headers(
        request.headers, request.method, request.raw_path, body_sha256, state.nonces
    )
    if device_id_for(key) != box:
        raise MailboxForbidden("this mailbox belongs to another device")
    state.storage.expire()
    return box


def _item(request: web.Request, box: str) -> Item:
    item_id = request.match_info["item"]
    item = request.app[STATE].storage.get(box, item_id) if ITEM_ID.match(item_id) else None
    if item is None:
        raise ItemNotFound(f"no item {item_id} in this mailbox (expired or already deleted?)")
    return item


async def handle_upload(request: web.Request) -> web.Response:
    """A sealed bundle for the mailbox's owner, streamed to disk while hashed."""
    state = request.app[STATE]
    box = _mailbox(request)
    claimed = request.headers.get(auth.H_DIGEST, "")
    # Signature, freshness, nonce and rate first: a stranger's upload is refused before any
    # byte lands.
    key = auth.verify_headers(request.headers, "POST", request.raw_path, claimed, state.nonces)
    sender = device_id_for(key)
    state.storage.expire()
    # The declared length must fit, but only bytes that arrive are held against the quotas
    # (a slow or silent uploader holds what it sent, and is dropped after body_stall).
    token = quotas.start_upload(state.storage, state.limits, box, sender, request.content_length)
    tmp = state.storage.temp_path()
    try:
        digest, size = await _receive(request, tmp, state, token)
        if digest != claimed:
            raise BadSignature("upload does not match its signed digest")
        from commuter.peer.seal import read_header

        try:
            header = await asyncio.to_thread(read_header, tmp)
        except OSError as exc:
            raise BundleError("upload is not a sealed bundle") from exc
        if box not in header.recipients:
            raise RelayError("the bundle is not sealed to this mailbox's owner")
        if header.sender != key:
            raise BadSignature("the bundle is sealed by another key than the uploader's")
        quotas.finish_upload(state.storage, state.limits, token)
        item = await asyncio.to_thread(
            state.storage.commit, tmp, box, sender, digest, size, state.limits.ttl
        )
    except UploadStalled:
        state.log(f"upload for {box} from {sender} stalled; dropped")
        raise
    finally:
        state.storage.release(token)
        await asyncio.to_thread(tmp.unlink, True)
    state.log(f"stored {item.id} for {box} from {sender} ({size} bytes)")
    return web.json_response(
        {"id": item.id, "size": item.size, "digest": item.digest, "expires_at": item.expires_at},
        status=201,
    )


async def _receive(
    request: web.Request, dst: Path, state: RelayState, token: int
) -> tuple[str, int]:
    """Stream the body to `dst`, each chunk counted against the quotas before it is written;
    UploadStalled if nothing arrives for `body_stall` seconds."""
    hasher = hashlib.sha256()
    size = 0
    stall = state.limits.body_stall
    fh = await asyncio.to_thread(dst.open, "wb")
    try:
        while True:
            try:
                async with asyncio.timeout(stall):
                    chunk = await request.content.read(CHUNK)
            except TimeoutError:
                raise UploadStalled(f"the upload sent nothing for {stall:g} s; dropped") from None
            if not chunk:
                break
            quotas.receive(state.storage, state.limits, token, len(chunk))
            size += len(chunk)
            hasher.update(chunk)
            await asyncio.to_thread(fh.write, chunk)
    finally:
        fh.close()
    if size == 0:
        raise BundleError("empty upload")
    return hasher.hexdigest(), size


async def handle_list(request: web.Request) -> web.Response:
    """The owner's queued items, oldest first."""
    box = _owner(request)
    items = request.app[STATE].storage.items(box)
    return web.json_response({"items": [item.public() for item in items]})


async def handle_download(request: web.Request) -> web.StreamResponse:
    """The owner fetches one item's ciphertext."""
    box = _owner(request)
    item = _item(request, box)
    path = request.app[STATE].storage.path(item)
    return web.FileResponse(
        path, headers={"Content-Type": "application/octet-stream", "X-Commuter-Digest": item.digest}
    )


async def handle_delete(request: web.Request) -> web.Response:
    """The owner acknowledges an import: the item is gone for good."""
    box = _owner(request)
    item = _item(request, box)
    request.app[STATE].storage.delete(item)
    request.app[STATE].log(f"delivered {item.id} to {box}")
    return web.json_response({"deleted": item.id})
