"""`push --to PEER` over the LAN streams: the export goes into the sealed upload as it is made
(chunked, no Content-Length) and no bundle file is written on the sending side; a LAN that does
not answer in auto mode falls back to the relay, which gets a temp bundle as before."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.typedefs import Handler
from claude_home import TOOLS, transcript
from transhelp import BOB, context, make_world

from commuter import config
from commuter.core import ImportOptions
from commuter.errors import PeerUnreachable
from commuter.peer.inbox import Inbox
from commuter.peer.peers import Peers
from commuter.peer.server import make_app
from commuter.pipeline import pull_all, push_session
from commuter.relay.app import make_relay_app
from commuter.transports import Transport, TransportContext, create
from commuter.transports.lan import LanTransport


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


async def test_a_push_over_the_lan_streams_and_writes_no_bundle_file(tmp_path, aiohttp_server):
    world = make_world(tmp_path)
    seen: list[dict[str, Any]] = []

    @web.middleware
    async def watch(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path != "/v1/bundles":
            return await handler(request)
        answer = await handler(request)  # the whole body is in: the sender's export is done
        seen.append(
            {
                "length": request.headers.get("Content-Length"),
                "received": request.content.total_bytes,
                "sender_files": list(world.a.staging_dir.rglob("*")),
            }
        )
        return answer

    app = make_app(world.b, BOB, Peers.load(world.b), name="bob")
    app.middlewares.insert(0, watch)
    server = await aiohttp_server(app)
    ctx = context(world.a)

    def lan(_name: str, c: TransportContext) -> Transport:
        return LanTransport(c, address=f"127.0.0.1:{server.port}")

    pushed = await push_session(ctx, TOOLS, [ctx.peers.get("bob")], "lan", named=True, factory=lan)
    assert pushed.receipt.transport == "lan" and pushed.receipt.statuses == ("stored",)
    assert pushed.confirmed == (BOB.device_id,) and not pushed.delta
    [upload] = seen
    assert upload["length"] is None and upload["received"] > 0
    assert upload["sender_files"] == []  # no bundle, no temp dir
    assert pushed.receipt.size > 0
    [item] = Inbox(world.b).pending()
    assert item.size == upload["received"]
    assert Peers.load(world.a).get("bob").last_address == f"127.0.0.1:{server.port}"


async def test_auto_falls_back_to_the_relay_when_the_lan_does_not_answer(
    tmp_path, aiohttp_server, unused_tcp_port
):
    world = make_world(tmp_path)
    relay = await aiohttp_server(make_relay_app(tmp_path / "relay"))
    for s in (world.a, world.b):
        config.set_value(s, "relay", (f"http://127.0.0.1:{relay.port}",))
    ctx = context(world.a)

    def factory(name: str, c: TransportContext) -> Transport:
        if name == "lan":
            return LanTransport(c, address=f"127.0.0.1:{unused_tcp_port}", probe_timeout=0.5)
        return create(name, c)

    pushed = await push_session(
        ctx, TOOLS, [ctx.peers.get("bob")], "auto", named=True, factory=factory
    )
    assert pushed.receipt.transport == "relay"
    assert any(s.startswith("lan:") for s in pushed.skipped)
    assert pushed.confirmed == (BOB.device_id,)
    assert _files(world.a.staging_dir) == []  # the temp bundle is gone
    [done] = await pull_all(context(world.b), ImportOptions(), warn=print)
    assert done.result is not None and done.result.session_id == TOOLS
    assert transcript(world.b.home, world.project_b, TOOLS).is_file()


async def test_lan_only_to_a_peer_that_does_not_answer_is_peer_unreachable(
    tmp_path, unused_tcp_port
):
    world = make_world(tmp_path)
    ctx = context(world.a)

    def lan(_name: str, c: TransportContext) -> Transport:
        return LanTransport(c, address=f"127.0.0.1:{unused_tcp_port}", probe_timeout=0.5)

    with pytest.raises(PeerUnreachable):
        await push_session(ctx, TOOLS, [ctx.peers.get("bob")], "lan", named=True, factory=lan)
    assert _files(world.a.staging_dir) == []
