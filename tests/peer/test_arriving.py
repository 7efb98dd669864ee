"""An upload imported while it arrives (pipeline.Arriving, the server's on_upload): the import
runs as the frames come, nothing of it is visible before the seal's final frame checked out, a
cut or forged upload leaves nothing, and what cannot be imported then waits in the inbox."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import os
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from claude_home import TOOLS, install, transcript
from peerhelp import ALICE, BOB, inbox_files, machine, trust

from commuter import config, core
from commuter.model import ImportOptions
from commuter.peer import auth, seal
from commuter.peer.inbox import Inbox, InboxItem, Upload
from commuter.peer.peers import Peer, Peers
from commuter.peer.server import MAX_BUNDLE, make_app
from commuter.pipeline import Arriving, receive_one
from commuter.settings import Settings
from commuter.transports import TransportContext

FRAME = 64 * 1024  # small frames: many of them, so the import is well under way mid-upload
WAIT = 20.0


def _grow(src: Path, size: int) -> None:
    """The transcript grown to `size` bytes of lines that compress badly (random hex) and
    carry new uuids, so the bundle spans many frames."""
    lines = src.read_bytes().splitlines(keepends=True)
    out = bytearray(src.read_bytes())
    n = 0
    while len(out) < size:
        for line in lines:
            entry = orjson.loads(line)
            for key in ("uuid", "parentUuid"):
                if isinstance(entry.get(key), str):
                    entry[key] = f"{n:08x}" + entry[key][8:]
            entry["pad"] = os.urandom(6000).hex()
            out += orjson.dumps(entry) + b"\n"
        n += 1
    src.write_bytes(bytes(out))


class Bob:
    """B's peer app with an on_upload that imports through the pipeline, as serve does."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.uploads: list[Upload] = []
        self.stored: list[InboxItem] = []

    async def on_upload(self, upload: Upload) -> str | None:
        self.uploads.append(upload)
        ctx = TransportContext.load(self.settings)
        pulled = await receive_one(
            ctx, Arriving(upload), ImportOptions(interactive=False), warn=lambda _m: None
        )
        return "imported" if pulled is not None and pulled.result is not None else None

    async def on_received(self, item: InboxItem, _peer: Peer) -> str | None:
        self.stored.append(item)
        return None

    def transcripts(self) -> list[Path]:
        return list((self.settings.home / ".claude" / "projects").rglob(f"{TOOLS}.jsonl"))

    def temps(self) -> list[Path]:
        root = self.settings.home / ".claude"
        return [p for p in root.rglob("*") if p.name.endswith(".tmp")] if root.exists() else []


@pytest.fixture
def plain(tmp_path: Path) -> bytes:
    """A's TOOLS session grown to ~1.5 MB, exported as a plain bundle."""
    a = install(tmp_path / "A")
    sa = machine(a)
    _grow(transcript(a, a / "projects" / "my.app", TOOLS), 1_500_000)
    out = io.BytesIO()
    core.export_session(sa, out, core.find_session(sa, TOOLS))
    return out.getvalue()


async def _bob(aiohttp_client, tmp_path: Path, max_body: int = MAX_BUNDLE):
    """B (its code/my.app, a path map from A's projects, alice paired) and a client of its
    peer app, which takes bodies of up to `max_body` bytes."""
    sb = machine(tmp_path / "B")
    (sb.home / "code" / "my.app").mkdir(parents=True)
    config.set_value(sb, "path-map", (str(tmp_path / "A" / "projects"), str(sb.home / "code")))
    peers = trust(sb, "alice", ALICE)
    b = Bob(sb)
    made = make_app(
        sb,
        BOB,
        peers,
        name="bob",
        max_body=max_body,
        on_received=b.on_received,
        on_upload=b.on_upload,
    )
    return b, await aiohttp_client(made)


@pytest.fixture
async def bob(aiohttp_client, tmp_path: Path):
    return await _bob(aiohttp_client, tmp_path)


def _frames(plain: bytes) -> tuple[seal.Sealer, list[bytes]]:
    sealer = seal.Sealer(ALICE, [BOB.public_key])
    parts = [plain[i : i + FRAME] for i in range(0, len(plain), FRAME)]
    return sealer, [sealer.push(p, i == len(parts) - 1) for i, p in enumerate(parts)]


def _headers(sealer: seal.Sealer) -> dict[str, str]:
    digest = auth.sealed_body_digest(sealer.digest)
    return auth.sign_headers(ALICE, "POST", "/v1/bundles", digest, audience=BOB.device_id)


async def _until(check, what: str) -> None:
    for _ in range(int(WAIT / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"no {what} within {WAIT:g} s")


async def test_an_upload_is_imported_while_it_arrives_and_seen_only_after_its_seal(bob, plain):
    b, client = bob
    sealer, frames = _frames(plain)
    assert len(frames) > 10
    release = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield sealer.prefix
        for frame in frames[:-1]:
            yield frame
        await release.wait()  # the final frame is held back
        yield frames[-1]

    post = asyncio.create_task(client.post("/v1/bundles", data=body(), headers=_headers(sealer)))
    # The import writes the transcript's temp file while the upload is still short of its end
    await _until(lambda: any(p.name.startswith(f".{TOOLS}.jsonl") for p in b.temps()), "temp")
    await asyncio.sleep(0.2)
    assert b.transcripts() == []  # nothing visible before the seal's final frame
    release.set()
    resp = await post
    assert resp.status == 200, await resp.text()
    answer = await resp.json()
    assert answer["status"] == "imported"
    [got] = b.transcripts()
    sent = transcript(
        b.settings.home.parent / "A", b.settings.home.parent / "A" / "projects" / "my.app", TOOLS
    )
    assert len(got.read_bytes().splitlines()) == len(sent.read_bytes().splitlines())
    assert str(b.settings.home / "code" / "my.app").encode() in got.read_bytes()
    assert b.stored == [] and [u.id for u in b.uploads] == [answer["id"]]
    assert b.temps() == [] and inbox_files(b.settings) == []


@pytest.mark.parametrize("damage", ["cut", "forged"])
async def test_a_cut_or_forged_upload_leaves_nothing(bob, plain, damage):
    b, client = bob
    sealer, frames = _frames(plain)
    if damage == "cut":
        sent = frames[:-1]  # every frame but the final one, then the body ends
    else:
        bad = bytearray(frames[-3])
        bad[100] ^= 1
        sent = [*frames[:-3], bytes(bad), *frames[-2:]]

    async def body() -> AsyncIterator[bytes]:
        yield sealer.prefix
        for frame in sent:
            yield frame

    resp = await client.post("/v1/bundles", data=body(), headers=_headers(sealer))
    assert resp.status == 400, await resp.text()
    assert (await resp.json())["error"] == "bad-bundle"
    await _until(lambda: b.uploads and b.temps() == [], "the import's temp files gone")
    assert b.transcripts() == [] and b.stored == []
    assert inbox_files(b.settings) == []


async def test_what_cannot_be_imported_as_it_arrives_waits_in_the_inbox(bob, plain, tmp_path):
    b, client = bob
    # this import refuses bundles that large (what the inbox path refuses too, later)
    b.settings = dataclasses.replace(b.settings, max_import_size=1 << 20)
    sealer, frames = _frames(plain)
    data = sealer.prefix + b"".join(frames)
    resp = await client.post("/v1/bundles", data=data, headers=_headers(sealer))
    assert resp.status == 200, await resp.text()
    answer = await resp.json()
    assert answer["status"] == "stored"
    assert [u.id for u in b.uploads] == [answer["id"]]  # it was tried while arriving
    [item] = b.stored
    assert item.id == answer["id"] and item.sealed_path.read_bytes() == data
    opened = Inbox(b.settings).open(item, BOB, Peers.load(b.settings), tmp_path / "opened")
    assert opened.read_bytes() == plain
    assert b.transcripts() == [] and b.temps() == []
    assert [n for n in inbox_files(b.settings) if n.endswith(".tmp")] == []


async def test_what_is_no_whole_bundle_is_not_imported_while_it_arrives(bob):
    b, client = bob
    sealer, frames = _frames(os.urandom(3 * FRAME))  # a refusal, a delta or junk: the inbox
    data = sealer.prefix + b"".join(frames)
    resp = await client.post("/v1/bundles", data=data, headers=_headers(sealer))
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["status"] == "stored"
    assert b.uploads == [] and len(b.stored) == 1


@pytest.mark.parametrize("agent", ["codex", "gemini"])
async def test_codex_and_gemini_sessions_are_imported_while_they_arrive(
    aiohttp_client, tmp_path, agent
):
    if agent == "codex":
        from test_codex_backend import TOOLS as sid
        from test_codex_backend import install as install_agent
    else:
        from test_gemini_backend import SUBAGENT as sid
        from test_gemini_backend import install as install_agent
    sa = machine(install_agent(tmp_path / "A"))
    b, client = await _bob(aiohttp_client, tmp_path)
    sb = b.settings
    out = io.BytesIO()
    core.export_session(sa, out, core.find_session(sa, sid))
    sealer, frames = _frames(out.getvalue())
    data = sealer.prefix + b"".join(frames)
    resp = await client.post("/v1/bundles", data=data, headers=_headers(sealer))
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["status"] == "imported"
    assert b.stored == [] and len(b.uploads) == 1
    got = core.find_session(sb, sid)
    assert got.backend == agent and got.project == sb.home / "code" / "my.app"


async def test_an_upload_past_the_size_cap_mid_import_leaves_nothing(
    aiohttp_client, tmp_path, plain
):
    # the import is under way when the cap is crossed
    b, client = await _bob(aiohttp_client, tmp_path, max_body=len(plain) // 2)
    sealer, frames = _frames(plain)

    async def body() -> AsyncIterator[bytes]:  # chunked: no length to refuse it up front
        yield sealer.prefix
        for frame in frames:
            yield frame

    resp = await client.post("/v1/bundles", data=body(), headers=_headers(sealer))
    assert resp.status == 413, await resp.text()
    await _until(lambda: b.uploads and b.temps() == [], "the import's temp files gone")
    assert b.transcripts() == [] and b.stored == []
    assert inbox_files(b.settings) == []
