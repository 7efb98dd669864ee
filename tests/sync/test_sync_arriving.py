"""The sync daemon takes a LAN upload as it arrives (SyncDaemon.on_upload): imported with no
inbox entry, remembered as the sender's version (no echo); one it cannot import now (a local
agent holds the session) waits in the inbox under the id the sender was told."""

from __future__ import annotations

import pytest
from claude_home import TOOLS, transcript
from peerhelp import ALICE, BOB, inbox_files
from synchelp import daemon
from test_sync_daemon import Holder
from transhelp import make_world, say

from commuter import core
from commuter.peer import client
from commuter.peer.inbox import Inbox
from commuter.peer.peers import Peers
from commuter.peer.server import make_app


@pytest.fixture
def world(tmp_path):
    return make_world(tmp_path)


async def test_an_upload_is_imported_as_it_arrives_and_a_held_one_waits(
    world, aiohttp_server, tmp_path
):
    db, log_b = daemon(world.b)
    stored: list[str] = []

    async def on_received(item, peer):
        stored.append(item.id)
        return await db.on_received(item, peer)

    app = make_app(
        world.b,
        BOB,
        Peers.load(world.b),
        name="bob",
        on_received=on_received,
        on_upload=db.on_upload,
        log=log_b.append,
    )
    server = await aiohttp_server(app)
    address = f"127.0.0.1:{server.port}"
    bob = Peers.load(world.a).by_key(BOB.public_key)
    assert bob is not None

    async def send() -> dict[str, str]:
        ref = core.find_session(world.a, TOOLS)
        answer, _ = await client.send_export(
            world.a, ALICE, bob, lambda fh: core.export_session(world.a, fh, ref), address
        )
        return answer

    try:
        first = await send()
        assert first["status"] == "imported"
        assert stored == []  # not by way of the inbox
        here = transcript(world.b.home, world.project_b, TOOLS)
        assert here.is_file()
        assert [n for n in inbox_files(world.b) if not n.startswith(".")] == []
        assert any(
            line.startswith(f"imported {TOOLS[:8]}") and "from alice via lan: created" in line
            for line in log_b
        ), log_b
        assert ("claude", TOOLS) in db.state.sent_versions(ALICE.device_id)  # no echo back

        say(transcript(world.a.home, world.project_a, TOOLS), "one more thing")
        holder = Holder(tmp_path, here)  # B's agent has the session open
        try:
            second = await send()
        finally:
            holder.stop()
        assert second["status"] == "queued"
        assert stored == [second["id"]]
        [waiting] = Inbox(world.b).pending()
        assert waiting.id == second["id"]
        assert "one more thing" not in here.read_text()
        assert any("waiting:" in line and "held by a local agent" in line for line in log_b)
    finally:
        db.state.close()
