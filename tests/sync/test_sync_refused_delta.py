"""An increment that reaches B through the relay but does not apply there (B's copy changed
under commuter), while A's daemon is not on the LAN: the increment is kept and shown as
waiting, B asks A once (a small sealed refusal through the relay), A's daemon sends the whole
session, B imports it and the kept increment goes. Two fake machines, their daemons' loops
in-process, a real relay app on loopback, no LAN."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp import web
from claude_home import TOOLS, transcript
from synchelp import daemon
from test_sync_daemon import append
from transhelp import make_world

from commuter import acks, config
from commuter.relay.app import make_relay_app


@pytest.fixture
def world(tmp_path):
    return make_world(tmp_path)


def mail(root: Path) -> list[Path]:
    return sorted(p for p in (root / "mailboxes").rglob("*.sealed") if p.is_file())


def test_a_relay_increment_that_does_not_apply_waits_and_the_sender_sends_it_whole(world, tmp_path):
    relay_dir = tmp_path / "relay"
    for s in (world.a, world.b):
        config.unset_value(s, "transfer-dir")

    async def go() -> None:
        runner = web.AppRunner(make_relay_app(relay_dir), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        for s in (world.a, world.b):
            config.set_value(s, "relay", (url,))
        da, log_a = daemon(world.a)
        db, log_b = daemon(world.b)

        async def receive(d) -> None:
            d._next_remote = 0.0
            await d._receive_round()

        try:
            await da._send_round()
            assert any("via relay: whole session" in line for line in log_a), log_a
            await receive(db)
            at_b = transcript(world.b.home, world.project_b, TOOLS)
            lines = at_b.read_bytes().splitlines(keepends=True)
            at_b.write_bytes(b"".join(lines[:-1]))  # B's copy changed under commuter
            before = at_b.read_bytes()
            append(transcript(world.a.home, world.project_a, TOOLS), 2)
            await da._send_round()
            assert any("via relay: increment" in line for line in log_a), log_a
            [delta] = mail(relay_dir)

            for _ in range(3):  # refused, kept; asked once; due again: no second ask
                await receive(db)
                for w in db.state.waiting().values():
                    db.state.wait(
                        w.key,
                        w.transport,
                        w.sender,
                        w.session,
                        w.project,
                        w.size,
                        w.reason,
                        delay=0,
                    )
            assert at_b.read_bytes() == before
            waits = [line for line in log_b if line.startswith(f"waiting: {TOOLS[:8]}")]
            assert len(waits) == 1, log_b
            assert "asked alice for the whole session; kept until it arrives" in waits[0]
            assert not any(line.startswith(("error", "dropped")) for line in log_b), log_b
            boxes = mail(relay_dir)
            assert delta in boxes and len(boxes) == 2  # the delta kept; one refusal for A
            [refusal] = [p for p in boxes if p != delta]
            assert refusal.stat().st_size < 2048
            from commuter.commands.status import collect

            data = await asyncio.to_thread(collect, world.b)
            [item] = [p for p in data["pending"] if p["transport"] == "relay"]
            assert item["sender"] == "alice" and item["session_id"] == TOOLS
            assert "asked alice for the whole session" in item["waiting"]

            at_a_status = await asyncio.to_thread(collect, world.a)
            [ask] = at_a_status["pending"]  # what waits at A says what it is, unopened
            assert ask["refusal"] and ask["session_id"] == TOOLS and ask["sender"] == "bob"
            from transhelp import context

            from commuter.sync.pending import dry_run_lines

            [dry] = await asyncio.to_thread(dry_run_lines, context(world.a), "auto", warn=print)
            assert dry.startswith(f"bob could not apply an increment of {TOOLS} (claude)"), dry
            bob = world.b.state_dir  # what A believed bob holds is forgotten on the refusal
            assert acks.acked(world.a.state_dir, db.identity.device_id, "claude", TOOLS)
            await receive(da)
            assert acks.acked(world.a.state_dir, db.identity.device_id, "claude", TOOLS) is None
            assert any("bob could not apply the increment" in line for line in log_a), log_a
            await da._send_round()
            sent = [line for line in log_a if line.startswith(f"sent {TOOLS[:8]}")]
            assert len(sent) == 3 and "via relay: whole session" in sent[-1], sent

            await receive(db)
            at_a = transcript(world.a.home, world.project_a, TOOLS).read_bytes()
            got = at_b.read_bytes()  # every message of A's, its paths mapped to B's
            assert got.count(b"\n") == at_a.count(b"\n") and got.startswith(before)
            assert got.count(b'"content":"more"') == at_a.count(b'"content":"more"') == 2
            assert any("updated" in line for line in log_b if line.startswith("imported")), log_b
            assert mail(relay_dir) == []  # the whole one imported, the kept delta went with it
            assert db.state.waiting() == {}
            assert acks.refuse_delta(bob, da.identity.device_id, "claude", TOOLS, "x") == "ask"
            await da._send_round()  # nothing more to send: in step
            assert len([line for line in log_a if line.startswith(f"sent {TOOLS[:8]}")]) == 3
        finally:
            da.state.close()
            db.state.close()
            await runner.cleanup()

    asyncio.run(go())


def test_a_refusal_is_read_only_when_every_field_is_sound(tmp_path):
    from commuter.sync import nack

    path = tmp_path / "n"
    nack.write(path, "claude", TOOLS)
    assert nack.read(path) == ("claude", TOOLS)
    for body in (
        b"COMMUTER-BUNDLE 1\n{}",
        nack.MAGIC + b'{"agent": "claude", "session_id": "../../etc"}',
        nack.MAGIC + b'{"agent": "Claude/x", "session_id": "abc"}',
        nack.MAGIC + b'["claude", "abc"]',
        nack.MAGIC + b"[" * 100000,
        nack.MAGIC + b'{"agent": "claude", "session_id": "abc", "pad": "' + b"x" * 5000 + b'"}',
    ):
        path.write_bytes(body)
        assert nack.read(path) is None, body[:60]


def test_a_kept_delta_asks_once_an_hour_and_is_stale_once_its_session_came(tmp_path):
    state = tmp_path / "state"
    assert acks.refuse_delta(state, "alice", "claude", "s1", "d1") == "ask"
    acks.asked_whole(state, "alice", "claude", "s1")
    assert acks.refuse_delta(state, "alice", "claude", "s1", "d1") == "wait"
    assert acks.refuse_delta(state, "alice", "claude", "s1", "d2") == "wait"  # same session
    assert acks.refuse_delta(state, "alice", "claude", "s2", "d3") == "ask"  # another one
    acks.answered(state, "alice", "claude", "s1")
    assert acks.refuse_delta(state, "alice", "claude", "s1", "d1") == "stale"
    assert acks.refuse_delta(state, "alice", "claude", "s1", "d2") == "stale"
    assert acks.refuse_delta(state, "alice", "claude", "s1", "d9") == "ask"  # a new refusal
