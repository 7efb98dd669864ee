"""Sealed bundles: a file encrypted end to end to paired recipients, signed by its sender.

Layout: MAGIC, a 4-byte big-endian header length, a JSON header, the sender's Ed25519
signature of everything before it, then frames: a 4-byte big-endian lead (the length, with
the top bit set on the last frame) and one chunk (at most CHUNK bytes) encrypted with
AEGIS-256 (libsodium) under a random file key. The header names
the sender's key and, per recipient, the file key boxed with crypto_box(sender X25519
secret, recipient X25519 public), so only a recipient can read it and only the sender made
it. Chunk i uses nonce i and the associated data sha256(signed header) + a final flag
(the STREAM construction): chunks cannot be reordered, dropped, cut short, or moved to
another seal without failing authentication.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import struct
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import nacl.bindings as sodium
import nacl.utils
from nacl.exceptions import CryptoError
from nacl.public import Box

from commuter.errors import BadSignature, BundleError, NotPaired
from commuter.fsutil import atomic_writer
from commuter.peer.identity import (
    Identity,
    box_public_key,
    device_id_for,
    is_device_id,
    verify_signature,
)

MAGIC = b"CMTRSEAL2\n"
VERSION = 2
CIPHER = "aegis256"
CHUNK = 1 << 20
MAX_HEADER = 1 << 20
MAX_RECIPIENTS = 64
_ABYTES = sodium.crypto_aead_aegis256_ABYTES
_KEYBYTES = sodium.crypto_aead_aegis256_KEYBYTES
_NPUBBYTES = sodium.crypto_aead_aegis256_NPUBBYTES
FRAME_OVERHEAD = 4 + _ABYTES  # a frame's length prefix and its authentication tag
_LAST, _MORE = b"\x01", b"\x00"
_FINAL_BIT = 1 << 31


def _nonce(index: int) -> bytes:
    return index.to_bytes(_NPUBBYTES, "big")


@dataclass(frozen=True, slots=True)
class SealHeader:
    """What a sealed file says about itself before it is opened."""

    sender: bytes
    recipients: tuple[str, ...]
    created_at: str
    boxes: tuple[bytes, ...]
    digest: bytes

    @property
    def sender_device_id(self) -> str:
        return device_id_for(self.sender)


def is_sealed(path: Path) -> bool:
    """True if the file starts like a sealed bundle."""
    try:
        with path.open("rb") as fh:
            return fh.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def seal_file(src: Path, dst: Path, sender: Identity, recipients: Sequence[bytes]) -> None:
    """Encrypt `src` to every recipient public key into `dst` (written atomically)."""
    with src.open("rb") as fin, atomic_writer(dst, 0o600) as fout:
        seal_stream(fin, fout, sender, recipients)


def seal_stream(
    fin: BinaryIO, fout: BinaryIO, sender: Identity, recipients: Sequence[bytes]
) -> None:
    """Encrypt a stream to the recipients, in chunks: memory stays flat."""
    sealer = Sealer(sender, recipients)
    fout.write(sealer.prefix)
    for frame in sealer.frames(fin):
        fout.write(frame)


def sealed_size(plain_size: int, prefix_size: int) -> int:
    """The exact size of a sealed file: its prefix plus every framed chunk."""
    chunks = max(1, -(-plain_size // CHUNK))
    return prefix_size + plain_size + chunks * FRAME_OVERHEAD


class Sealer:
    """Seals one stream: `prefix` (the signed header) goes first, then `frames(fin)`.

    `digest` (sha256 of the header) is what the first chunk is bound to; a signed request
    that carries a sealed body signs this digest instead of hashing the whole body.
    """

    def __init__(self, sender: Identity, recipients: Sequence[bytes]) -> None:
        if not recipients:
            raise ValueError("at least one recipient is needed")
        if len(recipients) > MAX_RECIPIENTS:
            raise ValueError("too many recipients")
        self._key = file_key = nacl.utils.random(_KEYBYTES)
        unique = list(dict.fromkeys(bytes(r) for r in recipients))
        header = {
            "v": VERSION,
            "cipher": CIPHER,
            "sender": _b64(sender.public_key),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "recipients": [
                {
                    "id": device_id_for(r),
                    "box": _b64(
                        bytes(Box(sender.box_private_key, box_public_key(r)).encrypt(file_key))
                    ),
                }
                for r in unique
            ],
        }
        raw = json.dumps(header, separators=(",", ":")).encode()
        signed = MAGIC + struct.pack(">I", len(raw)) + raw
        self.prefix = signed + sender.sign(signed)
        self.digest = hashlib.sha256(signed).digest()
        self._index = 0

    def push(self, chunk: bytes, final: bool) -> bytes:
        """One framed, encrypted chunk (at most CHUNK bytes in); the last one is `final`."""
        ad = self.digest + (_LAST if final else _MORE)
        out = sodium.crypto_aead_aegis256_encrypt(chunk, ad, _nonce(self._index), self._key)
        self._index += 1
        return struct.pack(">I", len(out) | (_FINAL_BIT if final else 0)) + out

    def frames(self, fin: BinaryIO) -> Iterator[bytes]:
        """Every framed chunk of `fin`, the last one tagged FINAL (one, empty, if `fin` is)."""
        chunk = fin.read(CHUNK)
        while True:
            following = fin.read(CHUNK) if chunk else b""
            yield self.push(chunk, not following)
            if not following:
                return
            chunk = following


async def sealed_chunks(
    path: Path, sealer: Sealer, progress: Callable[[int], None] | None = None
) -> AsyncIterator[bytes]:
    """The sealed form of the file at `path`, for an HTTP body; `progress` gets each chunk's
    plaintext size. Chunks are sealed on the event loop: a 1 MiB chunk takes about a
    millisecond, and a thread hop per chunk measured slower (docs/protocol.md)."""
    yield sealer.prefix
    with path.open("rb") as fh:
        for frame in sealer.frames(fh):
            if progress is not None:
                progress(len(frame) - FRAME_OVERHEAD)
            yield frame


class SealingPipe:
    """A write-only file for a thread (an export) whose bytes come out sealed on the event
    loop's side, one frame per CHUNK, through a queue of `depth` frames: memory stays
    bounded (about depth + 2 chunks) and the writer waits while the reader is behind.

    `frames()` (async) yields the prefix, then every frame, the last one final once the writer
    `close()`s; `fail(exc)` from the writer ends it with `exc` raised there. If the reader
    stops (`abandon()`), the writer's next write raises `PipeAbandoned`."""

    def __init__(self, sealer: Sealer, loop: asyncio.AbstractEventLoop, depth: int = 4) -> None:
        self._sealer = sealer
        self._loop = loop
        self._queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(depth)
        self._buffer = bytearray()
        self._pending: bytes | None = None
        self._abandoned = False
        self.plain_size = 0

    # The writer's side (a thread).

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._buffer += data
        while len(self._buffer) > CHUNK:  # one more byte than a chunk: this one is not last
            chunk = bytes(self._buffer[:CHUNK])
            del self._buffer[:CHUNK]
            self._emit(chunk)
        return len(data)

    def flush(self) -> None:
        return None

    def seekable(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        """The end of the plain stream: the rest goes as the final frame."""
        if self._pending is not None:
            self._put(self._sealer.push(self._pending, False))
        self._pending = None
        chunk = bytes(self._buffer)
        self._buffer.clear()
        self.plain_size += len(chunk)
        self._put(self._sealer.push(chunk, True))
        self._put(None)

    def fail(self, exc: BaseException) -> None:
        """The writer failed: the reader raises `exc` instead of sealing an end."""
        with contextlib.suppress(PipeAbandoned):
            self._put(exc)

    def _emit(self, chunk: bytes) -> None:
        # One chunk held back: only the next one (or the end) says whether it is the last.
        if self._pending is not None:
            self._put(self._sealer.push(self._pending, False))
        self._pending = chunk
        self.plain_size += len(chunk)

    def _put(self, item: bytes | BaseException | None) -> None:
        if self._abandoned:
            raise PipeAbandoned("the upload stopped taking the bundle")
        future = asyncio.run_coroutine_threadsafe(self._queue.put(item), self._loop)
        future.result()
        if self._abandoned:
            raise PipeAbandoned("the upload stopped taking the bundle")

    # The reader's side (the event loop).

    async def frames(self) -> AsyncIterator[bytes]:
        """The sealed stream: prefix, then each frame as the writer makes it."""
        yield self._sealer.prefix
        while True:
            item = await self._queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def abandon(self) -> None:
        """The reader is done (finished or failed): free a writer waiting for room."""
        self._abandoned = True
        while not self._queue.empty():
            self._queue.get_nowait()


class PipeAbandoned(BundleError):
    """The reading side of a SealingPipe stopped before the writer finished."""


class Opener:
    """Verifies and decrypts one sealed stream, frame by frame, for one recipient."""

    def __init__(self, header: SealHeader, me: Identity) -> None:
        self.header = header
        self._key = _unbox(header, me)
        if len(self._key) != _KEYBYTES:
            raise BundleError("sealed bundle key is malformed")
        self._index = 0
        self.done = False

    @staticmethod
    def frame_size(lead: bytes) -> int:
        """The length of the frame a 4-byte lead announces; BundleError if impossible."""
        if len(lead) != 4:
            raise BundleError("sealed bundle is truncated")
        size: int = struct.unpack(">I", lead)[0] & ~_FINAL_BIT
        if size < _ABYTES or size > CHUNK + _ABYTES:
            raise BundleError("sealed bundle is corrupt (bad chunk size)")
        return size

    def pull(self, lead: bytes, frame: bytes) -> bytes:
        """Authenticate and decrypt one frame (its lead, then the rest)."""
        if self.done:
            raise BundleError("sealed bundle has trailing data after its end")
        final = bool(lead[0] & 0x80)
        ad = self.header.digest + (_LAST if final else _MORE)
        try:
            plain = sodium.crypto_aead_aegis256_decrypt(frame, ad, _nonce(self._index), self._key)
        except (CryptoError, ValueError, TypeError) as exc:
            raise BundleError("sealed bundle failed authentication (tampered or corrupt)") from exc
        self._index += 1
        self.done = final
        return bytes(plain)


def read_header(path: Path) -> SealHeader:
    """Parse and verify the signed header of a sealed file (no key needed)."""
    with path.open("rb") as fh:
        return read_header_from(fh)


def open_file(
    src: Path,
    dst: Path,
    me: Identity,
    *,
    is_trusted: Callable[[bytes], bool] | None = None,
) -> bytes:
    """Decrypt `src` into `dst` (only on full success); return the sender's public key."""
    with src.open("rb") as fin:
        opener = _opener(fin, me, is_trusted)
        with atomic_writer(dst, 0o600) as fout:
            _decrypt(fin, fout, opener)
    return opener.header.sender


def verify_file(src: Path, me: Identity, *, is_trusted: Callable[[bytes], bool]) -> bytes:
    """Every check `open_file` makes, writing nothing; return the sender's public key."""
    with src.open("rb") as fin:
        opener = _opener(fin, me, is_trusted)
        _decrypt(fin, None, opener)
    return opener.header.sender


def _opener(fin: BinaryIO, me: Identity, is_trusted: Callable[[bytes], bool] | None) -> Opener:
    header = read_header_from(fin)
    if is_trusted is not None and not is_trusted(header.sender):
        raise NotPaired(f"sealed bundle from unpaired device {header.sender_device_id}")
    return Opener(header, me)


def header_size(lead: bytes) -> int:
    """The JSON header's length from the first len(MAGIC) + 4 bytes of a sealed stream."""
    if lead[: len(MAGIC)] != MAGIC:
        raise BundleError("not a sealed commuter bundle")
    if len(lead) != len(MAGIC) + 4:
        raise BundleError("sealed bundle is truncated")
    size: int = struct.unpack(">I", lead[len(MAGIC) :])[0]
    if size > MAX_HEADER:
        raise BundleError("sealed bundle header is too large")
    return size


def read_header_from(fh: BinaryIO) -> SealHeader:
    """Read and verify the signed header at the start of an open sealed stream."""
    lead = fh.read(len(MAGIC) + 4)
    size = header_size(lead)
    return parse_header(lead, fh.read(size + 64))


def parse_header(lead: bytes, rest: bytes) -> SealHeader:
    """Verify a header from its lead (`header_size`) and the header JSON + signature."""
    size = header_size(lead)
    raw, signature = rest[:size], rest[size:]
    if len(raw) != size or len(signature) != 64:
        raise BundleError("sealed bundle is truncated")
    try:
        data = json.loads(raw)
        sender = base64.b64decode(data["sender"], validate=True)
        entries = data["recipients"]
        if data.get("v") != VERSION or data.get("cipher") != CIPHER:
            raise ValueError("unknown seal version")
        if len(sender) != 32 or not isinstance(entries, list):
            raise ValueError("bad header")
        recipients = tuple(e["id"] for e in entries)
        if not all(is_device_id(r) for r in recipients):
            raise ValueError("a recipient is not a device id")  # it names ack markers
        boxes = tuple(base64.b64decode(e["box"], validate=True) for e in entries)
        created_at = str(data.get("created_at", ""))
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        # RecursionError: json.loads of a header nested thousands deep (anyone can sign one)
        raise BundleError("sealed bundle header is malformed") from exc
    prefix = lead + raw
    try:
        verify_signature(sender, prefix, signature)
    except BadSignature as exc:
        raise BundleError("sealed bundle header signature is invalid (tampered?)") from exc
    return SealHeader(
        sender=sender,
        recipients=recipients,
        created_at=created_at,
        boxes=boxes,
        digest=hashlib.sha256(prefix).digest(),
    )


def _unbox(header: SealHeader, me: Identity) -> bytes:
    try:
        index = header.recipients.index(me.device_id)
    except ValueError:
        raise BundleError("sealed bundle is not addressed to this machine") from None
    try:
        box = Box(me.box_private_key, box_public_key(header.sender))
        return box.decrypt(header.boxes[index])
    except (CryptoError, ValueError, TypeError) as exc:
        raise BundleError("sealed bundle key cannot be opened (tampered?)") from exc


def _decrypt(fin: BinaryIO, fout: BinaryIO | None, opener: Opener) -> None:
    while not opener.done:
        lead = fin.read(4)
        size = Opener.frame_size(lead)
        frame = fin.read(size)
        if len(frame) != size:
            raise BundleError("sealed bundle is truncated")
        plain = opener.pull(lead, frame)
        if fout is not None:
            fout.write(plain)
    if fin.read(1):
        raise BundleError("sealed bundle has trailing data after its end")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
