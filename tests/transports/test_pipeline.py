"""One receive path: `receive`/`serve --auto-import` (a LAN inbox entry) and `pull --from` (a
download from a peer) go through what `pull` does, with the same safeguards."""

from __future__ import annotations

import asyncio
import hashlib
import stat

import pytest
from aiohttp import web
from claude_home import TOOLS, transcript
from test_lan_inbox import received
from transhelp import ALICE, BOB, context, make_world

from commuter import core
from commuter.errors import BundleError, NotPaired
from commuter.peer import seal
from commuter.peer.inbox import Inbox
from commuter.peer.peers import Peers
from commuter.pipeline import InboxEntry, PeerFetch, pull_all, receive_one
from commuter.transports.state import PullState


@pytest.fixture
def world(tmp_path):
    return make_world(tmp_path)


def one(settings, source_of, **kw):
    ctx = context(settings)
    warnings: list[str] = []
    pulled = asyncio.run(
        receive_one(ctx, source_of(ctx), core.ImportOptions(**kw), warn=warnings.append)
    )
    return pulled, warnings


def test_an_inbox_entry_imports_records_and_leaves_the_inbox(world, tmp_path):
    item = received(world, tmp_path)
    pulled, _ = one(world.b, lambda ctx: InboxEntry(ctx, item.id))
    assert pulled is not None and pulled.result is not None
    assert pulled.origin == f"alice ({ALICE.device_id})"
    assert transcript(world.b.home, world.project_b, TOOLS).is_file()
    assert Inbox(world.b).pending() == []
    assert PullState.load(world.b).done(item.digest)


def test_a_damaged_inbox_entry_is_set_aside_as_pull_does(world, tmp_path):
    item = received(world, tmp_path, damage=True)
    damaged = item.sealed_path.read_bytes()
    with pytest.raises(BundleError, match="failed authentication"):
        one(world.b, lambda ctx: InboxEntry(ctx, item.id))
    kept = world.b.rejected_dir / f"inbox_{item.id}.sealed"
    assert kept.read_bytes() == damaged
    assert stat.S_IMODE(world.b.rejected_dir.stat().st_mode) == 0o700
    assert Inbox(world.b).pending() == []
    # and pull, the other way in, finds nothing left to retry
    assert (
        asyncio.run(
            pull_all(context(world.b), core.ImportOptions(), via="lan", warn=lambda m: None)
        )
        == []
    )


async def _peer_serving(aiohttp_server, body: bytes, sid: str = TOOLS):
    async def sessions(_request: web.Request) -> web.Response:
        return web.json_response(
            {
                "sessions": [
                    {
                        "id": sid,
                        "backend": "claude",
                        "project": "/x/my.app",
                        "updated_at": "2026-12-01T00:00:00Z",
                        "size": len(body),
                    }
                ]
            }
        )

    async def bundle(_request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/octet-stream")

    app = web.Application()

    async def info(_request: web.Request) -> web.Response:
        return web.json_response({"device_id": ALICE.device_id, "name": "alice"})

    app.router.add_get("/v1/info", info)
    app.router.add_get("/v1/sessions", sessions)
    app.router.add_get(f"/v1/sessions/{sid}/bundle", bundle)
    return await aiohttp_server(app)


def _sealed_by(world, tmp_path, sender) -> bytes:
    bundle = tmp_path / "p.commuter"
    with bundle.open("wb") as fh:
        core.export_to(world.a, fh, session=TOOLS, cwd=world.project_a)
    out = tmp_path / "p.sealed"
    seal.seal_file(bundle, out, sender, [BOB.public_key])
    return out.read_bytes()


async def test_pull_from_goes_through_the_pipeline_and_records_the_digest(
    world, tmp_path, aiohttp_server
):
    body = _sealed_by(world, tmp_path, ALICE)
    server = await _peer_serving(aiohttp_server, body)
    ctx = context(world.b)
    alice = Peers.load(world.b).get("alice")
    source = PeerFetch(ctx, alice, world.project_b, f"127.0.0.1:{server.port}")
    pulled = await receive_one(ctx, source, core.ImportOptions(), warn=lambda m: None)
    assert pulled is not None and pulled.result is not None
    assert pulled.result.action == "created" and pulled.origin == f"alice ({ALICE.device_id})"
    assert transcript(world.b.home, world.project_b, TOOLS).is_file()
    assert PullState.load(world.b).done(hashlib.sha256(body).hexdigest())  # recorded, as pull
    assert [p for p in world.b.staging_root.rglob("*") if not p.is_dir()] == []


async def test_pull_from_refuses_a_bundle_sealed_by_another_paired_key(
    world, tmp_path, aiohttp_server
):
    from transhelp import CAROL, trust

    trust(world.b, "carol", CAROL)  # paired too, but not the peer we asked
    server = await _peer_serving(aiohttp_server, _sealed_by(world, tmp_path, CAROL))
    ctx = context(world.b)
    source = PeerFetch(
        ctx, Peers.load(world.b).get("alice"), world.project_b, f"127.0.0.1:{server.port}"
    )
    with pytest.raises(NotPaired, match="sealed by another key"):
        await receive_one(ctx, source, core.ImportOptions(), warn=lambda m: None)
    assert not transcript(world.b.home, world.project_b, TOOLS).exists()
    assert [p for p in world.b.staging_root.rglob("*") if not p.is_dir()] == []
