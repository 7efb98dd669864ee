"""How many bytes a relay serves for the label of a waiting item (`status`, `pull --dry-run`),
counted on the wire by a TCP proxy in front of a real relay app on loopback: a seal with the
usual 1 MiB first frame costs its header and exactly that frame; one sealed by
`seal_labelled` (a short first frame) costs one read of FIRST_READ bytes; both are labelled,
and neither is downloaded."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from pathlib import Path

import pytest
from aiohttp import web
from claude_home import TOOLS, transcript
from transhelp import ALICE, BOB, context, make_world

from commuter import config, core
from commuter.peer import seal
from commuter.relay.app import make_relay_app
from commuter.sync.label import FIRST_READ, label_of, seal_labelled
from commuter.transports.relay import RelayTransport

HTTP = 2048  # response headers and the like, per label read


class CountingProxy:
    """127.0.0.1:port -> the relay; counts the bytes that come back from it."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.down = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, count: bool):
            try:
                while data := await src.read(1 << 16):
                    if count:
                        self.down += len(data)
                    dst.write(data)
                    await dst.drain()
            except ConnectionError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_w, False), pipe(up_r, writer, True))

    async def close(self) -> None:
        self.server.close()
        await self.server.wait_closed()


def grow(path: Path, mb: float) -> None:
    """Append user messages of random text until the transcript has grown by `mb` MiB."""
    last = [json.loads(line) for line in path.read_text().splitlines() if '"uuid"' in line][-1]
    target = path.stat().st_size + int(mb * (1 << 20))
    with path.open("a") as fh:
        while fh.tell() < target:
            entry = {**last, "type": "user", "uuid": str(uuid.uuid4())}
            entry["parentUuid"] = last["uuid"]
            entry["message"] = {"role": "user", "content": os.urandom(1500).hex()}
            fh.write(json.dumps(entry, separators=(",", ":")) + "\n")
            last = entry
    old = time.time() - 3600
    os.utime(path, (old, old))


@pytest.fixture
def world(tmp_path):
    return make_world(tmp_path)


def test_a_relay_serves_only_the_header_and_first_frame_for_a_label(world, tmp_path):
    grow(transcript(world.a.home, world.project_a, TOOLS), 5)
    bundle = tmp_path / "b.commuter"
    with bundle.open("wb") as fh:
        core.export_to(world.a, fh, session=TOOLS, cwd=world.project_a)
    usual, short = tmp_path / "usual.sealed", tmp_path / "short.sealed"
    seal.seal_file(bundle, usual, ALICE, [BOB.public_key])
    seal_labelled(bundle, short, ALICE, [BOB.public_key])
    assert usual.stat().st_size > 2 * (1 << 20)

    async def go() -> dict[str, int]:
        runner = web.AppRunner(make_relay_app(tmp_path / "relay"), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        proxy = CountingProxy(runner.addresses[0][1])
        port = await proxy.start()
        for s in (world.a, world.b):
            config.set_value(s, "relay", (f"http://127.0.0.1:{port}",))
        served: dict[str, int] = {}
        try:
            ctx_a = context(world.a)
            async with RelayTransport(ctx_a) as relay:
                for sealed in (usual, short):
                    await relay.send(sealed, [ctx_a.peers.get("bob")])
            ctx_b = context(world.b)
            async with RelayTransport(ctx_b) as relay:
                items = await relay.pending()
                assert sorted(i.size for i in items) == sorted(
                    p.stat().st_size for p in (usual, short)
                )
                for item in items:
                    name = "usual" if item.size == usual.stat().st_size else "short"
                    before = proxy.down
                    label = await label_of(ctx_b, relay, item)
                    served[name] = proxy.down - before
                    assert label is not None and label.session_id == TOOLS, name
                    assert label.project == str(world.project_a) and label.agent == "claude"
                assert len(await relay.pending()) == 2  # nothing was taken
        finally:
            await proxy.close()
            await runner.cleanup()
        return served

    served = asyncio.run(go())
    header = len(seal.MAGIC) + 4 + seal.header_size(usual.read_bytes()[: len(seal.MAGIC) + 4])
    first_frame = header + 64 + seal.FRAME_OVERHEAD + seal.CHUNK
    assert first_frame <= served["usual"] <= first_frame + HTTP, served
    assert served["short"] <= FIRST_READ + HTTP, served  # about 7 % of the usual seal's


def test_a_relay_that_ignores_range_still_gives_the_label_without_a_download(world, tmp_path):
    grow(transcript(world.a.home, world.project_a, TOOLS), 5)
    bundle = tmp_path / "b.commuter"
    with bundle.open("wb") as fh:
        core.export_to(world.a, fh, session=TOOLS, cwd=world.project_a)
    usual = tmp_path / "usual.sealed"
    seal.seal_file(bundle, usual, ALICE, [BOB.public_key])

    stripped: list[str] = []

    @web.middleware
    async def no_range(request: web.Request, handler):
        headers = request.headers.copy()
        if "Range" in headers:
            stripped.append(headers.pop("Range"))
        response = await handler(request.clone(headers=headers))
        assert "Range" not in headers and response.status in (200, 201, 204)
        return response

    async def go() -> None:
        app = make_relay_app(tmp_path / "relay")
        app.middlewares.append(no_range)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        for s in (world.a, world.b):
            config.set_value(s, "relay", (f"http://127.0.0.1:{runner.addresses[0][1]}",))
        try:
            ctx_a = context(world.a)
            async with RelayTransport(ctx_a) as relay:
                await relay.send(usual, [ctx_a.peers.get("bob")])
            ctx_b = context(world.b)
            async with RelayTransport(ctx_b) as relay:
                [item] = await relay.pending()
                label = await label_of(ctx_b, relay, item)
                assert label is not None and label.session_id == TOOLS
                assert await relay.peek(item, 10, offset=20) == usual.read_bytes()[20:30]
                assert len(await relay.pending()) == 1
        finally:
            await runner.cleanup()

    asyncio.run(go())
    assert len(stripped) >= 3, stripped  # the label took two reads, each answered whole


def test_what_the_daemon_sends_through_the_relay_is_labelled_from_one_short_read(world, tmp_path):
    from synchelp import daemon

    grow(transcript(world.a.home, world.project_a, TOOLS), 5)
    config.unset_value(world.a, "transfer-dir")

    async def go() -> tuple[int, int]:
        runner = web.AppRunner(make_relay_app(tmp_path / "relay"), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        proxy = CountingProxy(runner.addresses[0][1])
        port = await proxy.start()
        for s in (world.a, world.b):
            config.set_value(s, "relay", (f"http://127.0.0.1:{port}",))
        da, log = daemon(world.a)
        try:
            await da._send_round()
            assert any(f"sent {TOOLS[:8]}" in x and "via relay" in x for x in log), log
            ctx_b = context(world.b)
            async with RelayTransport(ctx_b) as relay:
                items = await relay.pending()
                sizes = {}
                for item in items:
                    before = proxy.down
                    label = await label_of(ctx_b, relay, item)
                    assert label is not None
                    sizes[label.session_id] = (item.size, proxy.down - before)
        finally:
            da.state.close()
            await proxy.close()
            await runner.cleanup()
        return sizes[TOOLS]

    size, served = asyncio.run(go())
    assert size > 2 * (1 << 20) and served <= FIRST_READ + HTTP, (size, served)
