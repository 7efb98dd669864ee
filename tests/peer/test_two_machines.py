"""Two fake machines on loopback: send a real session A -> B's inbox -> import; pull --from."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import time
from pathlib import Path

import pytest
from claude_home import TOOLS, install, transcript
from peerhelp import ALICE, BOB, EVE, inbox_files, machine, signed_get, trust

from commuter import config, core
from commuter.errors import NotPaired, PeerUnreachable, SessionNotFound
from commuter.peer import client, seal
from commuter.peer.inbox import Inbox
from commuter.peer.peers import Peer, Peers
from commuter.peer.server import make_app, serve


@pytest.fixture
def world(tmp_path: Path):
    a_home = install(tmp_path / "A")
    sa = machine(a_home)
    sb = machine(tmp_path / "B")
    (sb.home / "code" / "my.app").mkdir(parents=True)
    for s in (sa, sb):
        config.set_value(s, "path-map", (str(a_home / "projects"), str(sb.home / "code")))
    trust(sa, "bob", BOB)
    trust(sb, "alice", ALICE)
    return sa, sb


def _export(settings, tmp: Path, session: str) -> Path:
    out = tmp / f"{session}.bundle"
    with out.open("wb") as fh:
        core.export_to(settings, fh, session=session)
    return out


async def test_send_lands_in_inbox_and_imports(aiohttp_server, world, tmp_path):
    sa, sb = world
    server = await aiohttp_server(make_app(sb, BOB, Peers.load(sb), name="bob"))
    address = f"127.0.0.1:{server.port}"
    bundle = await asyncio.to_thread(_export, sa, tmp_path, TOOLS)
    bob = Peers.load(sa).get("bob")
    answer = await client.send_file(sa, ALICE, bob, bundle, address)
    assert answer["status"] == "stored"
    assert Peers.load(sa).get("bob").last_address == address
    [item] = Inbox(sb).pending()
    assert item.sender_name == "alice"
    plain = Inbox(sb).open(item, BOB, Peers.load(sb), tmp_path / "opened")
    result = await asyncio.to_thread(
        core.import_file, sb, plain, core.ImportOptions(origin=item.origin)
    )
    assert result.session_id == TOOLS
    assert result.project_dir == sb.home / "code" / "my.app"
    assert transcript(sb.home, sb.home / "code" / "my.app", TOOLS).is_file()


async def test_unpaired_machine_is_refused_and_nothing_is_kept(aiohttp_server, world, tmp_path):
    sa, sb = world
    server = await aiohttp_server(make_app(sb, BOB, Peers.load(sb)))
    bundle = await asyncio.to_thread(_export, sa, tmp_path, TOOLS)
    bob = Peers.load(sa).get("bob")
    with pytest.raises(NotPaired):
        await client.send_file(sa, EVE, bob, bundle, f"127.0.0.1:{server.port}")
    assert inbox_files(sb) == []


async def test_big_send_is_sealed_on_the_fly_and_arrives_whole(aiohttp_server, world, tmp_path):
    sa, sb = world
    server = await aiohttp_server(make_app(sb, BOB, Peers.load(sb), name="bob"))
    payload = tmp_path / "big.bundle"
    payload.write_bytes(os.urandom(3 * seal.CHUNK + 12345))
    seen: list[int] = []
    bob = Peers.load(sa).get("bob")
    await client.send_file(sa, ALICE, bob, payload, f"127.0.0.1:{server.port}", seen.append)
    assert sum(seen) == payload.stat().st_size and len(seen) == 4
    assert not sa.staging_root.exists()  # nothing was sealed to disk on the way
    [item] = Inbox(sb).pending()
    opened = Inbox(sb).open(item, BOB, Peers.load(sb), tmp_path / "opened")
    assert opened.read_bytes() == payload.read_bytes()


async def test_big_send_from_an_unpaired_machine_gets_the_refusal(aiohttp_server, world, tmp_path):
    sa, sb = world
    server = await aiohttp_server(make_app(sb, BOB, Peers.load(sb), name="bob"))
    payload = tmp_path / "big.bundle"
    payload.write_bytes(os.urandom(8 * seal.CHUNK))
    bob = Peers.load(sa).get("bob")
    with pytest.raises(NotPaired, match="not paired"):
        await client.send_file(sa, EVE, bob, payload, f"127.0.0.1:{server.port}")
    assert inbox_files(sb) == []


async def test_unreachable_peer_fails_fast(world, tmp_path, unused_tcp_port):
    sa, _sb = world
    bob = Peers.load(sa).get("bob")
    payload = tmp_path / "x"
    payload.write_bytes(b"x" * 100)
    started = time.monotonic()
    with pytest.raises(PeerUnreachable, match="bob is unreachable"):
        await client.send_file(sa, ALICE, bob, payload, f"127.0.0.1:{unused_tcp_port}")
    assert time.monotonic() - started < sa.connect_timeout + 2


async def test_find_address_prefers_explicit_then_last_known(world):
    sa, _sb = world
    peers = Peers.load(sa)
    peers.touch_address(BOB.public_key, "127.0.0.1:1234")
    peers.save()
    bob = Peers.load(sa).get("bob")
    fast = dataclasses.replace(sa, mdns_timeout=0.3)
    assert await client.find_address(fast, bob, "10.1.2.3:9") == "10.1.2.3:9"
    assert await client.find_address(fast, bob) == "127.0.0.1:1234"
    stranger = Peer.new("nobody", EVE.public_key)
    with pytest.raises(PeerUnreachable, match="--address"):
        await client.find_address(fast, stranger)


async def test_fetch_latest_downloads_the_peers_session_for_this_project(
    aiohttp_server, world, tmp_path
):
    sa, sb = world
    server = await aiohttp_server(make_app(sa, ALICE, Peers.load(sa), name="alice"))
    alice = Peers.load(sb).get("alice")
    cwd = sb.home / "code" / "my.app"
    fetched = await client.fetch_latest(
        sb, alice, cwd, address=f"127.0.0.1:{server.port}", identity=BOB
    )
    with fetched:
        manifest = await asyncio.to_thread(core.read_manifest, fetched.path)
    assert not fetched.dir.exists()
    assert manifest.session_id in {r.session_id for r in core.list_sessions(sa)}
    assert Path(manifest.project_dir).name == "my.app"
    with pytest.raises(SessionNotFound):
        await client.fetch_latest(
            sb, alice, tmp_path / "elsewhere", address=f"127.0.0.1:{server.port}", identity=BOB
        )


async def test_list_and_fetch_refuse_unpaired_requesters(aiohttp_server, world, tmp_path):
    sa, _sb = world
    server = await aiohttp_server(make_app(sa, ALICE, Peers.load(sa)))
    alice_as_seen_by_eve = Peer.new("alice", ALICE.public_key)
    eve_settings = machine(tmp_path / "E")
    address = f"127.0.0.1:{server.port}"
    async with client.PeerClient(eve_settings, EVE, alice_as_seen_by_eve, address) as c:
        with pytest.raises(NotPaired):
            await c.list_sessions()
        with pytest.raises(NotPaired):
            await c.fetch(TOOLS, tmp_path / "stolen")
    assert not (tmp_path / "stolen").exists()


@pytest.mark.mdns
async def test_serve_advertises_and_send_finds_it_by_mdns(world, tmp_path, unused_tcp_port):
    sa, sb = world
    stop = asyncio.Event()
    got = []

    async def on_received(item, peer):
        got.append((item, peer))

    task = asyncio.create_task(
        serve(
            sb,
            BOB,
            name="bob",
            host="127.0.0.1",
            port=unused_tcp_port,
            on_received=on_received,
            stop=stop,
            run_for=30,
        )
    )
    try:
        bob = Peers.load(sa).get("bob")
        address = None
        for _ in range(20):
            from commuter.peer.discovery import resolve

            address = await resolve(sa, bob, 1.0)
            if address:
                break
        assert address == f"127.0.0.1:{unused_tcp_port}"
        bundle = await asyncio.to_thread(_export, sa, tmp_path, TOOLS)
        answer = await client.send_file(sa, ALICE, bob, bundle, await client.find_address(sa, bob))
        assert answer["status"] == "stored"
        assert got and got[0][1].name == "alice"
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)


def _typed_texts(home: Path) -> set[str]:
    """Every user prompt and assistant text of every transcript under `home` (≥ 8 chars)."""
    texts: set[str] = set()
    for path in (home / ".claude" / "projects").rglob("*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                message = json.loads(line).get("message") or {}
            except (ValueError, AttributeError):
                continue
            content = message.get("content") if isinstance(message, dict) else None
            blocks = [content] if isinstance(content, str) else content or []
            for block in blocks:
                text = block if isinstance(block, str) else block.get("text")
                if isinstance(text, str) and len(text.strip()) >= 8:
                    texts.add(text.strip())
    return texts


async def test_session_listing_carries_no_conversation_text(aiohttp_client, world):
    sa, _sb = world
    http = await aiohttp_client(make_app(sa, ALICE, Peers.load(sa), name="alice"))
    path = "/v1/sessions"
    resp = await http.get(path, headers=signed_get(BOB, path, to=ALICE))
    assert resp.status == 200
    listing = (await resp.json())["sessions"]
    assert listing, "the fixture home has sessions"
    assert {key for entry in listing for key in entry} == {
        "id",
        "backend",
        "project",
        "updated_at",
        "size",
    }
    shown = json.dumps(listing, ensure_ascii=False)
    prompts = {r.first_prompt for r in core.list_sessions(sa) if r.first_prompt}
    texts = _typed_texts(sa.home) | prompts
    assert prompts and len(texts) > len(prompts)
    leaked = sorted(t for t in texts if t in shown or t[:40] in shown)
    assert leaked == []


async def _silent_server(read_headers_only: bool = False):
    """A TCP server on 127.0.0.1 that accepts and never answers (nor reads past the headers,
    if asked: its socket buffers then fill up under a big upload)."""
    held: list[asyncio.StreamWriter] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        if read_headers_only:
            await reader.readuntil(b"\r\n\r\n")
            return
        while await reader.read(1 << 16):
            pass

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    return server, held, f"127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def _close(server, held) -> None:
    for writer in held:
        writer.close()
    server.close()
    await asyncio.wait_for(server.wait_closed(), 5)


async def test_send_to_a_peer_that_never_answers_fails_fast(world, tmp_path):
    sa, _sb = world
    server, held, address = await _silent_server()
    try:
        bob = Peers.load(sa).get("bob")
        payload = tmp_path / "x"
        payload.write_bytes(b"x" * 100)
        started = time.monotonic()
        with pytest.raises(PeerUnreachable, match=r"bob at 127\.0\.0\.1:\d+ did not answer"):
            await asyncio.wait_for(client.send_file(sa, ALICE, bob, payload, address), 30)
        assert time.monotonic() - started < sa.reply_timeout + 3
        assert held, "the client did connect"
    finally:
        await _close(server, held)


async def test_upload_to_a_peer_that_stops_reading_fails_after_the_stall_bound(world, tmp_path):
    sa, _sb = world
    quick = dataclasses.replace(sa, stall_timeout=1.0)
    server, held, address = await _silent_server(read_headers_only=True)
    try:
        bob = Peers.load(sa).get("bob")
        payload = tmp_path / "big"
        with payload.open("wb") as fh:
            for _ in range(48):  # more than the loopback socket buffers hold
                fh.write(os.urandom(1 << 20))
        started = time.monotonic()
        async with client.PeerClient(quick, ALICE, bob, address) as c:
            with pytest.raises(PeerUnreachable, match=r"bob at 127\.0\.0\.1:\d+ stalled"):
                await asyncio.wait_for(c.upload_sealing(payload), 30)
        assert time.monotonic() - started < 10
    finally:
        await _close(server, held)


def _remembered(settings, identity, address: str) -> Peer:
    peers = Peers.load(settings)
    peers.touch_address(identity.public_key, address)
    peers.save()
    peer = peers.by_key(identity.public_key)
    assert peer is not None
    return peer


@pytest.mark.mdns
async def test_send_falls_back_to_the_last_address_when_the_mdns_one_fails(
    aiohttp_server, world, tmp_path, unused_tcp_port
):
    from commuter.peer.discovery import advertise_peer

    sa, sb = world
    server = await aiohttp_server(make_app(sb, BOB, Peers.load(sb), name="bob"))
    real = f"127.0.0.1:{server.port}"
    bob = _remembered(sa, BOB, real)
    bundle = await asyncio.to_thread(_export, sa, tmp_path, TOOLS)
    stale = f"127.0.0.1:{unused_tcp_port}"  # an advert nothing listens behind
    async with advertise_peer(sb, "bob", BOB.device_id, unused_tcp_port):
        candidates = await client.find_addresses(sa, bob)
        assert candidates == [stale, real]
        answer = await client.send_file(sa, ALICE, bob, bundle, candidates)
    assert answer["status"] == "stored"
    assert Peers.load(sa).get("bob").last_address == real
    assert len(Inbox(sb).pending()) == 1


@pytest.mark.mdns
async def test_pull_falls_back_to_the_last_address_when_the_mdns_one_fails(
    aiohttp_server, world, unused_tcp_port
):
    from commuter.peer.discovery import advertise_peer

    sa, sb = world
    server = await aiohttp_server(make_app(sa, ALICE, Peers.load(sa), name="alice"))
    alice = _remembered(sb, ALICE, f"127.0.0.1:{server.port}")
    async with advertise_peer(sa, "alice", ALICE.device_id, unused_tcp_port):
        fetched = await client.fetch_latest(sb, alice, sb.home / "code" / "my.app", identity=BOB)
    assert fetched.path.is_file()
    fetched.close()


async def test_with_an_explicit_address_there_is_no_fallback(world, unused_tcp_port):
    sa, _sb = world
    bob = _remembered(sa, BOB, "127.0.0.1:1")
    given = f"127.0.0.1:{unused_tcp_port}"
    assert await client.find_addresses(sa, bob, given) == [given]


async def test_when_no_candidate_answers_the_error_names_them_all(world, tmp_path):
    sa, _sb = world
    bob = Peers.load(sa).get("bob")
    payload = tmp_path / "x"
    payload.write_bytes(b"x")
    with pytest.raises(PeerUnreachable, match=r"127\.0\.0\.1:1 .*127\.0\.0\.1:2"):
        await client.send_file(sa, ALICE, bob, payload, ["127.0.0.1:1", "127.0.0.1:2"])
