"""Delta transfer between two fake machines on loopback (real aiohttp daemon, real seals): the
first push is whole, an increment sends only what the peer lacks, a peer whose base does not
match refuses (409) and gets the whole session, and hostile delta manifests are refused with
one error and nothing written."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from claude_home import TOOLS, install, transcript

sys.path.insert(0, str(Path(__file__).parent / "peer"))
from peerhelp import ALICE, BOB, give_identity, machine, trust

from commuter import acks, bundle, config, core
from commuter.backends.claude import lineage
from commuter.errors import BundleError, DeltaBaseMismatch
from commuter.model import ImportOptions
from commuter.peer.peers import Peers
from commuter.peer.server import make_app
from commuter.pipeline import InboxEntry, Pushed, push_session, receive_one
from commuter.settings import Settings
from commuter.transports import Transport, TransportContext
from commuter.transports.lan import LanTransport

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclasses.dataclass
class World:
    sa: Settings
    sb: Settings
    a_project: Path
    b_project: Path
    uploads: list[int]  # bytes of each bundle upload B's daemon received

    @property
    def at_a(self) -> Path:
        return transcript(self.sa.home, self.a_project, TOOLS)

    @property
    def at_b(self) -> Path:
        return transcript(self.sb.home, self.b_project, TOOLS)


@pytest.fixture
def world(tmp_path: Path) -> World:
    a_home = install(tmp_path / "A")
    sa, sb = machine(a_home), machine(tmp_path / "B")
    b_project = sb.home / "code" / "my.app"
    b_project.mkdir(parents=True)
    for s in (sa, sb):
        config.set_value(s, "path-map", (str(a_home / "projects"), str(sb.home / "code")))
    give_identity(sa, ALICE)
    give_identity(sb, BOB)
    trust(sa, "bob", BOB)
    trust(sb, "alice", ALICE)
    return World(sa, sb, a_home / "projects" / "my.app", b_project, [])


async def _daemon(world: World, aiohttp_server: Any) -> str:
    """B's daemon importing each upload as it lands (as `serve --auto-import` does), counting
    the bytes of every bundle upload on the wire."""
    sb = world.sb
    ctx_b = TransportContext.load(sb)

    async def on_received(item: Any, _peer: Any) -> str | None:
        entry = InboxEntry(ctx_b, item.id, refetch=False)  # as serve --auto-import
        await receive_one(ctx_b, entry, ImportOptions(), warn=print)
        return "imported"

    @web.middleware
    async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "POST" and request.path == "/v1/bundles":
            try:
                return await handler(request)
            finally:  # the body streams without a Content-Length: count what arrived
                world.uploads.append(request.content.total_bytes)
        return await handler(request)

    app = make_app(sb, BOB, Peers.load(sb), name="bob", on_received=on_received)
    app.middlewares.insert(0, count)
    server = await aiohttp_server(app)
    return f"127.0.0.1:{server.port}"


async def _push(world: World, address: str) -> Pushed:
    ctx = TransportContext.load(world.sa)
    bob = ctx.peers.get("bob")

    def lan(_name: str, c: TransportContext) -> Transport:
        return LanTransport(c, address=address)

    return await push_session(ctx, TOOLS, [bob], "lan", named=True, factory=lan)


def _say(path: Path, project: Path, n: int, size: int = 400) -> list[str]:
    """Append `n` user/assistant entries chained to the last one, as claude writes them."""
    lines = [json.loads(x) for x in path.read_text().splitlines() if '"uuid"' in x]
    parent = lines[-1]["uuid"]
    ids = []
    with path.open("a", encoding="utf-8") as fh:
        for i in range(n):
            entry = {
                "parentUuid": parent,
                "type": "user" if i % 2 == 0 else "assistant",
                "uuid": str(uuid.uuid4()),
                "sessionId": TOOLS,
                "cwd": str(project),
                "timestamp": f"2099-01-01T10:{i // 60:02d}:{i % 60:02d}.000Z",
                "message": {
                    "role": "user",
                    "content": f"message {i} " + os.urandom(size // 2).hex(),
                },
            }
            fh.write(json.dumps(entry, separators=(",", ":")) + "\n")
            parent = entry["uuid"]
            ids.append(entry["uuid"])
    return ids


async def test_an_increment_sends_only_what_the_peer_lacks(world: World, aiohttp_server) -> None:
    address = await _daemon(world, aiohttp_server)
    _say(world.at_a, world.a_project, 400, size=2000)  # a session worth a delta: ~800 KB
    first = await _push(world, address)
    assert not first.delta and first.receipt.statuses == ("imported",)
    assert first.confirmed == (BOB.device_id,)
    assert lineage.uuid_chain(world.at_b) == lineage.uuid_chain(world.at_a)
    new = _say(world.at_a, world.a_project, 20)
    second = await _push(world, address)
    assert second.delta and not second.fell_back
    whole, increment = world.uploads
    assert increment < whole * 0.1, (increment, whole)
    # every new message is at B, translated, in order, and nothing else changed
    assert lineage.uuid_chain(world.at_b) == lineage.uuid_chain(world.at_a)
    entries = {e.get("uuid"): e for e in map(json.loads, world.at_b.read_text().splitlines())}
    assert {entries[i]["cwd"] for i in new} == {str(world.b_project)}
    # the same as a whole import would have written, byte for byte
    after_delta = world.at_b.read_bytes()
    world.at_b.unlink()
    out = world.sa.staging_dir / "whole.bundle"
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as fh:
        core.export_to(world.sa, fh, session=TOOLS)
    assert core.import_file(world.sb, out, ImportOptions()).action == "created"
    assert world.at_b.read_bytes() == after_delta


async def test_a_base_mismatch_falls_back_to_the_whole_session(
    world: World, aiohttp_server
) -> None:
    address = await _daemon(world, aiohttp_server)
    await _push(world, address)
    acks.forget_received(world.sb.state_dir, ALICE.device_id, "claude", TOOLS)  # B forgot
    new = _say(world.at_a, world.a_project, 20)
    pushed = await _push(world, address)
    assert pushed.fell_back and not pushed.delta
    assert len(world.uploads) == 3  # whole, the refused delta, whole again
    assert world.uploads[1] < world.uploads[2]
    assert all(i in world.at_b.read_text() for i in new)
    # B's own copy went on (a local claude wrote to it): no base for a delta either; the
    # whole session goes and the convergence rule keeps every message of both sides
    mine = _say(world.at_b, world.b_project, 1)
    more = _say(world.at_a, world.a_project, 2)
    again = await _push(world, address)
    assert again.fell_back
    everything = "".join(p.read_text() for p in world.at_b.parent.glob("*.jsonl"))
    assert all(i in everything for i in [*mine, *more])


def _tree(home: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(home)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in home.rglob("*")
        if p.is_file() and "commuter" not in p.parts
    }


def _rebundle(src: Path, dst: Path, staging: Path, change: Callable[[dict[str, Any]], None]):
    """`src` written again with its delta object changed (members as they were)."""
    unpacked = bundle.unpack(src, staging)
    try:
        manifest = unpacked.manifest
        assert manifest.delta is not None
        delta = json.loads(json.dumps(manifest.delta))
        change(delta)
        with dst.open("wb") as fh:
            writer = bundle.BundleWriter(fh, dataclasses.replace(manifest, delta=delta, members=()))
            for m in manifest.members:
                writer.add_file(m.name, unpacked.root / m.name)
            writer.close()
    finally:
        shutil.rmtree(unpacked.root, ignore_errors=True)
    return dst


def _bad(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(delta: dict[str, Any]) -> None:
        delta["transcript"][key] = value

    return change


def _bad_base(delta: dict[str, Any]) -> None:
    delta["base"]["../../.ssh/authorized_keys"] = {"size": 1, "sha256": "0" * 64}


def _base_listed_and_sent(delta: dict[str, Any]) -> None:
    delta["base"]["delta/session/" + TOOLS + ".jsonl"] = {"size": 1, "sha256": "0" * 64}


def _no_object(delta: dict[str, Any]) -> None:
    delta["transcript"] = "all of it"


HOSTILE = [
    ("a base the receiver never held", _bad("base_sha256", "1" * 64), DeltaBaseMismatch),
    ("a base longer than the session", _bad("base_size", 10**9), BundleError),
    ("a base of no bytes", _bad("base_size", 0), BundleError),
    ("another session's transcript", _bad("member", "session/../../x.jsonl"), BundleError),
    ("a size the suffix does not have", _bad("size", 10**8), BundleError),
    ("a digest that is no digest", _bad("sha256", "not hex"), BundleError),
    ("a base member with a path out", _bad_base, BundleError),
    ("the suffix listed as unchanged", _base_listed_and_sent, BundleError),
    ("a transcript that is no object", _no_object, BundleError),
]


@pytest.mark.parametrize(("what", "change", "error"), HOSTILE, ids=[h[0] for h in HOSTILE])
async def test_hostile_delta_manifests_are_refused_and_nothing_is_written(
    world: World, aiohttp_server, what: str, change: Any, error: type[Exception]
) -> None:
    address = await _daemon(world, aiohttp_server)
    await _push(world, address)
    _say(world.at_a, world.a_project, 20)
    ref = core.find_session(world.sa, TOOLS)
    base = acks.acked(world.sa.state_dir, BOB.device_id, "claude", TOOLS)
    assert base is not None
    good = world.sa.staging_dir / "good.bundle"
    with good.open("wb") as fh:
        assert core.export_session(world.sa, fh, ref, base=base.members).delta
    bad = _rebundle(good, world.sa.staging_dir / "bad.bundle", world.sa.staging_dir, change)
    before = _tree(world.sb.home)
    opts = ImportOptions(sender_verified=True)
    with pytest.raises(error) as caught:
        core.import_file(world.sb, bad, opts, sender=ALICE.device_id)
    message = str(caught.value)
    assert message and "\n" not in message
    assert _tree(world.sb.home) == before


async def test_a_delta_is_taken_only_from_the_paired_peer_it_is_based_on(
    world: World, aiohttp_server
) -> None:
    address = await _daemon(world, aiohttp_server)
    await _push(world, address)
    _say(world.at_a, world.a_project, 3)
    ref = core.find_session(world.sa, TOOLS)
    base = acks.acked(world.sa.state_dir, BOB.device_id, "claude", TOOLS)
    assert base is not None
    out = world.sa.staging_dir / "delta.bundle"
    with out.open("wb") as fh:
        core.export_session(world.sa, fh, ref, base=base.members)
    before = _tree(world.sb.home)
    with pytest.raises(DeltaBaseMismatch):  # a plain drop: nobody vouches for its sender
        core.import_file(world.sb, out, ImportOptions())
    with pytest.raises(DeltaBaseMismatch):  # another peer's delta never lands on alice's base
        core.import_file(world.sb, out, ImportOptions(sender_verified=True), sender="X" * 16)
    assert _tree(world.sb.home) == before
    ok = core.import_file(
        world.sb, out, ImportOptions(sender_verified=True), sender=ALICE.device_id
    )
    assert ok.action == "updated"
    assert lineage.uuid_chain(world.at_b) == lineage.uuid_chain(world.at_a)


async def test_folder_drops_carry_deltas_too(world: World, tmp_path: Path) -> None:
    from commuter.pipeline import pull_all

    drop = tmp_path / "shared"
    drop.mkdir()
    for s in (world.sa, world.sb):
        config.set_value(s, "transfer-dir", (str(drop),))
    ctx_a, ctx_b = TransportContext.load(world.sa), TransportContext.load(world.sb)
    bob = ctx_a.peers.get("bob")
    _say(world.at_a, world.a_project, 200, size=2000)
    first = await push_session(ctx_a, TOOLS, [bob], "folder", named=True)
    assert not first.delta
    await pull_all(ctx_b, ImportOptions(), "folder", warn=print)
    new = _say(world.at_a, world.a_project, 20)
    second = await push_session(ctx_a, TOOLS, [bob], "folder", named=True)
    assert second.delta and second.receipt.size < first.receipt.size * 0.1
    [got] = await pull_all(ctx_b, ImportOptions(), "folder", warn=print)
    assert got.result is not None and got.result.action == "updated", got.error
    assert all(i in world.at_b.read_text() for i in new)
    assert lineage.uuid_chain(world.at_b) == lineage.uuid_chain(world.at_a)
    assert not os.listdir(drop) or all(not n.endswith(".sealed") for n in os.listdir(drop))


async def test_a_delta_that_cannot_apply_later_brings_the_whole_session(
    world: World, aiohttp_server
) -> None:
    """B stores uploads and imports them later (as `serve` without --auto-import or the sync
    daemon do); its own copy went on meanwhile, so the delta no longer applies: B takes the
    whole session from A's daemon instead and converges, losing nothing."""
    from commuter.pipeline import pull_all

    a_server = await aiohttp_server(make_app(world.sa, ALICE, Peers.load(world.sa), name="alice"))
    peers_b = Peers.load(world.sb)
    peers_b.touch_address(ALICE.public_key, f"127.0.0.1:{a_server.port}")
    peers_b.save()
    b_server = await aiohttp_server(make_app(world.sb, BOB, Peers.load(world.sb), name="bob"))
    address = f"127.0.0.1:{b_server.port}"
    ctx_b = TransportContext.load(world.sb)
    assert (await _push(world, address)).receipt.statuses == ("stored",)
    await pull_all(ctx_b, ImportOptions(), "lan", warn=print)
    new = _say(world.at_a, world.a_project, 20)
    assert (await _push(world, address)).delta  # stored at B, not imported yet
    mine = _say(world.at_b, world.b_project, 1)  # meanwhile B's claude went on
    warnings: list[str] = []
    [got] = await pull_all(ctx_b, ImportOptions(), "lan", warn=warnings.append)
    assert got.result is not None, got.error
    assert any("took the whole session from alice" in w for w in warnings), warnings
    everything = "".join(p.read_text() for p in world.at_b.parent.glob("*.jsonl"))
    assert all(i in everything for i in [*new, *mine])
    assert len(list(world.at_b.parent.glob("*.jsonl"))) == 2  # X and its one fork


async def test_relay_drops_carry_deltas_too(world: World, aiohttp_server, tmp_path: Path) -> None:
    from commuter.pipeline import pull_all
    from commuter.relay.app import make_relay_app

    relay = await aiohttp_server(make_relay_app(tmp_path / "relay", None))
    for s in (world.sa, world.sb):
        config.set_value(s, "relay", (f"http://127.0.0.1:{relay.port}",))
    ctx_a, ctx_b = TransportContext.load(world.sa), TransportContext.load(world.sb)
    bob = ctx_a.peers.get("bob")
    _say(world.at_a, world.a_project, 200, size=2000)
    first = await push_session(ctx_a, TOOLS, [bob], "relay", named=True)
    assert not first.delta and first.receipt.transport == "relay"
    [took] = await pull_all(ctx_b, ImportOptions(), "relay", warn=print)
    assert took.result is not None, took.error
    new = _say(world.at_a, world.a_project, 20)
    second = await push_session(ctx_a, TOOLS, [bob], "relay", named=True)
    assert second.delta and second.receipt.size < first.receipt.size * 0.1
    [got] = await pull_all(ctx_b, ImportOptions(), "relay", warn=print)
    assert got.result is not None and got.result.action == "updated", got.error
    entries = {e.get("uuid"): e for e in map(json.loads, world.at_b.read_text().splitlines())}
    assert all(i in entries for i in new)
    assert lineage.uuid_chain(world.at_b) == lineage.uuid_chain(world.at_a)
