"""Sealed bundles: a file encrypted end to end to paired recipients, signed by its sender.

Layout: MAGIC, a 4-byte big-endian header length, a JSON header, the sender's Ed25519
signature of everything before it, then secretstream (XChaCha20-Poly1305) chunks, each
prefixed by its 4-byte length, the last one tagged FINAL. The header names the sender's
key and, per recipient, the random file key boxed with crypto_box(sender X25519 secret,
recipient X25519 public), so only a recipient can read it and only the sender made it.
The first chunk carries the header's hash as associated data, binding stream to header.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from collections.abc import Callable, Sequence
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
    verify_signature,
)

MAGIC = b"CMTRSEAL1\n"
CHUNK = 1 << 20
MAX_HEADER = 1 << 20
MAX_RECIPIENTS = 64
_ABYTES = sodium.crypto_secretstream_xchacha20poly1305_ABYTES
_TAG_FINAL = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
_TAG_MESSAGE = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE


@dataclass(frozen=True, slots=True)
class SealHeader:
    """What a sealed file says about itself before it is opened."""

    sender: bytes
    recipients: tuple[str, ...]
    created_at: str
    boxes: tuple[bytes, ...]
    stream_header: bytes
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
    if not recipients:
        raise ValueError("at least one recipient is needed")
    if len(recipients) > MAX_RECIPIENTS:
        raise ValueError("too many recipients")
    file_key = nacl.utils.random(sodium.crypto_secretstream_xchacha20poly1305_KEYBYTES)
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    stream_header = sodium.crypto_secretstream_xchacha20poly1305_init_push(state, file_key)
    unique = list(dict.fromkeys(bytes(r) for r in recipients))
    header = {
        "v": 1,
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
        "stream": _b64(stream_header),
    }
    raw = json.dumps(header, separators=(",", ":")).encode()
    prefix = MAGIC + struct.pack(">I", len(raw)) + raw
    fout.write(prefix + sender.sign(prefix))
    ad: bytes | None = hashlib.sha256(prefix).digest()
    chunk = fin.read(CHUNK)
    while True:
        following = fin.read(CHUNK) if chunk else b""
        tag = _TAG_FINAL if not following else _TAG_MESSAGE
        out = sodium.crypto_secretstream_xchacha20poly1305_push(state, chunk, ad, tag)
        fout.write(struct.pack(">I", len(out)) + out)
        ad = None
        if tag == _TAG_FINAL:
            return
        chunk = following


def read_header(path: Path) -> SealHeader:
    """Parse and verify the signed header of a sealed file (no key needed)."""
    with path.open("rb") as fh:
        return _read_header(fh)


def open_file(
    src: Path,
    dst: Path,
    me: Identity,
    *,
    is_trusted: Callable[[bytes], bool] | None = None,
) -> bytes:
    """Decrypt `src` into `dst` (only on full success); return the sender's public key."""
    with src.open("rb") as fin:
        header = _read_header(fin)
        if is_trusted is not None and not is_trusted(header.sender):
            raise NotPaired(f"sealed bundle from unpaired device {header.sender_device_id}")
        file_key = _unbox(header, me)
        with atomic_writer(dst, 0o600) as fout:
            _decrypt(fin, fout, header, file_key)
    return header.sender


def _read_header(fh: BinaryIO) -> SealHeader:
    magic = fh.read(len(MAGIC))
    if magic != MAGIC:
        raise BundleError("not a sealed commuter bundle")
    size_raw = fh.read(4)
    if len(size_raw) != 4:
        raise BundleError("sealed bundle is truncated")
    (size,) = struct.unpack(">I", size_raw)
    if size > MAX_HEADER:
        raise BundleError("sealed bundle header is too large")
    raw = fh.read(size)
    signature = fh.read(64)
    if len(raw) != size or len(signature) != 64:
        raise BundleError("sealed bundle is truncated")
    try:
        data = json.loads(raw)
        sender = base64.b64decode(data["sender"], validate=True)
        entries = data["recipients"]
        if data.get("v") != 1 or len(sender) != 32 or not isinstance(entries, list):
            raise ValueError("bad header")
        recipients = tuple(str(e["id"]) for e in entries)
        boxes = tuple(base64.b64decode(e["box"], validate=True) for e in entries)
        stream_header = base64.b64decode(data["stream"], validate=True)
        created_at = str(data.get("created_at", ""))
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError("sealed bundle header is malformed") from exc
    prefix = MAGIC + size_raw + raw
    try:
        verify_signature(sender, prefix, signature)
    except BadSignature as exc:
        raise BundleError("sealed bundle header signature is invalid (tampered?)") from exc
    return SealHeader(
        sender=sender,
        recipients=recipients,
        created_at=created_at,
        boxes=boxes,
        stream_header=stream_header,
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


def _decrypt(fin: BinaryIO, fout: BinaryIO, header: SealHeader, file_key: bytes) -> None:
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    try:
        sodium.crypto_secretstream_xchacha20poly1305_init_pull(
            state, header.stream_header, file_key
        )
    except (CryptoError, ValueError, TypeError) as exc:
        raise BundleError("sealed bundle stream header is invalid") from exc
    ad: bytes | None = header.digest
    while True:
        size_raw = fin.read(4)
        if len(size_raw) != 4:
            raise BundleError("sealed bundle is truncated")
        (size,) = struct.unpack(">I", size_raw)
        if size < _ABYTES or size > CHUNK + _ABYTES:
            raise BundleError("sealed bundle is corrupt (bad chunk size)")
        chunk = fin.read(size)
        if len(chunk) != size:
            raise BundleError("sealed bundle is truncated")
        try:
            plain, tag = sodium.crypto_secretstream_xchacha20poly1305_pull(state, chunk, ad)
        except (CryptoError, ValueError, TypeError) as exc:
            raise BundleError("sealed bundle failed authentication (tampered or corrupt)") from exc
        ad = None
        fout.write(plain)
        if tag == _TAG_FINAL:
            if fin.read(1):
                raise BundleError("sealed bundle has trailing data after its end")
            return


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
