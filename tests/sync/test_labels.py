"""Labels of waiting sealed items (session, project, sender) read from the seal's first frame
without downloading the item: the folder, the LAN inbox and a real relay; hostile bytes."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from claude_home import TOOLS
from relayhelp import RelayProcess
from transhelp import ALICE, BOB, EVE, context, env_for, make_world, run

from commuter import config, core
from commuter.peer import seal
from commuter.peer.inbox import Inbox
from commuter.peer.peers import Peers
from commuter.pipeline import push_file
from commuter.sync.label import PEEK_BYTES, peek_bytes
from commuter.sync.pending import list_pending


@pytest.fixture
def world(tmp_path):
    return make_world(tmp_path)


def export(world, tmp: Path) -> Path:
    out = tmp / f"export-{os.urandom(3).hex()}.commuter"
    with out.open("wb") as fh:
        core.export_to(world.a, fh, session=TOOLS, cwd=world.project_a)
    return out


def sealed(world, tmp: Path, to=(BOB,), sender=ALICE) -> Path:
    out = tmp / f"s-{os.urandom(3).hex()}.sealed"
    seal.seal_file(export(world, tmp), out, sender, [i.public_key for i in to])
    return out


def test_a_folder_drop_is_labelled_and_left_in_place(world, tmp_path):
    ctx = context(world.a)
    asyncio.run(push_file(ctx, export(world, tmp_path), ctx.peers.all(), "folder"))
    before = sorted(p for p in world.shared.iterdir() if not p.name.startswith("."))
    [item] = asyncio.run(list_pending(context(world.b)))
    assert (item.transport, item.sender, item.session_id) == ("folder", "alice", TOOLS)
    assert item.project == str(world.project_a) and item.agent == "claude"
    assert item.size == before[0].stat().st_size and item.age is not None
    assert sorted(p for p in world.shared.iterdir() if not p.name.startswith(".")) == before


def test_a_lan_inbox_entry_is_labelled(world, tmp_path):
    peer = Peers.load(world.b).get("alice")
    path = sealed(world, tmp_path)
    header = seal.read_header(path)
    Inbox(world.b).add(path, peer, header.digest.hex())
    config.unset_value(world.b, "transfer-dir")
    [item] = asyncio.run(list_pending(context(world.b)))
    assert (item.transport, item.sender, item.session_id) == ("lan", "alice", TOOLS)


def test_status_json_and_pull_dry_run_read_the_relay_without_taking_anything(world, tmp_path):
    relay = RelayProcess(tmp_path / "relay-data", tmp_path / "relay-home")
    try:
        for s in (world.a, world.b):
            config.set_value(s, "relay", (relay.url,))
            config.unset_value(s, "transfer-dir")
        ctx = context(world.a)
        asyncio.run(push_file(ctx, export(world, tmp_path), ctx.peers.all(), "relay"))
        env_b = env_for(world.b.home)
        shown = run(env_b, "status", "--json")
        assert shown.returncode == 0, shown.stderr
        data = json.loads(shown.stdout)
        [item] = data["pending"]
        assert item["transport"] == "relay" and item["sender"] == "alice"
        assert item["session_id"] == TOOLS and item["size"] > PEEK_BYTES // 1000
        assert item["project"] == str(world.project_a)
        human = run(env_b, "status")
        assert human.returncode == 0 and "relay  from alice" in human.stdout, human.stdout
        dry = run(env_b, "pull", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert f"would import {TOOLS} (claude, {world.project_a})" in dry.stdout
        assert "from alice via relay" in dry.stdout
        # Still there: a real pull imports it.
        pulled = run(env_b, "pull")
        assert pulled.returncode == 0 and f"claude --resume {TOOLS}" in pulled.stdout
        assert json.loads(run(env_b, "status", "--json").stdout)["pending"] == []
    finally:
        relay.stop()


def test_hostile_first_frames_give_no_label(world, tmp_path):
    good = sealed(world, tmp_path).read_bytes()
    trusted = Peers.load(world.b).is_trusted
    me = context(world.b).identity
    label = peek_bytes(good[:PEEK_BYTES], me, trusted)
    assert label is not None and label.session_id == TOOLS
    # One byte of the first frame flipped: AEGIS-256 refuses it.
    lead = len(seal.MAGIC) + 4
    frame_start = lead + seal.header_size(good[:lead]) + 64
    bad = bytearray(good)
    bad[frame_start + 100] ^= 0x01
    assert peek_bytes(bytes(bad), me, trusted) is None
    # Sealed by a key this machine never paired with.
    assert peek_bytes(sealed(world, tmp_path, sender=EVE).read_bytes(), me, trusted) is None
    # Sealed to someone else.
    assert peek_bytes(sealed(world, tmp_path, to=(EVE,)).read_bytes(), me, trusted) is None
    # Garbage, a truncated header, an empty file, a huge announced header.
    for junk in (os.urandom(5000), good[:40], b"", seal.MAGIC + b"\xff\xff\xff\xff"):
        assert peek_bytes(junk, me, trusted) is None
    # A well-sealed file that is not a bundle (random plaintext).
    plain = tmp_path / "junk.bin"
    plain.write_bytes(os.urandom(3000))
    seal.seal_file(plain, tmp_path / "junk.sealed", ALICE, [BOB.public_key])
    assert peek_bytes((tmp_path / "junk.sealed").read_bytes(), me, trusted) is None


def test_a_sealed_bundle_whose_manifest_lies_about_its_fields_gives_no_label(world, tmp_path):
    import io
    import tarfile

    import zstandard

    from commuter.bundle.model import MAGIC

    manifest = json.dumps({"format": 2, "backend": "claude", "session_id": "../../etc"}).encode()
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("manifest.json")
        info.size = len(manifest)
        tf.addfile(info, io.BytesIO(manifest))
    plain = tmp_path / "lie.commuter"
    plain.write_bytes(MAGIC + zstandard.ZstdCompressor().compress(tar.getvalue()))
    seal.seal_file(plain, tmp_path / "lie.sealed", ALICE, [BOB.public_key])
    me = context(world.b).identity
    data = (tmp_path / "lie.sealed").read_bytes()
    assert peek_bytes(data, me, Peers.load(world.b).is_trusted) is None
