"""What a waiting sealed item holds, read without downloading it: the seal's signed header and
its first frame (or first few), decrypted, hold the bundle's magic line and the start of its
zstd stream, whose first tar record is manifest.json (bundle-format.md). So `status` and
`pull --dry-run` can name the session and project of an item by reading only that: a local
inbox or folder file with `pread`, a relay item with HTTP Range requests. Relay and folder
drops are sealed with a short first frame (`seal_labelled`, LABEL_FRAME), so one read of
FIRST_READ bytes usually holds the label; a longer header or frame costs one more read of
exactly the missing bytes (an older seal: the rest of its 1 MiB first frame).

Everything here is hostile input: the seal header's signature is checked and its sender must
be a paired peer, each frame is authenticated (AEGIS-256, as `open_file` does), the
decompressed bytes are capped, the tar header and the manifest JSON are parsed with the same
bounds the bundle reader uses, and `manifest_from_dict` validates every field. Any failure
gives None (the caller shows "?"): a label is a hint, the real import checks everything
again.
"""

from __future__ import annotations

import json
import os
import re
import tarfile
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from commuter.errors import BundleError, CommuterError

if TYPE_CHECKING:
    from commuter.peer.identity import Identity
    from commuter.sync.state import SyncState
    from commuter.transports import Incoming, Transport, TransportContext

MAX_FRAMES = 4  # a manifest over ~4 MiB of compressed bundle start is not peeked at
LABEL_FRAME = 64 << 10  # plaintext in the first frame of what seal_labelled writes
FIRST_READ = LABEL_FRAME + (8 << 10)  # the first read: the header and that whole frame
PEEK_BYTES = (1 << 20) + (64 << 10)  # a header and one full frame (older seals' first frame)
RELAY_BUDGET = 2 * PEEK_BYTES  # what a relay label read may fetch at most
LOCAL_BUDGET = MAX_FRAMES * PEEK_BYTES
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
    refusal: bool = False  # no bundle: the sender refused a delta of ours (sync/nack.py)


def seal_labelled(src: Path, dst: Path, sender: Identity, recipients: Sequence[bytes]) -> None:
    """`seal.seal_file`, but with a first frame of at most LABEL_FRAME bytes: the bundle's
    magic line and the start of its zstd stream, where manifest.json is (a 10 MiB session
    needs ~23 KB of it), so a label read takes the header and that frame only, not a whole
    1 MiB frame. Every reader already takes frames of any size up to seal.CHUNK."""
    from commuter.fsutil import atomic_writer
    from commuter.peer.seal import CHUNK, Sealer

    sealer = Sealer(sender, recipients)
    with src.open("rb") as fin, atomic_writer(dst, 0o600) as fout:
        fout.write(sealer.prefix)
        chunk = fin.read(LABEL_FRAME)
        while True:
            following = fin.read(CHUNK) if chunk else b""
            fout.write(sealer.push(chunk, not following))
            if not following:
                return
            chunk = following


Want = tuple[int, int]  # (offset, length) of the bytes a label read needs next


def peek_bytes(
    data: bytes, identity: Identity, is_trusted: Callable[[bytes], bool]
) -> Label | None:
    """The label of a sealed item whose first bytes are `data`, or None."""

    def read(offset: int, n: int) -> bytes:
        return data[offset : offset + n]

    return peek_with(read, identity, is_trusted, budget=len(data))


def peek_with(
    read: Callable[[int, int], bytes],
    identity: Identity,
    is_trusted: Callable[[bytes], bool],
    *,
    budget: int = LOCAL_BUDGET,
) -> Label | None:
    """The label of a sealed item, reading it with `read(offset, n)` (fewer bytes at its end)
    only as far as the label needs, at most `budget` bytes; None if there is none."""
    steps = _steps(identity, is_trusted, budget)
    try:
        want = next(steps)
        while True:
            want = steps.send(read(*want))
    except StopIteration as done:
        return _checked(done.value)
    except _LABEL_ERRORS:
        return None
    except Exception as exc:  # zstandard.ZstdError and the like: still just "unknown"
        _unknown(exc)
        return None


async def peek_with_async(
    read: Callable[[int, int], Awaitable[bytes]],
    identity: Identity,
    is_trusted: Callable[[bytes], bool],
    *,
    budget: int,
) -> Label | None:
    """`peek_with` over an asynchronous `read` (a relay's Range requests)."""
    steps = _steps(identity, is_trusted, budget)
    try:
        want = next(steps)
        while True:
            want = steps.send(await read(*want))
    except StopIteration as done:
        return _checked(done.value)
    except _LABEL_ERRORS:
        return None
    except Exception as exc:
        _unknown(exc)
        return None


_LABEL_ERRORS = (
    CommuterError,
    ValueError,
    TypeError,
    KeyError,
    tarfile.TarError,
    OverflowError,
    RecursionError,
)


def _checked(value: object) -> Label | None:
    return value if isinstance(value, Label) else None


def _unknown(exc: Exception) -> None:
    """Raise `exc` again unless it is zstandard's (a damaged stream: no label)."""
    if not type(exc).__module__.startswith("zstandard"):
        raise exc


def _steps(
    identity: Identity, is_trusted: Callable[[bytes], bool], budget: int
) -> Generator[Want, bytes, Label | None]:
    """The label read as a sequence of reads: FIRST_READ bytes (the signed header and, from
    this version's seals, the whole short first frame), then only the exact ranges still
    missing: the rest of the header, the rest of a frame whose lead says it is longer, the
    next frame while the manifest is not complete. Each frame is authenticated before use."""
    from commuter.peer import seal

    buf = bytearray()
    end = [False]

    def short(upto: int) -> Want | None:
        if len(buf) >= upto or end[0]:
            return None
        if upto > budget:
            raise BundleError("label beyond the bytes a label read may take")
        return (len(buf), upto - len(buf))

    def got(want: Want, data: bytes) -> None:
        buf.extend(data[: want[1]])
        if len(data) < want[1]:
            end[0] = True

    def fill(upto: int) -> Generator[Want, bytes, None]:
        want = short(upto)
        if want is not None:
            got(want, (yield want))

    yield from fill(min(FIRST_READ, budget))
    lead_len = len(seal.MAGIC) + 4
    if len(buf) < lead_len:
        return None
    header_end = lead_len + seal.header_size(bytes(buf[:lead_len])) + 64
    yield from fill(header_end)
    header = seal.parse_header(bytes(buf[:lead_len]), bytes(buf[lead_len:header_end]))
    if not is_trusted(header.sender):
        return None
    opener = seal.Opener(header, identity)
    plain = bytearray()
    pos = header_end
    for _ in range(MAX_FRAMES):
        yield from fill(pos + 4)
        lead = bytes(buf[pos : pos + 4])
        if len(lead) != 4:
            return None
        size = seal.Opener.frame_size(lead)
        yield from fill(pos + 4 + size)
        frame = bytes(buf[pos + 4 : pos + 4 + size])
        if len(frame) != size:
            return None
        plain += opener.pull(lead, frame)
        label = _from_plain(bytes(plain), header.sender)
        if label is not None or opener.done:
            return label
        pos += 4 + size
    return None


def _from_plain(plain: bytes, sender: bytes) -> Label | None:
    """The manifest at the start of a plain bundle prefix; None if it is not all there yet."""
    import zstandard

    from commuter.bundle.model import MAGIC_PREFIX, manifest_from_dict
    from commuter.sync import nack

    if plain.startswith(nack.MAGIC):
        refused = nack.parse(plain)
        if refused is None:
            raise BundleError("a malformed refusal")
        return Label(refused[1], "", refused[0], 0, "", sender, refusal=True)
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
    """The label of a local sealed file (inbox entry, folder drop): only the ranges the label
    needs, read without following a symlink."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    try:
        return peek_with(lambda offset, n: os.pread(fd, n, offset), identity, is_trusted)
    except OSError:
        return None
    finally:
        os.close(fd)


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

            async def read(offset: int, n: int) -> bytes:
                data = await peek(item, n, offset=offset)
                assert isinstance(data, bytes)
                return data

            try:
                label = await peek_with_async(read, ctx.identity, trusted, budget=RELAY_BUDGET)
            except CommuterError:
                label = None
    if label is not None and cache is not None and not label.refusal:
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
