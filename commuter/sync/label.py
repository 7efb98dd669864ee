"""What a waiting sealed item holds, read without downloading it: the seal's signed header and
its first frame (or first few), decrypted, hold the bundle's magic line and the start of its
zstd stream, whose first tar record is manifest.json (bundle-format.md). So `status` and
`pull --dry-run` can name the session and project of an item by reading at most
`PEEK_BYTES` of it: a local inbox or folder file directly, a relay item with an HTTP Range
request.

Everything here is hostile input: the seal header's signature is checked and its sender must
be a paired peer, each frame is authenticated (AEGIS-256, as `open_file` does), the
decompressed bytes are capped, the tar header and the manifest JSON are parsed with the same
bounds the bundle reader uses, and `manifest_from_dict` validates every field. Any failure
gives None (the caller shows "?"): a label is a hint, the real import checks everything
again.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from commuter.errors import BundleError, CommuterError

if TYPE_CHECKING:
    from commuter.peer.identity import Identity
    from commuter.sync.state import SyncState
    from commuter.transports import Incoming, Transport, TransportContext

MAX_FRAMES = 4  # a manifest over ~4 MiB of compressed bundle start is not peeked at
PEEK_BYTES = (1 << 20) + (64 << 10)  # what one read asks for: header + the first frame
_MAX_PLAIN = 2 << 20  # decompressed bytes looked at (manifest.json is capped at 1 MiB)
_BLOCK = 512


@dataclass(frozen=True, slots=True)
class Label:
    """What a waiting item says about itself once its seal's first frame is opened."""

    session_id: str
    project: str
    agent: str
    message_count: int
    created_at: str
    sender_key: bytes
    delta: bool = False  # a delta bundle (bundle/delta.py): it needs the items before it


def peek_bytes(
    data: bytes, identity: Identity, is_trusted: Callable[[bytes], bool]
) -> Label | None:
    """The label of a sealed item whose first bytes are `data`, or None."""
    try:
        return _peek(data, identity, is_trusted)
    except (
        CommuterError,
        ValueError,
        TypeError,
        KeyError,
        tarfile.TarError,
        OverflowError,
        RecursionError,
    ):
        return None
    except Exception as exc:  # zstandard.ZstdError and the like: still just "unknown"
        if type(exc).__module__.startswith("zstandard"):
            return None
        raise


def _peek(data: bytes, identity: Identity, is_trusted: Callable[[bytes], bool]) -> Label | None:
    from commuter.peer import seal

    fh = io.BytesIO(data)
    header = seal.read_header_from(fh)
    if not is_trusted(header.sender):
        return None
    opener = seal.Opener(header, identity)
    plain = bytearray()
    for _ in range(MAX_FRAMES):
        lead = fh.read(4)
        if len(lead) != 4:
            break
        frame = fh.read(seal.Opener.frame_size(lead))
        if len(frame) != seal.Opener.frame_size(lead):
            break
        plain += opener.pull(lead, frame)
        label = _from_plain(bytes(plain), header.sender)
        if label is not None or opener.done:
            return label
    return None


def _from_plain(plain: bytes, sender: bytes) -> Label | None:
    """The manifest at the start of a plain bundle prefix; None if it is not all there yet."""
    import zstandard

    from commuter.bundle.model import MAGIC_PREFIX, manifest_from_dict

    line_end = plain.find(b"\n", 0, 64)
    if not plain.startswith(MAGIC_PREFIX) or line_end < 0:
        raise BundleError("not a commuter bundle")
    dobj = zstandard.ZstdDecompressor(max_window_size=1 << 24).decompressobj()
    out = dobj.decompress(plain[line_end + 1 :])[:_MAX_PLAIN]
    if len(out) < _BLOCK:
        return None
    info = tarfile.TarInfo.frombuf(out[:_BLOCK], "utf-8", "surrogateescape")
    if info.name != "manifest.json" or info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
        raise BundleError("bundle does not start with manifest.json")
    if not 0 < info.size <= 1 << 20:
        raise BundleError("manifest size out of bounds")
    if len(out) < _BLOCK + info.size:
        return None
    from commuter.bundle.model import check_depth

    obj = json.loads(out[_BLOCK : _BLOCK + info.size].decode("utf-8"))
    check_depth(obj, "manifest")
    manifest = manifest_from_dict(obj)
    return Label(
        manifest.session_id,
        manifest.project_dir,
        manifest.backend,
        manifest.message_count,
        manifest.created_at,
        sender,
        isinstance(obj, dict) and "delta" in obj,
    )


def peek_file(path: Path, identity: Identity, is_trusted: Callable[[bytes], bool]) -> Label | None:
    """The label of a local sealed file (inbox entry, folder drop): its first PEEK_BYTES only,
    read without following a symlink."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(PEEK_BYTES * MAX_FRAMES)
    return peek_bytes(data, identity, is_trusted)


_INBOX_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z-]{0,80}\Z")


async def label_of(
    ctx: TransportContext, transport: Transport, item: Incoming, cache: SyncState | None = None
) -> Label | None:
    """The label of a waiting item, whatever its transport (cached by item and digest)."""
    import asyncio

    key = f"{item.transport}:{item.id}:{item.digest}"
    if cache is not None:
        hit = cache.label(key)
        if hit is not None:
            return Label(hit[0], hit[1], hit[2], -1, "", b"")
    trusted = ctx.peers.is_trusted
    label: Label | None = None
    if item.legacy:
        return None
    if item.transport == "lan" and _INBOX_ID.match(item.id):
        path = ctx.settings.inbox_dir / f"{item.id}.sealed"
        label = await asyncio.to_thread(peek_file, path, ctx.identity, trusted)
    elif item.transport == "folder":
        root = getattr(transport, "root", None)
        rel = Path(item.id)
        if isinstance(root, Path) and not rel.is_absolute() and ".." not in rel.parts:
            path = root / rel
            if item.sealed:
                label = await asyncio.to_thread(peek_file, path, ctx.identity, trusted)
            else:
                label = await asyncio.to_thread(peek_plain_file, path)
    elif item.transport == "relay":
        peek = getattr(transport, "peek", None)
        if callable(peek):
            try:
                data = await peek(item, PEEK_BYTES)
            except CommuterError:
                data = b""
            label = peek_bytes(data, ctx.identity, trusted) if data else None
    if label is not None and cache is not None:
        cache.put_label(key, label.session_id, label.project, label.agent)
    return label


def peek_plain_file(path: Path) -> Label | None:
    """The label of a plain (unsealed) bundle in the shared folder: its manifest, from the
    first few MiB only. Anyone who can write to the folder can have written it."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(PEEK_BYTES * MAX_FRAMES)
    try:
        return _from_plain(data, b"")
    except (
        CommuterError,
        ValueError,
        TypeError,
        KeyError,
        tarfile.TarError,
        OverflowError,
        RecursionError,
    ):
        return None
    except Exception as exc:
        if type(exc).__module__.startswith("zstandard"):
            return None
        raise
