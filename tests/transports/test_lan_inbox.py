"""The LAN transport's side of `pull`: what `commuter serve` stored in the inbox."""

from __future__ import annotations

import asyncio
import stat

import pytest
from claude_home import TOOLS, transcript
from transhelp import ALICE, BOB, context, make_world

from commuter import core
from commuter.peer import seal
from commuter.peer.inbox import Inbox
from commuter.peer.peers import Peers
from commuter.pipeline import pull_all


@pytest.fixture
def world(tmp_path):
    return make_world(tmp_path)


def received(world, tmp_path, *, damage: bool = False):
    """A bundle from alice as `serve` stores it in B's inbox; with `damage`, one byte of its
    ciphertext flipped afterwards (a disk error, a crash before the data reached the disk)."""
    bundle = tmp_path / "s.commuter"
    with bundle.open("wb") as fh:
        core.export_to(world.a, fh, session=TOOLS, cwd=world.project_a)
    sealed = tmp_path / "s.sealed"
    seal.seal_file(bundle, sealed, ALICE, [BOB.public_key])
    digest = seal.read_header(sealed).digest.hex()
    item = Inbox(world.b).add(sealed, Peers.load(world.b).get("alice"), digest)
    if damage:
        data = bytearray(item.sealed_path.read_bytes())
        data[-50] ^= 0xFF
        item.sealed_path.write_bytes(bytes(data))
    return item


def pull(settings, **kw):
    warnings: list[str] = []
    done = asyncio.run(
        pull_all(context(settings), core.ImportOptions(**kw), via="lan", warn=warnings.append)
    )
    return done, warnings


def test_an_inbox_item_is_imported_and_removed(world, tmp_path):
    received(world, tmp_path)
    [done], warnings = pull(world.b)
    assert done.result is not None and done.result.session_id == TOOLS, warnings
    assert transcript(world.b.home, world.project_b, TOOLS).is_file()
    assert Inbox(world.b).pending() == []


def test_a_damaged_inbox_item_is_set_aside_once_not_retried_forever(world, tmp_path):
    item = received(world, tmp_path, damage=True)
    damaged = item.sealed_path.read_bytes()
    dry, _ = pull(world.b, dry_run=True)
    assert [d.error is not None for d in dry] == [True]
    assert Inbox(world.b).pending() != [], "a dry run moves nothing"
    [failed], warnings = pull(world.b)
    assert failed.result is None and "failed authentication" in (failed.error or "")
    kept = world.b.rejected_dir / f"inbox_{item.id}.sealed"
    assert kept.read_bytes() == damaged  # nothing lost: the bytes are kept, out of the way
    assert stat.S_IMODE(world.b.rejected_dir.stat().st_mode) == 0o700
    [line] = [w for w in warnings if item.id in w]
    assert f"moved to {kept} and not retried" in line and "will retry" not in line
    assert Inbox(world.b).pending() == []
    assert not transcript(world.b.home, world.project_b, TOOLS).exists()
    again, again_warnings = pull(world.b)
    assert again == [] and again_warnings == []


def test_an_item_from_a_peer_unpaired_since_stays_for_a_later_pairing(world, tmp_path):
    received(world, tmp_path)
    peers = Peers.load(world.b)
    peers.remove("alice")
    peers.save()
    [failed], warnings = pull(world.b)
    assert failed.result is None and any("will retry" in w for w in warnings)
    assert len(Inbox(world.b).pending()) == 1
    assert not world.b.rejected_dir.exists()
