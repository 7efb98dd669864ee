"""Sealed bundles: only recipients read them, tampering and truncation are caught."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from commuter.errors import BundleError, NotPaired
from commuter.peer import seal
from commuter.peer.identity import Identity
from commuter.sync.label import seal_labelled

ALICE = Identity.from_seed(b"a" * 32)
BOB = Identity.from_seed(b"b" * 32)
CAROL = Identity.from_seed(b"c" * 32)
EVE = Identity.from_seed(b"e" * 32)


@pytest.fixture
def plain(tmp_path: Path) -> Path:
    path = tmp_path / "plain.bin"
    path.write_bytes(b"SECRET-CODEWORD-42 " + os.urandom(3 * seal.CHUNK + 17))
    return path


@pytest.fixture(params=["frames of CHUNK", "a short first frame"])
def sealed(tmp_path: Path, plain: Path, request: pytest.FixtureRequest) -> Path:
    """Sealed as the LAN upload seals (every frame CHUNK), and as `push` and the sync daemon
    seal for relay and folder (label.seal_labelled: a LABEL_FRAME first frame, then CHUNK)."""
    out = tmp_path / "sealed.bin"
    how = seal.seal_file if request.param == "frames of CHUNK" else seal_labelled
    how(plain, out, ALICE, [BOB.public_key, CAROL.public_key])
    return out


def test_every_recipient_opens_and_learns_the_sender(tmp_path, plain, sealed):
    for who in (BOB, CAROL):
        out = tmp_path / f"open-{who.device_id}"
        sender = seal.open_file(sealed, out, who)
        assert sender == ALICE.public_key
        assert out.read_bytes() == plain.read_bytes()


def test_ciphertext_does_not_contain_the_plaintext(sealed):
    assert b"SECRET-CODEWORD-42" not in sealed.read_bytes()
    assert seal.is_sealed(sealed)


def test_header_lists_recipients_and_sender(sealed):
    header = seal.read_header(sealed)
    assert set(header.recipients) == {BOB.device_id, CAROL.device_id}
    assert header.sender == ALICE.public_key


def test_non_recipient_cannot_open(tmp_path, sealed):
    out = tmp_path / "eve"
    with pytest.raises(BundleError, match="not addressed"):
        seal.open_file(sealed, out, EVE)
    assert not out.exists()


def test_untrusted_sender_is_refused(tmp_path, sealed):
    out = tmp_path / "bob"
    with pytest.raises(NotPaired):
        seal.open_file(sealed, out, BOB, is_trusted=lambda key: False)
    assert not out.exists()


@pytest.mark.parametrize("offset", [3, 20, 200, -5, -(seal.CHUNK + 100)])
def test_flipped_byte_is_detected_and_nothing_written(tmp_path, sealed, offset):
    data = bytearray(sealed.read_bytes())
    data[offset] ^= 0x01
    sealed.write_bytes(bytes(data))
    out = tmp_path / "bob"
    with pytest.raises(BundleError):
        seal.open_file(sealed, out, BOB)
    assert not out.exists()
    assert list(tmp_path.glob(".bob*")) == []


@pytest.mark.parametrize("keep", [5, 60, 400, seal.CHUNK, seal.CHUNK * 2 + 50])
def test_truncated_file_is_detected(tmp_path, sealed, keep):
    sealed.write_bytes(sealed.read_bytes()[:keep])
    with pytest.raises(BundleError):
        seal.open_file(sealed, tmp_path / "bob", BOB)
    assert not (tmp_path / "bob").exists()


def test_dropping_the_final_chunk_is_detected(tmp_path, plain, sealed):
    head, frames = _frames(sealed.read_bytes())
    assert len(frames) == 4 and frames[-1][0] & 0x80  # the last one is marked final
    # Without the final frame, what is left ends on a frame boundary.
    sealed.write_bytes(head + b"".join(frames[:-1]))
    with pytest.raises(BundleError, match="truncated"):
        seal.open_file(sealed, tmp_path / "bob", BOB)


def _frames(data: bytes) -> tuple[bytes, list[bytes]]:
    """A sealed file cut into its signed header and its frames (lead included)."""
    pos = len(seal.MAGIC) + 4 + seal.header_size(data[: len(seal.MAGIC) + 4]) + 64
    head, frames = data[:pos], []
    while pos < len(data):
        end = pos + 4 + seal.Opener.frame_size(data[pos : pos + 4])
        frames.append(data[pos:end])
        pos = end
    return head, frames


@pytest.mark.parametrize("which", [0, -1])
def test_moving_the_final_mark_is_detected(tmp_path, sealed, which):
    head, frames = _frames(sealed.read_bytes())
    frame = bytearray(frames[which])
    frame[0] ^= 0x80  # the first frame claims to be the last, or the last one not to be
    frames[which] = bytes(frame)
    sealed.write_bytes(head + b"".join(frames))
    with pytest.raises(BundleError, match="authentication"):
        seal.open_file(sealed, tmp_path / "bob", BOB)
    assert not (tmp_path / "bob").exists()


def test_reordered_frames_are_detected(tmp_path, sealed):
    head, frames = _frames(sealed.read_bytes())
    frames[0], frames[1] = frames[1], frames[0]
    sealed.write_bytes(head + b"".join(frames))
    with pytest.raises(BundleError, match="authentication"):
        seal.open_file(sealed, tmp_path / "bob", BOB)


def test_frames_from_another_seal_are_detected(tmp_path, plain, sealed):
    other = tmp_path / "other"
    seal.seal_file(plain, other, ALICE, [BOB.public_key])
    head, _ = _frames(sealed.read_bytes())
    _, frames = _frames(other.read_bytes())
    sealed.write_bytes(head + b"".join(frames))
    with pytest.raises(BundleError, match="authentication"):
        seal.open_file(sealed, tmp_path / "bob", BOB)


def test_sealed_size_is_exact(tmp_path):
    for size in (0, 1, seal.CHUNK, seal.CHUNK + 1, 3 * seal.CHUNK):
        src = tmp_path / f"p{size}"
        src.write_bytes(os.urandom(size))
        sealer = seal.Sealer(ALICE, [BOB.public_key])
        with src.open("rb") as fh:
            total = len(sealer.prefix) + sum(len(f) for f in sealer.frames(fh))
        assert total == seal.sealed_size(size, len(sealer.prefix))


def test_trailing_garbage_is_detected(tmp_path, sealed):
    sealed.write_bytes(sealed.read_bytes() + b"x")
    with pytest.raises(BundleError, match="trailing"):
        seal.open_file(sealed, tmp_path / "bob", BOB)


def test_resigned_header_by_another_key_cannot_open_the_stream(tmp_path, plain):
    forged = tmp_path / "forged"
    seal.seal_file(plain, forged, EVE, [BOB.public_key])
    assert seal.open_file(forged, tmp_path / "x", BOB) == EVE.public_key
    trusted = {ALICE.public_key}
    with pytest.raises(NotPaired):
        seal.open_file(forged, tmp_path / "y", BOB, is_trusted=lambda k: k in trusted)


def test_random_bytes_and_empty_file_are_not_sealed(tmp_path):
    junk = tmp_path / "junk"
    junk.write_bytes(os.urandom(1000))
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    for path in (junk, empty):
        assert not seal.is_sealed(path)
        with pytest.raises(BundleError, match="not a sealed"):
            seal.open_file(path, tmp_path / "out", BOB)


def test_empty_plaintext_round_trips(tmp_path):
    src = tmp_path / "empty"
    src.write_bytes(b"")
    seal.seal_file(src, tmp_path / "s", ALICE, [BOB.public_key])
    seal.open_file(tmp_path / "s", tmp_path / "o", BOB)
    assert (tmp_path / "o").read_bytes() == b""
