"""Relay and LAN transports between two fake machines on loopback; auto selection; errors."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import pytest
from claude_home import TOOLS, transcript
from transhelp import ALICE, BOB, EVE, context, make_world

from commuter import config, core
from commuter.errors import PeerUnreachable, QuotaExceeded, RelayError, TooLarge, TransportError
from commuter.peer import auth, seal
from commuter.peer.inbox import Inbox
from commuter.peer.peers import Peers
from commuter.peer.server import make_app
from commuter.pipeline import pull_all, push_file
from commuter.relay.app import make_relay_app
from commuter.relay.quotas import Limits
from commuter.transports.relay import RelayTransport


@pytest.fixture
def world(tmp_path):
    return make_world(tmp_path)


def export(world, tmp: Path) -> Path:
    out = tmp / f"export-{os.urandom(3).hex()}.commuter"
    with out.open("wb") as fh:
        core.export_to(world.a, fh, session=TOOLS, cwd=world.project_a)
    return out


async def relay_for(aiohttp_server, world, tmp_path, limits: Limits | None = None):
    server = await aiohttp_server(make_relay_app(tmp_path / "relay", limits))
    url = f"http://127.0.0.1:{server.port}"
    for s in (world.a, world.b):
        config.set_value(s, "relay", (url,))
    return server


async def push(world, tmp_path, via="auto", **kw):
    ctx = context(world.a)
    bundle = await asyncio.to_thread(export, world, tmp_path)
    return await push_file(ctx, bundle, [ctx.peers.get("bob")], via, named=True, **kw)


async def pull(settings, **kw):
    warnings: list[str] = []
    done = await pull_all(context(settings), core.ImportOptions(**kw), warn=warnings.append)
    return done, warnings


def relay_files(tmp_path):
    return sorted(p.name for p in (tmp_path / "relay" / "mailboxes").rglob("*") if p.is_file())


async def test_auto_push_uses_the_relay_when_lan_is_down(aiohttp_server, world, tmp_path):
    await relay_for(aiohttp_server, world, tmp_path)
    pushed = await push(world, tmp_path)
    assert pushed.receipt.transport == "relay"
    assert any(s.startswith("lan:") for s in pushed.skipped)
    assert len(relay_files(tmp_path)) == 2
    for path in (tmp_path / "relay").rglob("*.sealed"):
        assert b"my.app" not in path.read_bytes()
    [done], warnings = await pull(world.b)
    assert done.result is not None and done.result.session_id == TOOLS, warnings
    assert done.item.transport == "relay"
    assert transcript(world.b.home, world.project_b, TOOLS).is_file()
    assert relay_files(tmp_path) == []  # deleted after the import


async def test_tampered_ciphertext_is_refused_not_imported_not_acked(
    aiohttp_server, world, tmp_path
):
    await relay_for(aiohttp_server, world, tmp_path)
    from commuter.sync.label import seal_labelled  # what push_file seals with by default

    def tampering_seal(src, dst, sender, recipients):
        seal_labelled(src, dst, sender, recipients)
        data = bytearray(dst.read_bytes())
        data[-50] ^= 0xFF
        dst.write_bytes(bytes(data))

    await push(world, tmp_path, via="relay", seal_with=tampering_seal)
    [failed], warnings = await pull(world.b)
    assert failed.result is None and "tampered" in (failed.error or "")
    assert any("will retry" in w for w in warnings)
    assert not transcript(world.b.home, world.project_b, TOOLS).exists()
    assert len(relay_files(tmp_path)) == 2  # not acknowledged


async def test_relay_down_is_a_clear_error(world, tmp_path, unused_tcp_port):
    for s in (world.a, world.b):
        config.set_value(s, "relay", (f"http://127.0.0.1:{unused_tcp_port}",))
    with pytest.raises(RelayError, match="unreachable"):
        await push(world, tmp_path, via="relay")
    with pytest.raises(RelayError, match="unreachable"):
        await pull_all(context(world.b), core.ImportOptions(), "relay", warn=lambda m: None)
    done, warnings = await pull(world.b)  # auto: warn and go on with the other transports
    assert done == [] and any("unreachable" in w for w in warnings)


async def test_relay_full_and_too_large_are_clear_errors(aiohttp_server, world, tmp_path):
    await relay_for(aiohttp_server, world, tmp_path, Limits(mailbox_items=1))
    await push(world, tmp_path, via="relay")
    with pytest.raises(QuotaExceeded, match="full"):
        await push(world, tmp_path, via="relay")
    await relay_for(aiohttp_server, world, tmp_path / "small", Limits(max_bundle=1000))
    with pytest.raises(TooLarge, match="at most"):
        await push(world, tmp_path, via="relay")


async def test_nothing_reachable_names_every_reason(world, tmp_path):
    config.unset_value(world.a, "transfer-dir")
    with pytest.raises(TransportError) as info:
        await push(world, tmp_path)
    text = str(info.value)
    assert "lan:" in text and "no relay is configured" in text and "transfer-dir" in text


async def test_auto_falls_back_to_the_folder(world, tmp_path):
    pushed = await push(world, tmp_path)
    assert pushed.receipt.transport == "folder"
    [done], _ = await pull(world.b)
    assert done.result is not None


async def test_lan_push_when_the_peer_answers_then_pull_from_inbox(aiohttp_server, world, tmp_path):
    server = await aiohttp_server(make_app(world.b, BOB, Peers.load(world.b), name="bob"))
    peers = Peers.load(world.a)
    peers.touch_address(BOB.public_key, f"127.0.0.1:{server.port}")
    peers.save()
    pushed = await push(world, tmp_path)
    assert pushed.receipt.transport == "lan" and pushed.skipped == ()
    [item] = Inbox(world.b).pending()
    [done], _ = await pull(world.b)
    assert done.result is not None and done.item.transport == "lan"
    assert done.origin.startswith("alice (")
    assert Inbox(world.b).pending() == []
    assert item.sealed_path.exists() is False


async def test_explicit_lan_to_an_absent_peer_fails_fast(world, tmp_path, unused_tcp_port):
    peers = Peers.load(world.a)
    peers.touch_address(BOB.public_key, f"127.0.0.1:{unused_tcp_port}")
    peers.save()
    with pytest.raises(PeerUnreachable, match="bob"):
        await asyncio.wait_for(push(world, tmp_path, via="lan"), 20)


async def test_relay_transport_needs_a_configured_url(world):
    transport = RelayTransport(context(world.a))
    assert (await transport.reachable(None) or "").startswith("no relay is configured")


async def test_pull_deletes_a_strangers_relay_item_and_imports_the_peers(
    aiohttp_server, world, tmp_path
):
    # A stranger who knows bob's device id must not hold bob's mailbox quota until expiry.
    server = await relay_for(aiohttp_server, world, tmp_path)
    plain, stranger = tmp_path / "junk", tmp_path / "junk.sealed"
    plain.write_bytes(os.urandom(2000))
    seal.seal_file(plain, stranger, EVE, [BOB.public_key])
    body = stranger.read_bytes()
    path = f"/v1/mailbox/{BOB.device_id}"
    headers = auth.sign_headers(EVE, "POST", path, hashlib.sha256(body).hexdigest())
    url = f"http://127.0.0.1:{server.port}{path}"
    async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as r:
        assert r.status == 201
    await push(world, tmp_path, via="relay")
    assert len(relay_files(tmp_path)) == 4
    done, warnings = await pull(world.b, dry_run=True)
    assert len(done) == 1 and len(relay_files(tmp_path)) == 4
    assert any(f"unpaired device {EVE.device_id}; a pull would delete it" in w for w in warnings)
    [done], warnings = await pull(world.b)
    assert done.result is not None and done.origin.startswith("alice (")
    assert any(f"deleted, from unpaired device {EVE.device_id}" in w for w in warnings)
    assert relay_files(tmp_path) == []


@pytest.fixture
async def silent_port():
    """A TCP port on loopback that accepts connections and never says a word."""
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_a_relay_that_never_answers_fails_in_seconds(world, tmp_path, silent_port):
    for s in (world.a, world.b):
        config.set_value(s, "relay", (f"http://127.0.0.1:{silent_port}",))
    started = asyncio.get_running_loop().time()
    with pytest.raises(RelayError, match="did not answer"):
        await asyncio.wait_for(
            pull_all(context(world.b), core.ImportOptions(), "relay", warn=lambda m: None), 30
        )
    with pytest.raises(RelayError, match="did not answer"):
        await asyncio.wait_for(push(world, tmp_path, via="relay"), 30)
    assert asyncio.get_running_loop().time() - started < 15


async def test_a_relay_that_stops_taking_an_upload_fails_after_the_stall_bound(
    aiohttp_server, world, tmp_path
):
    from aiohttp import web

    async def health(request):
        return web.json_response(
            {"service": "commuter-relay", "status": "ok", "limits": {"max_bundle": 1 << 30}}
        )

    release = asyncio.Event()

    async def never_reads(request):
        await asyncio.wait_for(release.wait(), 60)
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/", health)
    app.router.add_post("/v1/mailbox/{box}", never_reads)
    server = await aiohttp_server(app)
    config.set_value(world.a, "relay", (f"http://127.0.0.1:{server.port}",))
    ctx = context(world.a)
    ctx = dataclasses.replace(ctx, settings=dataclasses.replace(ctx.settings, stall_timeout=1.0))
    big = tmp_path / "big.sealed"
    big.write_bytes(os.urandom(1 << 20) * 48)  # more than the loopback socket buffers hold
    started = asyncio.get_running_loop().time()
    async with RelayTransport(ctx) as relay:
        with pytest.raises(RelayError, match="took nothing of the upload for 1 s"):
            await asyncio.wait_for(relay.send(big, [ctx.peers.get("bob")]), 30)
    assert asyncio.get_running_loop().time() - started < 15
    release.set()


async def test_an_import_whose_ack_was_lost_is_acked_not_imported_again(
    aiohttp_server, world, tmp_path
):
    from commuter.transports.state import PullState

    await relay_for(aiohttp_server, world, tmp_path)
    await push(world, tmp_path, via="relay")
    async with RelayTransport(context(world.b)) as relay:
        [item] = await relay.pending()
    PullState.load(world.b).mark(item.digest, item.label)  # imported; the DELETE never arrived
    done, warnings = await pull(world.b)
    assert done == [] and warnings == []
    assert relay_files(tmp_path) == []  # the next pull finished the ack
    assert not transcript(world.b.home, world.project_b, TOOLS).exists()  # no second import


class FakeRelay:
    """A hostile relay on loopback: it lists what a test says and serves what it says."""

    def __init__(
        self, items: Sequence[object], bodies: dict[str, bytes], *, listing: bytes | None = None
    ) -> None:
        self.items, self.bodies, self.listing = items, bodies, listing
        self.requested: list[str] = []
        self.deleted: list[str] = []  # the ids a client acknowledged
        self.sent = 0  # bytes of item bodies written to a client

    def app(self):
        from aiohttp import web

        async def health(request):
            return web.json_response(
                {"service": "commuter-relay", "status": "ok", "limits": {"max_bundle": 1 << 30}}
            )

        async def listing(request):
            if self.listing is not None:
                return web.Response(body=self.listing, content_type="application/json")
            return web.json_response({"items": self.items})

        async def anything(request):
            self.requested.append(request.raw_path)
            if request.method == "DELETE":
                self.deleted.append(request.raw_path.rsplit("/", 1)[-1])
                return web.json_response({"deleted": request.raw_path.rsplit("/", 1)[-1]})
            body = self.bodies.get(request.raw_path.rsplit("/", 1)[-1], b"ATTACKER BYTES\n")
            resp = web.StreamResponse()
            await resp.prepare(request)
            for i in range(0, len(body), 1 << 20):
                await resp.write(body[i : i + (1 << 20)])
                self.sent += len(body[i : i + (1 << 20)])
            await resp.write_eof()
            return resp

        app = web.Application()
        app.router.add_get("/", health)
        app.router.add_get(f"/v1/mailbox/{BOB.device_id}", listing)
        app.router.add_route("*", "/{tail:.*}", anything)
        return app


def listed(item_id: str, body: bytes, sender: str, size: int | None = None) -> dict[str, object]:
    return {
        "id": item_id,
        "mailbox": BOB.device_id,
        "sender": sender,
        "size": len(body) if size is None else size,
        "digest": hashlib.sha256(body).hexdigest(),
        "created_at": 0,
        "expires_at": 0,
    }


async def fake_relay(aiohttp_server, world, relay: FakeRelay):
    server = await aiohttp_server(relay.app())
    config.set_value(world.b, "relay", (f"http://127.0.0.1:{server.port}",))
    return server


def sealed_export(world, tmp_path) -> bytes:
    out = tmp_path / "good.sealed"
    seal.seal_file(export(world, tmp_path), out, ALICE, [BOB.public_key])
    return out.read_bytes()


async def test_listed_ids_never_become_paths_and_bad_items_stop_no_good_one(
    aiohttp_server, world, tmp_path
):
    # Old pulls wrote `<staging>/<id>.sealed`: an id `../…` or `/abs/…` from the relay put
    # its bytes anywhere (here: over an existing drop) and the pull exited 0.
    victim = tmp_path / "victim" / "drop.sealed"
    victim.parent.mkdir()
    victim.write_bytes(b"original")
    escaped = world.b.data_dir / "escaped.sealed"
    good = sealed_export(world, tmp_path)
    good_id = "1700000000-0123456789abcdef"
    items = [
        listed(str(victim.with_suffix("")), b"x", ALICE.device_id),
        listed("../../escaped", b"x", ALICE.device_id),
        listed("1700000000-00000000000000a%2F..", b"x", ALICE.device_id),
        listed("1700000000-0000000000000001", b"x", "not/a device"),
        listed("1700000000-0000000000000002", b"x", ALICE.device_id, size=-5),
        listed(good_id, good, ALICE.device_id),
    ]
    relay = FakeRelay(items, {good_id: good})
    await fake_relay(aiohttp_server, world, relay)
    done, warnings = await pull(world.b)
    assert victim.read_bytes() == b"original" and not escaped.exists()
    [imported] = [d for d in done if d.result is not None]
    assert imported.item.id == good_id and imported.origin.startswith("alice (")
    assert any("skipped 5 malformed item(s)" in w for w in warnings), warnings
    # Only the good item was ever asked for (fetched, then acknowledged).
    assert relay.requested == [f"/v1/mailbox/{BOB.device_id}/{good_id}"] * 2
    assert list(world.b.staging_dir.iterdir()) == []


async def test_a_listing_entry_of_the_wrong_shape_is_skipped_not_fatal(
    aiohttp_server, world, tmp_path
):
    good = sealed_export(world, tmp_path)
    good_id = "1700000000-0123456789abcdef"
    items = [
        "junk",
        {"id": "1700000000-0000000000000003", "size": True},
        None,
        {**listed("1700000000-0000000000000004", b"x", ALICE.device_id), "digest": 7},
        # Larger than the relay's own max_bundle (1 GiB): never downloaded.
        listed("1700000000-0000000000000005", b"x", ALICE.device_id, size=2 << 30),
        listed(good_id, good, ALICE.device_id),
    ]
    await fake_relay(aiohttp_server, world, FakeRelay(items, {good_id: good}))
    done, warnings = await pull(world.b)
    [imported] = [d for d in done if d.result is not None]
    assert imported.item.id == good_id
    assert any("skipped 5 malformed item(s)" in w for w in warnings), warnings


async def test_a_download_longer_than_listed_is_cut_off_and_deleted(
    aiohttp_server, world, tmp_path
):
    # Old pulls streamed the whole body to staging before any check (3 GiB for 100 listed).
    item_id = "1700000000-00000000000000ff"
    body = b"y" * 100
    relay = FakeRelay(
        [listed(item_id, body, ALICE.device_id)], {item_id: body + os.urandom(1 << 20) * 96}
    )
    await fake_relay(aiohttp_server, world, relay)
    [failed], _ = await pull(world.b)
    assert relay.sent < 48 << 20  # cut off early: far less than the 97 MiB it would send
    assert failed.result is None and "more than the 100 bytes" in (failed.error or "")
    assert list(world.b.staging_dir.iterdir()) == []


async def test_a_download_that_is_not_what_was_listed_is_refused_not_acked(
    aiohttp_server, world, tmp_path
):
    item_id = "1700000000-00000000000000fe"
    body = sealed_export(world, tmp_path)
    other = bytearray(body)
    other[len(other) // 2] ^= 0xFF  # the same length, one byte changed on the way
    relay = FakeRelay([listed(item_id, body, ALICE.device_id)], {item_id: bytes(other)})
    await fake_relay(aiohttp_server, world, relay)
    [failed], _ = await pull(world.b)
    assert failed.result is None and "arrived damaged" in (failed.error or "")
    assert relay.requested == [f"/v1/mailbox/{BOB.device_id}/{item_id}"] and relay.deleted == []
    assert list(world.b.staging_dir.iterdir()) == []
    assert not transcript(world.b.home, world.project_b, TOOLS).exists()


@pytest.mark.parametrize(
    "listing",
    [
        b"[" * 200_000,
        b'{"items": {"a": 1}}',
        b"\xff\xfe",
        b'{"items": [' + b'{"id": "x"},' * 400_000 + b"{}]}",
    ],
)
async def test_a_malformed_listing_is_one_clear_error(aiohttp_server, world, listing):
    await fake_relay(aiohttp_server, world, FakeRelay([], {}, listing=listing))
    with pytest.raises(RelayError, match=r"malformed|oversized"):
        await pull_all(context(world.b), core.ImportOptions(), "relay", warn=lambda m: None)


async def test_an_error_message_from_the_relay_is_printable(aiohttp_server, world, tmp_path):
    from aiohttp import web

    async def health(request):
        return web.json_response({"service": "commuter-relay", "limits": {"max_bundle": 10**9}})

    async def refuse(request):
        await request.read()
        return web.json_response(
            {"error": "relay-full", "message": "\x1b]0;pwned\x07" + "z" * 999}, status=429
        )

    app = web.Application()
    app.router.add_get("/", health)
    app.router.add_post("/v1/mailbox/{box}", refuse)
    server = await aiohttp_server(app)
    config.set_value(world.a, "relay", (f"http://127.0.0.1:{server.port}",))
    with pytest.raises(QuotaExceeded) as info:
        await push(world, tmp_path, via="relay")
    assert "\x1b" not in str(info.value) and len(str(info.value)) < 400
