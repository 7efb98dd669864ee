"""`push` through the relay seals with a short first frame, as the sync daemon does: the
peer's `status` labels the item from one short read (counted on the wire by a TCP proxy in
front of a real relay app on loopback), not from a whole 1 MiB first frame."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from claude_home import TOOLS, transcript
from test_label_bytes import HTTP, CountingProxy, grow
from transhelp import context, make_world

from commuter import config
from commuter.pipeline import push_session
from commuter.relay.app import make_relay_app
from commuter.sync.label import FIRST_READ, label_of
from commuter.transports.relay import RelayTransport


@pytest.fixture
def world(tmp_path):
    return make_world(tmp_path)


def test_a_push_through_the_relay_is_labelled_from_one_short_read(world, tmp_path):
    grow(transcript(world.a.home, world.project_a, TOOLS), 5)

    async def go() -> tuple[int, int]:
        runner = web.AppRunner(make_relay_app(tmp_path / "relay"), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        proxy = CountingProxy(runner.addresses[0][1])
        port = await proxy.start()
        for s in (world.a, world.b):
            config.set_value(s, "relay", (f"http://127.0.0.1:{port}",))
        try:
            ctx_a = context(world.a)
            pushed = await push_session(ctx_a, TOOLS, [ctx_a.peers.get("bob")], "relay", named=True)
            assert pushed.receipt.transport == "relay"
            ctx_b = context(world.b)
            async with RelayTransport(ctx_b) as relay:
                [item] = await relay.pending()
                before = proxy.down
                label = await label_of(ctx_b, relay, item)
                assert label is not None and label.session_id == TOOLS
                return item.size, proxy.down - before
        finally:
            await proxy.close()
            await runner.cleanup()

    size, served = asyncio.run(go())
    assert size > 2 * (1 << 20) and served <= FIRST_READ + HTTP, (size, served)
