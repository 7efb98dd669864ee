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
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
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
from commuter.peer.seal import MAGIC, SealHeader, header_size, parse_header
from commuter.relay.quotas import Limits
from commuter.relay.storage import ITEM_ID
from commuter.relay.store import Claim, FileStore, RelayStore, Upload

PROTOCOL = 1
Log = Callable[[str], None]


@dataclass
class RelayState:
    """What the handlers share."""

    store: RelayStore
    limits: Limits
    log: Log


STATE = web.AppKey("relay_state", RelayState)


def _log_of(request: web.Request) -> Log:
    return request.app[STATE].log


# CommuterError -> {"error": code, "message": ...} with the class's HTTP status; a stalled
# upload's connection is closed (the rest of that body is not waited for).
errors_middleware = error_middleware(_log_of, close_after=(UploadStalled,))


def open_store(
    spec: str | None, data_dir: Path | None, limits: Limits, *, exclusive: bool = False
) -> RelayStore:
    """The store `relay serve --store SPEC` names: a postgresql:// URL (PgStore), or the
    file store over `data_dir` (recovered at once: partial uploads are dropped)."""
    if spec is not None:
        from commuter.relay.pgstore import PgStore

        return PgStore(spec, limits)
    if data_dir is None:
        raise ValueError("the file store needs a data dir")
    return FileStore(data_dir, limits, exclusive=exclusive)


def make_relay_app(
    data_dir: Path | None = None,
    limits: Limits | None = None,
    log: Log | None = None,
    *,
    exclusive: bool = False,
    store: str | RelayStore | None = None,
) -> web.Application:
    """The relay app over `data_dir` (the file store), or over `store` (a RelayStore, or a
    postgresql:// URL); a store's own limits win over `limits`.

    `exclusive` (the `relay serve` process on a data dir): hold the data dir's lock until
    cleanup, so a second relay started on it fails instead of deleting this one's uploads in
    progress. A PostgreSQL store needs no lock: any number of relays share its database.
    """
    if isinstance(store, RelayStore):
        chosen = store
    else:
        chosen = open_store(store, data_dir, limits or Limits(), exclusive=exclusive)
    state = RelayState(chosen, chosen.limits, log or (lambda _msg: None))
    app = web.Application(middlewares=[errors_middleware], client_max_size=1 << 20)
    app[STATE] = state
    app.router.add_get("/", handle_health)
    app.router.add_post("/v1/mailbox/{box}", handle_upload)
    app.router.add_get("/v1/mailbox/{box}", handle_list)
    app.router.add_get("/v1/mailbox/{box}/{item}", handle_download)
    app.router.add_delete("/v1/mailbox/{box}/{item}", handle_delete)
    app.cleanup_ctx.append(_lifetime)
    return app


async def _lifetime(app: web.Application) -> AsyncIterator[None]:
    """Start the store (connect, migrate), sweep it on a timer, close it at the end."""
    state = app[STATE]
    await state.store.start()
    stop = asyncio.Event()

    async def loop() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), state.limits.sweep_interval)
                return
            try:
                gone = await state.store.sweep()
            except Exception as exc:  # the next sweep tries again
                state.log(f"sweep failed: {exc}")
                continue
            if gone:
                state.log(f"expired {gone} bundle(s)")

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        # A sweep under way ends its batch (cancelled mid-query, a database transaction
        # could not be rolled back cleanly); one that hangs is cancelled after 10 s.
        stop.set()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
        await state.store.close()


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


def _verify(request: web.Request, body_sha256: str) -> tuple[bytes, Claim]:
    """The request's key, after its signature and freshness are checked, and its Claim:
    the nonce (on every relay of the store) and the rate, which the request's first store
    call records (or `store.claim_nonce`, where a handler answers without one)."""
    store = request.app[STATE].store
    key = auth.verify_headers(
        request.headers, request.method, request.raw_path, body_sha256, store.nonces
    )
    return key, Claim(key, request.headers[auth.H_NONCE], time.time())


async def _owner(request: web.Request) -> tuple[str, Claim]:
    """The mailbox, after checking the request is signed by its owner's key; the Claim."""
    state = request.app[STATE]
    box = _mailbox(request)
    key, claim = _verify(request, auth.EMPTY_SHA256)
    if device_id_for(key) != box:
        await state.store.claim_nonce(*claim)
        raise MailboxForbidden("this mailbox belongs to another device")
    await state.store.expire()
    return box, claim


def _not_found(item_id: str) -> ItemNotFound:
    return ItemNotFound(f"no item {item_id} in this mailbox (expired or already deleted?)")


async def _item_id(request: web.Request, claim: Claim) -> str:
    """The request's item id; a malformed one is a 404 before any store call, its nonce
    claimed all the same."""
    item_id = request.match_info["item"]
    if not ITEM_ID.match(item_id):
        await request.app[STATE].store.claim_nonce(*claim)
        raise _not_found(item_id)
    return item_id


async def handle_upload(request: web.Request) -> web.Response:
    """A sealed bundle for the mailbox's owner, streamed into the store while hashed."""
    state = request.app[STATE]
    box = _mailbox(request)
    claimed = request.headers.get(auth.H_DIGEST, "")
    # Signature, freshness, nonce and rate first: a stranger's upload is refused before any
    # byte lands.
    key, claim = _verify(request, claimed)
    sender = device_id_for(key)
    # The declared length must fit, but only bytes that arrive are held against the quotas
    # (a slow or silent uploader holds what it sent, and is dropped after body_stall).
    upload = await state.store.begin_upload(box, sender, request.content_length, claim=claim)
    try:
        digest, head = await _receive(request, upload, state)
        if digest != claimed:
            raise BadSignature("upload does not match its signed digest")
        header = head.header()
        if box not in header.recipients:
            raise RelayError("the bundle is not sealed to this mailbox's owner")
        if header.sender != key:
            raise BadSignature("the bundle is sealed by another key than the uploader's")
        item = await upload.commit(digest, state.limits.ttl)
    except UploadStalled:
        state.log(f"upload for {box} from {sender} stalled; dropped")
        raise
    finally:
        await upload.close()
    state.log(f"stored {item.id} for {box} from {sender} ({item.size} bytes)")
    return web.json_response(
        {"id": item.id, "size": item.size, "digest": item.digest, "expires_at": item.expires_at},
        status=201,
    )


class _Head:
    """The first bytes of an upload, kept until they hold the seal header (at most
    seal.MAX_HEADER + 78 bytes), so the header is checked without reading the store back."""

    def __init__(self) -> None:
        self.lead = len(MAGIC) + 4
        self.limit = self.lead
        self.data = bytearray()

    def feed(self, chunk: bytes) -> None:
        offset = 0
        while len(self.data) < self.limit and offset < len(chunk):  # two rounds at most
            take = chunk[offset : offset + self.limit - len(self.data)]
            self.data += take
            offset += len(take)
            if self.limit == self.lead and len(self.data) == self.lead:
                try:
                    self.limit = self.lead + header_size(bytes(self.data)) + 64
                except BundleError:
                    return  # not a seal: header() says so

    def header(self) -> SealHeader:
        """The verified seal header (BundleError if the upload does not start with one)."""
        return parse_header(bytes(self.data[: self.lead]), bytes(self.data[self.lead :]))


async def _receive(request: web.Request, upload: Upload, state: RelayState) -> tuple[str, _Head]:
    """Stream the body into `upload`, each chunk counted against the quotas before it is
    kept; UploadStalled if nothing arrives for `body_stall` seconds."""
    hasher = hashlib.sha256()
    head = _Head()
    stall = state.limits.body_stall
    while True:
        try:
            async with asyncio.timeout(stall):
                chunk = await request.content.read(CHUNK)
        except TimeoutError:
            raise UploadStalled(f"the upload sent nothing for {stall:g} s; dropped") from None
        if not chunk:
            break
        await upload.write(chunk)
        hasher.update(chunk)
        head.feed(chunk)
    if upload.size == 0:
        raise BundleError("empty upload")
    return hasher.hexdigest(), head


async def handle_list(request: web.Request) -> web.Response:
    """The owner's queued items, oldest first."""
    box, claim = await _owner(request)
    items = await request.app[STATE].store.items(box, claim=claim)
    return web.json_response({"items": [item.public() for item in items]})


async def handle_download(request: web.Request) -> web.StreamResponse:
    """The owner fetches one item's ciphertext (a chunk at a time from the store)."""
    box, claim = await _owner(request)
    store = request.app[STATE].store
    item_id = await _item_id(request, claim)
    found = await store.open_item(box, item_id, claim=claim)
    if found is None:
        raise _not_found(item_id)
    item, chunks = found
    headers = {"Content-Type": "application/octet-stream", "X-Commuter-Digest": item.digest}
    path = store.local_path(item)
    if path is not None:
        return web.FileResponse(path, headers=headers)
    first = await anext(chunks, b"")  # a store error before the answer is a JSON one
    resp = web.StreamResponse(headers=headers)
    resp.content_length = item.size
    await resp.prepare(request)
    sent = len(first)
    try:
        await resp.write(first)
        async for chunk in chunks:
            sent += len(chunk)
            await resp.write(chunk)
    except RelayError as exc:
        # Gone (expired, deleted) or the store failed mid-answer: the client sees a short
        # body, which it refuses (length and digest are checked there).
        request.app[STATE].log(f"download of {item.id} cut off after {sent} bytes: {exc}")
        resp.force_close()
        return resp
    await resp.write_eof()
    return resp


async def handle_delete(request: web.Request) -> web.Response:
    """The owner acknowledges an import: the item is gone for good."""
    box, claim = await _owner(request)
    state = request.app[STATE]
    item_id = await _item_id(request, claim)
    if not await state.store.delete(box, item_id, claim=claim):
        raise _not_found(item_id)
    state.log(f"delivered {item_id} to {box}")
    return web.json_response({"deleted": item_id})
