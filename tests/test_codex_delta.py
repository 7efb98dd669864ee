"""Delta transfer of Codex threads: an increment exported against the state a peer
acknowledged is a delta bundle (only the appended rollout lines, changed subagent rollouts),
placed byte for byte as a whole import places it, its row as a whole import writes it; a
receiver whose base does not match refuses it (DeltaBaseMismatch, nothing written) and the
whole thread then imports; over a real LAN daemon the sender falls back by itself."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from peerhelp import ALICE, BOB, give_identity, machine, trust
from test_codex_backend import CHILD, DOT_SPACE, PARENT, install, row
from test_codex_converge import Machine, _empty
from test_delta_transfer import World, _daemon

from commuter import acks, bundle, config, core
from commuter.backends.codex import lineage
from commuter.errors import DeltaBaseMismatch
from commuter.model import ImportOptions, ImportResult
from commuter.pipeline import Pushed, push_session
from commuter.transports import Transport, TransportContext
from commuter.transports.lan import LanTransport

VERIFIED = ImportOptions(sender_verified=True)


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Machine, Machine]:
    """A (alice, the fixture) and B (bob, whose codex has its own threads), paired."""
    a_home, b_home = install(tmp_path / "A"), install(tmp_path / "B")
    _empty(b_home, DOT_SPACE, PARENT, CHILD)
    for sub in ("My Project.v2", "my.app"):
        (b_home / "work" / sub).mkdir(parents=True)
    sa, sb = machine(a_home), machine(b_home)
    for s in (sa, sb):
        config.set_value(s, "path-map", (str(a_home / "projects"), str(b_home / "work")))
    give_identity(sa, ALICE)
    give_identity(sb, BOB)
    trust(sa, "bob", BOB)
    trust(sb, "alice", ALICE)
    return Machine("a", a_home, sa, a_home / "projects"), Machine("b", b_home, sb, b_home / "work")


def _talk(m: Machine, n: int, tid: str = DOT_SPACE, size: int = 1000) -> None:
    """`n` turns of random text (a thread worth a delta)."""
    for i in range(n):
        m.say(
            f"turn {i} " + os.urandom(size // 2).hex(),
            f"2099-01-01T10:{i // 60:02d}:{i % 60:02d}Z",
            tid,
        )


def _send(
    a: Machine, b: Machine, tid: str, out: Path, *, delta: bool
) -> tuple[core.Exported, Path]:
    """A exports `tid` (against what B acknowledged when `delta`)."""
    ref = core.find_session(a.settings, tid)
    base = acks.acked(a.settings.state_dir, BOB.device_id, "codex", tid) if delta else None
    with out.open("wb") as fh:
        exported = core.export_session(a.settings, fh, ref, base=base.members if base else None)
    return exported, out


def _deliver(a: Machine, b: Machine, exported: core.Exported, out: Path) -> ImportResult:
    """B imports what alice sealed; alice records B's confirmation (as push_session does)."""
    result = core.import_file(b.settings, out, VERIFIED, sender=ALICE.device_id)
    acks.record_ack(
        a.settings.state_dir,
        BOB.device_id,
        "codex",
        exported.manifest.session_id,
        exported.state,
        exported.transcript,
    )
    return result


def _tree(home: Path) -> dict[str, bytes]:
    """Every file of B's codex home (the databases through SQLite: their rows)."""
    out: dict[str, bytes] = {}
    for p in sorted((home / ".codex").rglob("*")):
        if p.is_file() and not p.name.startswith("state_5.sqlite"):
            out[str(p.relative_to(home))] = p.read_bytes()
    conn = sqlite3.connect(home / ".codex" / "state_5.sqlite")
    try:
        for table in ("threads", "thread_spawn_edges"):
            rows = conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
            out[table] = json.dumps(rows).encode()
    finally:
        conn.close()
    return out


def test_an_increment_is_a_delta_placed_as_a_whole_import_would(
    pair: tuple[Machine, Machine], tmp_path: Path
) -> None:
    a, b = pair
    _talk(a, 150)
    exported, whole = _send(a, b, DOT_SPACE, tmp_path / "whole", delta=False)
    assert not exported.delta
    assert _deliver(a, b, exported, whole).action == "created"
    _talk(a, 3, size=200)
    exported, inc = _send(a, b, DOT_SPACE, tmp_path / "inc", delta=True)
    assert exported.delta and exported.manifest.delta is not None
    names = {m.name for m in exported.manifest.members}
    assert names == {f"delta/session/{DOT_SPACE}.jsonl"}
    assert inc.stat().st_size < whole.stat().st_size / 10, (
        inc.stat().st_size,
        whole.stat().st_size,
    )
    res = _deliver(a, b, exported, inc)
    assert res.action == "updated" and res.session_id == DOT_SPACE and res.backups
    assert b.keys(DOT_SPACE) == a.keys(DOT_SPACE)
    text = b.path(DOT_SPACE).read_text()
    assert str(b.project) in text and str(a.project) not in text  # the new lines translated
    after, row_after = b.path(DOT_SPACE).read_bytes(), row(b.home, DOT_SPACE)
    # a whole import of the same state writes the same bytes and the same row
    b.path(DOT_SPACE).unlink()
    _exported, again = _send(a, b, DOT_SPACE, tmp_path / "again", delta=False)
    assert core.import_file(b.settings, again, ImportOptions()).action == "created"
    assert b.path(DOT_SPACE).read_bytes() == after
    assert row(b.home, DOT_SPACE) == row_after
    # and the next increment is a delta on what the delta left
    _talk(a, 2, size=200)
    exported, inc2 = _send(a, b, DOT_SPACE, tmp_path / "inc2", delta=True)
    assert exported.delta and _deliver(a, b, exported, inc2).action == "updated"
    assert b.keys(DOT_SPACE) == a.keys(DOT_SPACE)


def test_nothing_new_is_an_unchanged_delta(pair: tuple[Machine, Machine], tmp_path: Path) -> None:
    a, b = pair
    exported, whole = _send(a, b, DOT_SPACE, tmp_path / "whole", delta=False)
    _deliver(a, b, exported, whole)
    _talk(a, 1)
    exported, inc = _send(a, b, DOT_SPACE, tmp_path / "inc", delta=True)
    assert _deliver(a, b, exported, inc).action == "updated"
    again = core.import_file(b.settings, inc, VERIFIED, sender=ALICE.device_id)
    assert again.action == "unchanged" and b.keys(DOT_SPACE) == a.keys(DOT_SPACE)


def _diverged_here(a: Machine, b: Machine, tmp_path: Path) -> tuple[Path, core.Exported]:
    exported, whole = _send(a, b, DOT_SPACE, tmp_path / "whole", delta=False)
    _deliver(a, b, exported, whole)
    _talk(a, 2)
    exported, inc = _send(a, b, DOT_SPACE, tmp_path / "inc", delta=True)
    assert exported.delta
    return inc, exported


def test_a_thread_that_went_on_here_refuses_the_delta_and_the_whole_converges(
    pair: tuple[Machine, Machine], tmp_path: Path
) -> None:
    a, b = pair
    inc, _exported = _diverged_here(a, b, tmp_path)
    b.say("only at B", "2099-01-01T09:00:00Z")  # B's codex went on (it began first)
    before = _tree(b.home)
    with pytest.raises(DeltaBaseMismatch):
        core.import_file(b.settings, inc, VERIFIED, sender=ALICE.device_id)
    assert _tree(b.home) == before
    _exported, whole = _send(a, b, DOT_SPACE, tmp_path / "whole2", delta=False)
    res = core.import_file(b.settings, whole, VERIFIED, sender=ALICE.device_id)
    assert res.action == "forked"  # B's branch began first: A's is the fork
    assert "only at B" in b.path(DOT_SPACE).read_text()
    assert b.keys(res.session_id) == a.keys(DOT_SPACE)


@pytest.mark.parametrize("how", ["forgotten", "rewritten", "archived", "moved"])
def test_a_base_this_machine_does_not_hold_is_refused_then_the_whole_imports(
    pair: tuple[Machine, Machine], tmp_path: Path, how: str
) -> None:
    a, b = pair
    inc, _exported = _diverged_here(a, b, tmp_path)
    held = b.path(DOT_SPACE)
    if how == "forgotten":
        acks.forget_received(b.settings.state_dir, ALICE.device_id, "codex", DOT_SPACE)
    elif how == "rewritten":  # same size, another byte: the digest tells
        data = bytearray(held.read_bytes())
        data[len(data) // 2] ^= 0x01
        held.write_bytes(bytes(data))
    elif how == "archived":
        from test_codex_backend import archive

        archive(b.home, DOT_SPACE)
    else:
        held.rename(held.with_name(held.name.replace("T14-07-08", "T15-00-00")))
    before = _tree(b.home)
    with pytest.raises(DeltaBaseMismatch):
        core.import_file(b.settings, inc, VERIFIED, sender=ALICE.device_id)
    assert _tree(b.home) == before
    _exported, whole = _send(a, b, DOT_SPACE, tmp_path / "whole2", delta=False)
    res = core.import_file(b.settings, whole, VERIFIED, sender=ALICE.device_id)
    assert res.action in ("updated", "forked", "replaced"), res
    found = {tid for tid in b.ids() if b.keys(tid) == a.keys(DOT_SPACE)}
    assert found, "the whole thread is at B"


def test_a_changed_subagent_travels_whole_an_unchanged_one_not(
    pair: tuple[Machine, Machine], tmp_path: Path
) -> None:
    a, b = pair
    exported, whole = _send(a, b, PARENT, tmp_path / "whole", delta=False)
    assert _deliver(a, b, exported, whole).action == "created"
    _talk(a, 2, PARENT)
    exported, inc = _send(a, b, PARENT, tmp_path / "inc", delta=True)
    assert {m.name for m in exported.manifest.members} == {f"delta/session/{PARENT}.jsonl"}
    child_before = b.path(CHILD).read_bytes()
    assert _deliver(a, b, exported, inc).action == "updated"
    assert b.path(CHILD).read_bytes() == child_before
    _talk(a, 1, PARENT)
    _talk(a, 2, CHILD)
    exported, inc = _send(a, b, PARENT, tmp_path / "inc2", delta=True)
    names = {m.name for m in exported.manifest.members}
    assert names == {f"delta/session/{PARENT}.jsonl", f"subagents/{CHILD}.jsonl"}
    assert _deliver(a, b, exported, inc).action == "updated"
    for tid in (PARENT, CHILD):
        assert b.keys(tid) == a.keys(tid), tid
        r = row(b.home, tid)
        assert r is not None and r["rollout_path"] == str(b.path(tid))


def test_a_delta_is_taken_only_from_the_peer_it_is_based_on(
    pair: tuple[Machine, Machine], tmp_path: Path
) -> None:
    a, b = pair
    inc, _exported = _diverged_here(a, b, tmp_path)
    before = _tree(b.home)
    with pytest.raises(DeltaBaseMismatch):  # a plain drop: nobody vouches for its sender
        core.import_file(b.settings, inc, ImportOptions())
    with pytest.raises(DeltaBaseMismatch):
        core.import_file(b.settings, inc, VERIFIED, sender="X" * 16)
    assert _tree(b.home) == before
    bundle.read_manifest(inc)  # a well-formed bundle all along


async def test_over_a_lan_daemon_an_increment_goes_as_a_delta_and_a_refusal_falls_back(
    pair: tuple[Machine, Machine], aiohttp_server: Any
) -> None:
    a, b = pair
    world = World(a.settings, b.settings, a.project, b.project, [])
    address = await _daemon(world, aiohttp_server)

    async def push() -> Pushed:
        ctx = TransportContext.load(a.settings)

        def lan(_name: str, c: TransportContext) -> Transport:
            return LanTransport(c, address=address)

        return await push_session(
            ctx, DOT_SPACE, [ctx.peers.get("bob")], "lan", named=True, factory=lan
        )

    _talk(a, 100)
    first = await push()
    assert not first.delta and first.confirmed == (BOB.device_id,)
    _talk(a, 3, size=200)
    second = await push()
    assert second.delta and not second.fell_back
    assert b.keys(DOT_SPACE) == a.keys(DOT_SPACE)
    whole, increment = world.uploads
    assert increment < whole / 10, (increment, whole)
    acks.forget_received(b.settings.state_dir, ALICE.device_id, "codex", DOT_SPACE)
    _talk(a, 1)
    third = await push()
    assert third.fell_back and not third.delta
    assert b.keys(DOT_SPACE) == a.keys(DOT_SPACE)
    assert lineage.relation(b.path(DOT_SPACE), a.path(DOT_SPACE)) == "same"
