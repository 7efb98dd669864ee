"""The sync daemon's loops in-process on two fake machines sharing a folder (real files, real
seals, real SQLite, the real pipeline): sends, quiet period, held sessions, queue and backoff,
waits for a missing project or a held session at the receiver, restart without resending."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from claude_home import TOOLS, transcript
from synchelp import daemon
from transhelp import make_world

from commuter import config
from commuter.sync.state import SyncState

LINE = (
    '{"type":"user","message":{"role":"user","content":"more"},"uuid":"%s",'
    '"parentUuid":null,"sessionId":"' + TOOLS + '","timestamp":"2026-12-02T10:00:00Z"}\n'
)


def append(path: Path, n: int = 1) -> None:
    """`n` more user messages chained after the transcript's last entry."""
    last = None
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and entry.get("uuid"):
                last = entry
    assert last is not None
    with path.open("a") as fh:
        for _ in range(n):
            entry = {**last, "type": "user", "uuid": str(uuid.uuid4())}
            entry["parentUuid"] = last["uuid"]
            entry["message"] = {"role": "user", "content": "more"}
            fh.write(json.dumps(entry, separators=(",", ":")) + "\n")
            last = entry
    old = time.time() - 3600  # long quiet already
    os.utime(path, (old, old))


def drops(world) -> list[str]:
    return sorted(p.name for p in world.shared.iterdir() if not p.name.startswith("."))


async def rounds(d, n: int = 1, *, send: bool = True, receive: bool = True) -> None:
    for _ in range(n):
        if send:
            await d._send_round()
        if receive:
            d._next_remote = 0.0
            await d._receive_round()


class Holder:
    """A process whose argv[1] is named `claude` that holds `path` open (a running agent)."""

    def __init__(self, tmp: Path, path: Path) -> None:
        script = tmp / "bin" / "claude"
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(
            "import sys, time\nfh = open(sys.argv[1], 'rb')\nprint('ready', flush=True)\n"
            "time.sleep(120)\n"
        )
        self.proc = subprocess.Popen(
            [sys.executable, str(script), str(path)],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.fixture
def world(tmp_path):
    return make_world(tmp_path)


def test_every_session_reaches_the_peer_once_and_a_restart_resends_nothing(world):
    async def go() -> None:
        da, log_a = daemon(world.a)
        db, log_b = daemon(world.b)
        await rounds(da, 3, receive=False)
        sent = [line for line in log_a if line.startswith("sent ")]
        assert any(TOOLS[:8] in line and "to bob via folder" in line for line in sent)
        assert all("(claude, " in line for line in sent)  # session, agent and project named
        await rounds(db, 2)
        assert transcript(world.b.home, world.project_b, TOOLS).is_file()
        assert [line for line in log_b if line.startswith("sent ")] == []  # no echo back
        da.state.close()
        db.state.close()
        before = drops(world)
        again, log_again = daemon(world.a)  # a restart: the state says bob has everything
        await rounds(again, 3, receive=False)
        again.state.close()
        assert [line for line in log_again if line.startswith("sent ")] == []
        assert drops(world) == before == []

    asyncio.run(go())


def test_a_change_is_sent_after_the_quiet_period_only(world):
    async def go() -> None:
        da, _ = daemon(world.a)
        await rounds(da, 1, receive=False)
        da.state.close()
        path = transcript(world.a.home, world.project_a, TOOLS)
        with path.open("a") as fh:  # just written: not quiet for an hour
            fh.write(LINE % os.urandom(16).hex())
        slow, slow_log = daemon(world.a, quiet=3600)
        slow.status.write(running=True)  # what run_loops does first
        await rounds(slow, 2, receive=False)
        slow.state.close()
        assert [line for line in slow_log if line.startswith("sent ")] == []
        from commuter.commands.status import collect

        data = collect(world.a, pending=False)
        [row] = [s for s in data["sessions"] if s["session_id"] == TOOLS]
        assert row["peers"][0]["state"] == "queued"
        assert "sent after 3600 s unchanged" in row["peers"][0]["reason"]
        quick, quick_log = daemon(world.a, quiet=0)
        await rounds(quick, 1, receive=False)
        quick.state.close()
        assert [line[:13] for line in quick_log if line.startswith("sent ")] == [
            f"sent {TOOLS[:8]}"
        ]

    asyncio.run(go())


def test_a_session_held_by_a_running_agent_waits_until_it_lets_go(world, tmp_path):
    async def go() -> None:
        path = transcript(world.a.home, world.project_a, TOOLS)
        holder = Holder(tmp_path, path)
        try:
            da, log = daemon(world.a)
            await rounds(da, 1, receive=False)
            assert not any(TOOLS[:8] in line for line in log if line.startswith("sent "))
            [queued] = [line for line in log if line.startswith(f"queued {TOOLS[:8]}")]
            assert "held by a running agent" in queued and f"pid {holder.proc.pid}" in queued
        finally:
            holder.stop()
        for q in da.state.queued().values():  # looked at again after BUSY_RECHECK
            da.state.queue(q.peer, q.agent, q.session, q.version, q.reason, delay=0)
        await rounds(da, 1, receive=False)
        da.state.close()
        assert any(line.startswith(f"sent {TOOLS[:8]}") for line in log)

    asyncio.run(go())


def test_a_peer_away_is_queued_with_backoff_then_sent_when_a_way_opens(world):
    config.unset_value(world.a, "transfer-dir")  # only the LAN, and bob does not answer

    async def go() -> None:
        da, log = daemon(world.a)
        await rounds(da, 1, receive=False)
        queued = da.state.queued()
        q = next(q for q in queued.values() if q.session == TOOLS)
        assert q.attempts == 1 and abs(q.next_at - q.since - 5.0) < 0.01  # backoff(1)
        assert "bob" in q.reason
        lines = [line for line in log if line.startswith(f"queued {TOOLS[:8]}")]
        await rounds(da, 2, receive=False)  # not due yet: no new attempt, no new line
        assert da.state.queued()[(q.peer, q.agent, q.session)].attempts == 1
        assert [line for line in log if line.startswith(f"queued {TOOLS[:8]}")] == lines
        config.set_value(world.a, "transfer-dir", (str(world.shared),))
        assert da.state.retry_now(q.peer) >= 1  # what a sign of life from bob does
        await rounds(da, 1, receive=False)
        da.state.close()
        assert any(line.startswith(f"sent {TOOLS[:8]}") and "via folder" in line for line in log)

    asyncio.run(go())


def test_a_session_whose_project_is_missing_waits_quietly_then_imports(world):
    config.unset_value(world.b, "path-map")

    async def go() -> None:
        da, _ = daemon(world.a)
        await rounds(da, 1, receive=False)
        da.state.close()
        # Both fake machines share one disk: move A's projects away, so B has none of them.
        aside = world.a.home / "projects-elsewhere"
        (world.a.home / "projects").rename(aside)
        db, log = daemon(world.b)
        for _ in range(3):
            await rounds(db, 1, send=False)
            for w in db.state.waiting().values():  # due again: still one line only
                db.state.wait(
                    w.key, w.transport, w.sender, w.session, w.project, w.size, w.reason, delay=0
                )
        waits = [line for line in log if line.startswith(f"waiting: {TOOLS[:8]}")]
        assert len(waits) == 1 and "does not exist here" in waits[0], log
        assert not any(line.startswith("error") for line in log)
        from commuter.commands.status import collect

        data = await asyncio.to_thread(collect, world.b)
        [item] = [p for p in data["pending"] if p["session_id"] == TOOLS]
        assert item["transport"] == "folder" and item["sender"] == "alice"
        assert "does not exist here" in item["waiting"]
        assert str(world.project_a) == item["project"]
        config.set_value(
            world.b, "path-map", (str(world.a.home / "projects"), str(world.b.home / "code"))
        )
        for w in db.state.waiting().values():
            db.state.wait(
                w.key, w.transport, w.sender, w.session, w.project, w.size, w.reason, delay=0
            )
        await rounds(db, 1, send=False)
        db.state.close()
        assert transcript(world.b.home, world.project_b, TOOLS).is_file()
        assert any(line.startswith(f"imported {TOOLS[:8]}") for line in log)

    asyncio.run(go())


def test_an_update_of_a_session_held_here_waits_until_the_agent_lets_go(world, tmp_path):
    async def go() -> None:
        da, _ = daemon(world.a)
        db, log = daemon(world.b)
        await rounds(da, 1, receive=False)
        await rounds(db, 1, send=False)
        at_b = transcript(world.b.home, world.project_b, TOOLS)
        before = at_b.read_bytes()
        append(transcript(world.a.home, world.project_a, TOOLS), 3)
        await rounds(da, 1, receive=False)
        holder = Holder(tmp_path, at_b)
        try:
            await rounds(db, 1)  # the send round lists B's sessions: it knows who holds what
            assert at_b.read_bytes() == before
            [wait] = [line for line in log if line.startswith(f"waiting: {TOOLS[:8]}")]
            assert "held by a local agent" in wait
        finally:
            holder.stop()
        for w in db.state.waiting().values():
            db.state.wait(
                w.key, w.transport, w.sender, w.session, w.project, w.size, w.reason, delay=0
            )
        await rounds(db, 1, send=False)
        da.state.close()
        db.state.close()
        assert at_b.read_bytes().startswith(before) and len(at_b.read_bytes()) > len(before)
        assert any(line.startswith(f"imported {TOOLS[:8]}") and "updated" in line for line in log)

    asyncio.run(go())


def test_state_survives_reopening(tmp_path):
    state = SyncState(tmp_path / "s.sqlite")
    state.mark_sent("peer1", "claude", "sid", "10-1", "lan")
    state.queue("peer2", "claude", "sid", "10-1", "away")
    state.close()
    again = SyncState(tmp_path / "s.sqlite")
    assert again.sent_versions("peer1") == {("claude", "sid"): "10-1"}
    assert [q.reason for q in again.queued().values()] == ["away"]
    again.close()


def test_a_peer_that_vanishes_mid_transfer_leaves_the_session_queued(world):
    """bob's daemon answers /v1/info, takes the first bytes of the upload, then drops the
    connection: the send is queued with backoff, the daemon goes on, nothing is recorded."""
    from aiohttp import web
    from transhelp import BOB

    from commuter.peer.peers import Peers

    config.unset_value(world.a, "transfer-dir")

    async def info(_request: web.Request) -> web.Response:
        return web.json_response({"name": "bob", "device_id": BOB.device_id, "protocol": 1})

    async def bundles(request: web.Request) -> web.Response:
        await request.content.read(4096)
        assert request.transport is not None
        request.transport.close()  # gone mid-transfer
        return web.Response(status=500)

    async def go() -> None:
        app = web.Application()
        app.router.add_get("/v1/info", info)
        app.router.add_post("/v1/bundles", bundles)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            peers = Peers.load(world.a)
            peers.touch_address(BOB.public_key, f"127.0.0.1:{port}")
            peers.save()
            da, log = daemon(world.a)
            await rounds(da, 1, receive=False)
            queued = [q for q in da.state.queued().values() if q.session == TOOLS]
            assert len(queued) == 1 and queued[0].attempts == 1, log
            assert "the connection closed before an answer" in queued[0].reason
            assert da.state.sent_versions(queued[0].peer) == {}
            assert not any(line.startswith(("sent ", "error")) for line in log), log
            await rounds(da, 1, receive=False)  # not due: no new attempt, still running
            assert da.state.queued()[(queued[0].peer, "claude", TOOLS)].attempts == 1
            da.state.close()
        finally:
            await runner.cleanup()

    asyncio.run(go())


def test_an_increment_the_peer_cannot_apply_is_refused_and_sent_whole(world):
    """Over the LAN to a real `serve --sync` at B: B's copy no longer starts with what its
    last import wrote, so the delta is refused while A waits (409) and A sends it whole."""
    from peerhelp import ServeProcess
    from transhelp import BOB, env_for

    from commuter.peer.peers import Peers

    config.unset_value(world.a, "transfer-dir")
    config.unset_value(world.b, "transfer-dir")
    office = ServeProcess(env_for(world.b.home), "--sync", "--quiet", "3600")
    try:
        peers = Peers.load(world.a)
        peers.touch_address(BOB.public_key, office.address)
        peers.save()

        async def go() -> list[str]:
            da, log = daemon(world.a)
            await rounds(da, 1, receive=False)
            at_b = transcript(world.b.home, world.project_b, TOOLS)
            assert at_b.is_file(), log
            lines = at_b.read_bytes().splitlines(keepends=True)
            at_b.write_bytes(b"".join(lines[:-1]))  # B's copy changed under commuter
            append(transcript(world.a.home, world.project_a, TOOLS), 2)
            await rounds(da, 1, receive=False)
            da.state.close()
            return log

        log = asyncio.run(go())
    finally:
        code, out, err = office.stop()
    assert code == 0, err
    [first, second] = [line for line in log if line.startswith(f"sent {TOOLS[:8]}")]
    assert "via lan: whole session" in first
    assert "whole session (it refused the increment)" in second, log
    assert "dropped a delta from alice via lan" in out, out
    assert f"imported {TOOLS[:8]}" in out
