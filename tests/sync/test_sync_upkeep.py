"""The daemon's upkeep after it imports, as `pull` does: only the newest push of a session is
imported (the older ones removed), backups pruned after an import that made one, the shared
folder's plain drops cleaned up (at most every UPKEEP_EVERY seconds). Two fake machines, real
files, the real pipeline."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from claude_home import TOOLS, transcript
from synchelp import daemon
from test_sync_daemon import append, drops, rounds
from transhelp import CAROL, context, make_world

from commuter import core
from commuter.backups import list_backups
from commuter.pipeline import push_file
from commuter.transports.folder import PULLER_MARK


@pytest.fixture
def world(tmp_path):
    return make_world(tmp_path)


async def push_whole(world, tmp, *, plain: bool = False) -> None:
    """A's session exported whole and sent to bob through the folder (or a plain drop)."""
    out = tmp / f"export-{os.urandom(3).hex()}.commuter"
    with out.open("wb") as fh:
        await asyncio.to_thread(core.export_to, world.a, fh, session=TOOLS, cwd=world.project_a)
    ctx = context(world.a)
    peers = [] if plain else [ctx.peers.get("bob")]
    await push_file(ctx, out, peers, "folder", named=not plain)


def imported_lines(log: list[str]) -> list[str]:
    return [line for line in log if line.startswith(f"imported {TOOLS[:8]}")]


def test_of_two_pushes_of_one_session_only_the_newest_is_imported(world, tmp_path):
    async def go() -> None:
        await push_whole(world, tmp_path)
        await asyncio.sleep(1.1)  # manifests carry whole seconds: the second is strictly newer
        append(transcript(world.a.home, world.project_a, TOOLS), 2)
        await push_whole(world, tmp_path)
        assert len(drops(world)) == 2
        db, log = daemon(world.b)
        await rounds(db, 1, send=False)
        db.state.close()
        [line] = imported_lines(log)  # one import: the older push was never opened
        assert "created" in line
        assert drops(world) == []  # and it went once the newest was in
        at_a = transcript(world.a.home, world.project_a, TOOLS).read_bytes()
        at_b = transcript(world.b.home, world.project_b, TOOLS).read_bytes()
        assert at_b.count(b'"content":"more"') == at_a.count(b'"content":"more"') == 2

    asyncio.run(go())


def test_an_import_that_made_a_backup_prunes_old_backups(world, tmp_path):
    old = [f"2020010{n}T000000-{TOOLS}-00000{n}" for n in range(1, 4)]
    for name in old:
        folder = world.b.backups_dir / name
        folder.mkdir(parents=True)
        (folder / "x.jsonl").write_text("old\n")

    async def go() -> list[str]:
        da, _ = daemon(world.a)
        db, log = daemon(world.b)
        await rounds(da, 1, receive=False)
        await rounds(db, 1, send=False)
        assert len(list_backups(world.b)) == 3  # created: nothing replaced, nothing pruned
        append(transcript(world.a.home, world.project_a, TOOLS), 2)
        await rounds(da, 1, receive=False)
        await rounds(db, 1, send=False)
        da.state.close()
        db.state.close()
        return log

    log = asyncio.run(go())
    assert any("updated" in line for line in imported_lines(log)), log
    kept = [b.path.name for b in list_backups(world.b) if b.session_id == TOOLS]
    assert len(kept) == 2  # backups-keep (2): the update's own and the newest planted one
    assert old[2] in kept and old[0] not in kept and old[1] not in kept


def test_plain_drops_are_cleaned_up_by_the_daemon_at_most_every_upkeep_period(world, tmp_path):
    async def go() -> None:
        # carol pulls from this folder too: bob's import alone does not remove the drop
        (world.shared / f"{PULLER_MARK}{CAROL.device_id}").touch()
        await push_whole(world, tmp_path, plain=True)
        [name] = drops(world)
        db, log = daemon(world.b)
        await rounds(db, 1, send=False)
        assert len(imported_lines(log)) == 1
        assert drops(world) == [name]  # carol has not imported it
        month = time.time() - 31 * 86400
        os.utime(world.shared / name, (month, month))
        await rounds(db, 2, send=False)  # within UPKEEP_EVERY of the last upkeep: kept
        assert drops(world) == [name]
        db._next_upkeep = 0.0  # the period is over
        await rounds(db, 1, send=False)
        db.state.close()
        assert drops(world) == []  # older than plain-max-age-days and imported here: gone
        assert len(imported_lines(log)) == 1

    asyncio.run(go())
