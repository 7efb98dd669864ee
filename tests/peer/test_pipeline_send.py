"""A send without a temp bundle: the export writes into the sealer and the upload as it goes
(client.send_export, seal.SealingPipe), against a real daemon app on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from pathlib import Path
from typing import BinaryIO

import pytest
from claude_home import TOOLS, install
from peerhelp import ALICE, BOB, inbox_files, machine, trust

from commuter import core
from commuter.bundle.read import read_manifest
from commuter.errors import BundleError, NotPairedThere, PeerUnreachable, TooLarge
from commuter.peer import client, seal
from commuter.peer.inbox import Inbox
from commuter.peer.peers import Peers
from commuter.peer.server import make_app, start_site


@pytest.fixture
def machines(tmp_path: Path):
    """A (a real Claude home, ALICE) and B (BOB), paired both ways."""
    sa = machine(install(tmp_path / "A"))
    sb = machine(tmp_path / "B")
    trust(sa, "bob", BOB)
    trust(sb, "alice", ALICE)
    return sa, sb


async def _daemon(sb, **kw):
    app = make_app(sb, BOB, Peers.load(sb), name="bob", **kw)
    runner, port = await start_site(app, "127.0.0.1", 0)
    return runner, f"127.0.0.1:{port}"


def _random_export(size: int, fail_at: int | None = None):
    """An export that writes `size` random bytes in odd pieces (raising OSError at
    `fail_at`); returns their sha256."""

    def export(fh: BinaryIO) -> str:
        digest, done = hashlib.sha256(), 0
        while done < size:
            piece = os.urandom(min(size - done, 300_001))
            if fail_at is not None and done + len(piece) > fail_at:
                raise OSError("disk gone")
            fh.write(piece)
            digest.update(piece)
            done += len(piece)
        return digest.hexdigest()

    return export


async def test_a_session_exported_into_the_upload_arrives_whole(machines, tmp_path):
    sa, sb = machines
    runner, address = await _daemon(sb)
    ref = core.find_session(sa, TOOLS)
    seen: list[int] = []
    try:
        answer, exported = await client.send_export(
            sa,
            ALICE,
            Peers.load(sa).get("bob"),
            lambda fh: core.export_session(sa, fh, ref),
            address,
            seen.append,
        )
    finally:
        await runner.cleanup()
    assert answer["status"] == "stored"
    assert exported.transcript  # pipeline.send_session's record of what was sent
    [item] = Inbox(sb).pending()
    plain = Inbox(sb).open(item, BOB, Peers.load(sb), tmp_path / "got.bundle")
    manifest = read_manifest(plain)
    assert manifest.session_id == TOOLS
    transcript = next(m for m in manifest.members if m.name == f"session/{TOOLS}.jsonl")
    assert ref.path is not None
    assert transcript.sha256 == hashlib.sha256(ref.path.read_bytes()).hexdigest()
    assert sum(seen) == plain.stat().st_size  # the progress hook saw every plain byte


@pytest.mark.parametrize("size", [0, 1, seal.CHUNK, seal.CHUNK + 1, 5 * seal.CHUNK + 7])
async def test_every_size_arrives_byte_for_byte(machines, tmp_path, size):
    sa, sb = machines
    runner, address = await _daemon(sb)
    try:
        _answer, want = await client.send_export(
            sa, ALICE, Peers.load(sa).get("bob"), _random_export(size), address
        )
    finally:
        await runner.cleanup()
    [item] = Inbox(sb).pending()
    assert item.size == seal.sealed_size(size, len(seal.Sealer(ALICE, [BOB.public_key]).prefix))
    out = tmp_path / "out"
    Inbox(sb).open(item, BOB, Peers.load(sb), out)
    assert hashlib.sha256(out.read_bytes()).hexdigest() == want


async def test_an_export_that_fails_midway_is_its_own_error_and_leaves_nothing(machines):
    sa, sb = machines
    runner, address = await _daemon(sb)
    export = _random_export(6 * seal.CHUNK, fail_at=3 * seal.CHUNK)
    try:
        with pytest.raises(OSError, match="disk gone"):
            await client.send_export(sa, ALICE, Peers.load(sa).get("bob"), export, address)
        await asyncio.sleep(0.2)  # the daemon sees the connection go
    finally:
        await runner.cleanup()
    assert Inbox(sb).pending() == []
    assert inbox_files(sb) == []


async def test_a_refusal_stops_the_export_and_nothing_hangs(machines, tmp_path):
    sa, _sb = machines
    stranger = machine(tmp_path / "C")  # does not trust ALICE
    runner, address = await _daemon(stranger)
    try:
        with pytest.raises(NotPairedThere):
            await asyncio.wait_for(
                client.send_export(
                    sa, ALICE, Peers.load(sa).get("bob"), _random_export(20 * seal.CHUNK), address
                ),
                30,
            )
    finally:
        await runner.cleanup()
    assert inbox_files(stranger) == []


async def test_the_daemon_limit_holds_without_a_length(machines):
    sa, sb = machines
    runner, address = await _daemon(sb, max_body=2 * seal.CHUNK)
    try:
        with pytest.raises((TooLarge, PeerUnreachable)):
            await asyncio.wait_for(
                client.send_export(
                    sa, ALICE, Peers.load(sa).get("bob"), _random_export(8 * seal.CHUNK), address
                ),
                30,
            )
    finally:
        await runner.cleanup()
    assert inbox_files(sb) == []


async def test_the_pipe_holds_a_few_chunks_at_most():
    """A reader that is slow keeps the writer waiting: memory stays bounded."""
    sealer = seal.Sealer(ALICE, [BOB.public_key])
    pipe = seal.SealingPipe(sealer, asyncio.get_running_loop(), depth=2)
    written: list[int] = []

    def writer() -> None:
        for _ in range(20):
            pipe.write(b"x" * seal.CHUNK)
            written.append(1)
        pipe.close()

    thread = threading.Thread(target=writer)
    thread.start()
    frames = 0
    async for _frame in pipe.frames():
        await asyncio.sleep(0.02)
        frames += 1
        # frames taken (the prefix too) + queued (2) + held back (1) + being written (1)
        assert len(written) <= frames + 4
    thread.join(5)
    assert frames == 1 + 20  # prefix, then one frame per chunk (the last one final)


async def test_an_abandoned_pipe_frees_its_writer():
    sealer = seal.Sealer(ALICE, [BOB.public_key])
    pipe = seal.SealingPipe(sealer, asyncio.get_running_loop(), depth=1)
    failed: list[BaseException] = []

    def writer() -> None:
        try:
            while True:
                pipe.write(b"y" * seal.CHUNK)
        except BundleError as exc:
            failed.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    frames = pipe.frames()
    await anext(frames)
    await anext(frames)
    pipe.abandon()
    deadline = time.monotonic() + 5
    while thread.is_alive() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
        pipe.abandon()
    assert not thread.is_alive()
    assert isinstance(failed[0], seal.PipeAbandoned)
