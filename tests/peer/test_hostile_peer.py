"""`pull --from` against whoever answers at a peer's address: its listing and its download
are data from someone else (an mDNS spoof, a machine that took the peer's last address)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web
from peerhelp import ALICE, BOB, give_identity, machine, trust

from commuter.errors import PeerError
from commuter.peer import client, seal
from commuter.peer.peers import Peers

TIMEOUT = 60


class FakePeer:
    """An aiohttp app answering as ALICE: /v1/info, a listing it chooses, and a bundle body
    it chooses; it records what was asked and how much of the body got out."""

    def __init__(
        self,
        sessions: list[object],
        body: bytes = b"",
        *,
        length: int | None = None,
        stream: int = 0,
        answer: object = None,
    ) -> None:
        self.answer = {"sessions": sessions} if answer is None else answer
        self.body = body
        self.length = length
        self.stream = stream  # bytes to send in 1 MiB writes instead of `body`
        self.fetched: list[str] = []
        self.sent = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/info", self.info)
        app.router.add_get("/v1/sessions", self.listing)
        app.router.add_get("/v1/sessions/{sid:.*}/bundle", self.bundle)
        return app

    async def info(self, _request: web.Request) -> web.Response:
        return web.json_response({"name": "alice", "device_id": ALICE.device_id, "protocol": 1})

    async def listing(self, _request: web.Request) -> web.Response:
        return web.json_response(self.answer)

    async def bundle(self, request: web.Request) -> web.StreamResponse:
        self.fetched.append(request.raw_path)
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        if self.length is not None:
            response.content_length = self.length
        else:
            response.enable_chunked_encoding()
        await response.prepare(request)
        if not self.stream:
            await response.write(self.body)
            await response.write_eof()
            return response
        block = os.urandom(1 << 20)
        try:
            while self.sent < self.stream:
                await response.write(block)
                self.sent += len(block)
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            pass  # the client hung up: what this test wants to see
        return response


def _entry(sid: object, project: object, size: object = 100, **extra: object) -> dict[str, object]:
    return {
        "id": sid,
        "backend": "claude",
        "project": project,
        "updated_at": "2026-01-01T00:00:00+00:00",
        "size": size,
        **extra,
    }


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def bob(tmp_path: Path):
    """The puller: BOB's key, ALICE paired as "alice", a project dir to pull into."""
    settings = machine(tmp_path / "bob")
    give_identity(settings, BOB)
    trust(settings, "alice", ALICE)
    project = tmp_path / "bob" / "code" / "proj"
    project.mkdir(parents=True)
    return settings, project


def _env(settings, home: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("XDG_", "COMMUTER_")) and k != "CLAUDE_CONFIG_DIR"
    }
    env.update(HOME=str(home), USER="tester", COMMUTER_MDNS_INTERFACES="127.0.0.1")
    return env


async def _pull_from(env: dict[str, str], address: str, cwd: Path):
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "commuter",
        "pull",
        "--from",
        "alice",
        "--address",
        address,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return subprocess.CompletedProcess("pull", proc.returncode, out.decode(), err.decode())


async def test_a_traversal_session_id_deletes_and_writes_nothing_outside_staging(
    aiohttp_server, bob, tmp_path
):
    settings, project = bob
    victim = tmp_path / "victim"
    (victim / "keep").mkdir(parents=True)
    (victim / "keep" / "data.txt").write_text("precious")
    before = _tree(victim)
    # A genuine bundle sealed by alice to bob (a replay of one seen on the LAN would do):
    # whatever path the id leads to, opening it succeeds.
    plain = tmp_path / "plain"
    plain.write_bytes(os.urandom(2000))
    sealed = tmp_path / "replayed.sealed"
    seal.seal_file(plain, sealed, ALICE, [BOB.public_key])
    traversal = "../" * 40 + str(victim / "x").lstrip("/")
    fake = FakePeer(
        [_entry(traversal, str(project))], sealed.read_bytes(), length=sealed.stat().st_size
    )
    server = await aiohttp_server(fake.app())

    result = await _pull_from(_env(settings, settings.home), f"127.0.0.1:{server.port}", project)

    assert victim.is_dir() and _tree(victim) == before, result.stderr
    assert (victim / "keep" / "data.txt").read_text() == "precious"
    assert result.returncode == 1, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "alice has no usable session for proj (1 malformed entry of its session list" in lines[0]
    assert "Traceback" not in result.stderr
    assert fake.fetched == []  # the id never reached a URL either
    assert _staged(settings) == []


@pytest.mark.parametrize(
    "sid",
    [
        "../x",
        "a/b",
        "a\\b",
        "",
        ".hidden",
        "-rf",
        "a..b",
        "x" * 129,
        "%2e%2e",
        "a?b=1",
        "a#b",
        "a\x00b",
        "é",
        7,
        None,
        ["a"],
    ],
)
def test_a_listing_entry_with_an_unsafe_id_is_skipped(sid):
    good = _entry("9f4898fa-a375-40c5-b92d-3ec70555dff2", "/p")
    sessions, skipped = client.parse_listing({"sessions": [_entry(sid, "/p"), good]})
    assert [s.id for s in sessions] == [good["id"]]
    assert skipped == 1


@pytest.mark.parametrize(
    "bad",
    [
        {"size": None},
        {"size": -1},
        {"size": "100"},
        {"size": True},
        {"size": 1.5},
        {"size": 1 << 60},
        {"backend": "../claude"},
        {"project": 5},
        {"project": "a\x00b"},
        {"project": "/" * 5000},
        {"updated_at": None},
    ],
)
def test_a_listing_entry_without_sane_fields_is_skipped(bad):
    entry = {**_entry("abc", "/p"), **bad}
    assert client.parse_listing({"sessions": [entry]}) == ([], 1)


@pytest.mark.parametrize("answer", [[], {"sessions": "x"}, {"sessions": None}, "sessions", 3])
async def test_a_reply_that_is_no_listing_is_one_peer_error(aiohttp_server, bob, answer):
    settings, project = bob
    server = await aiohttp_server(FakePeer([], answer=answer).app())
    alice = Peers.load(settings).get("alice")
    with pytest.raises(PeerError, match="alice sent a malformed session list"):
        await client.fetch_latest(
            settings, alice, project, address=f"127.0.0.1:{server.port}", identity=BOB
        )


async def test_fetch_refuses_an_unsafe_id_before_any_request(bob, tmp_path, unused_tcp_port):
    settings, _project = bob
    alice = Peers.load(settings).get("alice")
    async with client.PeerClient(settings, BOB, alice, f"127.0.0.1:{unused_tcp_port}") as c:
        with pytest.raises(PeerError, match="is not a session id"):
            await c.fetch("../../etc", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _staged(settings) -> list[Path]:
    return [p for p in settings.staging_root.rglob("*") if not p.is_dir()]


async def test_a_download_that_does_not_announce_its_size_is_not_read(aiohttp_server, bob):
    """The listing says 100 bytes; the answer streams 64 MiB, chunked."""
    settings, project = bob
    fake = FakePeer([_entry("abc", str(project), 100)], stream=64 << 20)
    server = await aiohttp_server(fake.app())
    alice = Peers.load(settings).get("alice")
    with pytest.raises(PeerError, match="alice sent a bundle without announcing its size"):
        await client.fetch_latest(
            settings, alice, project, address=f"127.0.0.1:{server.port}", identity=BOB
        )
    # Socket buffers hold a few MiB at most: the rest was never read.
    assert fake.sent < 32 << 20
    assert _staged(settings) == []


async def test_a_download_over_the_limit_is_refused_before_it_is_read(aiohttp_server, bob):
    settings, project = bob
    fake = FakePeer([_entry("abc", str(project), 100)], length=64 << 20, stream=64 << 20)
    server = await aiohttp_server(fake.app())
    alice = Peers.load(settings).get("alice")
    with pytest.raises(
        PeerError, match="offers a bundle of 67108864 bytes; this machine takes at most 1048576"
    ):
        await client.fetch_latest(
            settings,
            alice,
            project,
            address=f"127.0.0.1:{server.port}",
            identity=BOB,
            limit=1 << 20,
        )
    assert fake.sent < 32 << 20
    assert _staged(settings) == []


async def test_the_default_limit_refuses_a_bundle_a_daemon_would_not_take(aiohttp_server, bob):
    settings, project = bob
    too_big = 2 * 1024**3 + 1  # server.MAX_BUNDLE + 1
    fake = FakePeer([_entry("abc", str(project), 100)], length=too_big, stream=64 << 20)
    server = await aiohttp_server(fake.app())
    alice = Peers.load(settings).get("alice")
    with pytest.raises(PeerError, match="this machine takes at most 2147483648"):
        await client.fetch_latest(
            settings, alice, project, address=f"127.0.0.1:{server.port}", identity=BOB
        )
    assert fake.sent < 32 << 20
    assert _staged(settings) == []


async def test_an_oversized_json_reply_is_refused(aiohttp_server, bob):
    settings, project = bob
    fake = FakePeer([_entry(f"s{i}", "/elsewhere", 1, pad="x" * 1000) for i in range(17_000)])
    server = await aiohttp_server(fake.app())
    alice = Peers.load(settings).get("alice")
    with pytest.raises(PeerError, match="alice sent a reply larger than"):
        await client.fetch_latest(
            settings, alice, project, address=f"127.0.0.1:{server.port}", identity=BOB
        )


@pytest.mark.parametrize(
    "address",
    [
        "evil.example/v1/x?:80",
        "a@b:80",
        "host name:80",
        "[::1]/x:80",
        "1.2.3.4#:80",
        "h:८०",
    ],
)
def test_an_address_that_would_change_the_url_is_refused(address):
    from commuter.errors import ConfigError

    with pytest.raises(ConfigError, match="is not an address"):
        client.parse_address(address)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            {"status": "stored", "id": "20260101T000000-abc-123", "digest": "ab12"},
            {"status": "stored", "id": "20260101T000000-abc-123", "digest": "ab12"},
        ),
        ({"status": "\x1b[2Jimported", "id": "../../x", "digest": 5, "extra": "y"}, {}),
    ],
)
async def test_an_upload_answer_keeps_only_plain_token_fields(
    aiohttp_server, bob, tmp_path, answer, expected
):
    settings, _project = bob

    async def stored(_request: web.Request) -> web.Response:
        return web.json_response(answer)

    app = FakePeer([]).app()
    app.router.add_post("/v1/bundles", stored)
    server = await aiohttp_server(app)
    plain = tmp_path / "plain"
    plain.write_bytes(os.urandom(100))
    alice = Peers.load(settings).get("alice")
    got = await client.send_file(settings, BOB, alice, plain, f"127.0.0.1:{server.port}")
    assert got == expected


@pytest.mark.parametrize("answer", [[1, 2], "stored", None])
async def test_an_upload_answer_that_is_not_an_object_is_one_peer_error(
    aiohttp_server, bob, tmp_path, answer
):
    settings, _project = bob

    async def stored(_request: web.Request) -> web.Response:
        return web.json_response(answer)

    app = FakePeer([]).app()
    app.router.add_post("/v1/bundles", stored)
    server = await aiohttp_server(app)
    plain = tmp_path / "plain"
    plain.write_bytes(os.urandom(100))
    alice = Peers.load(settings).get("alice")
    with pytest.raises(PeerError, match="alice sent a malformed reply"):
        await client.send_file(settings, BOB, alice, plain, f"127.0.0.1:{server.port}")


async def test_a_pairing_reply_too_long_to_be_one_is_refused(aiohttp_server, bob):
    from commuter.errors import PairingFailed
    from commuter.peer import pairing

    settings, _project = bob

    async def hello(_request: web.Request) -> web.Response:
        return web.json_response({"v": 1, "spake": "A" * (8 << 20)})

    app = web.Application()
    app.router.add_post("/pair/v1/hello", hello)
    server = await aiohttp_server(app)
    code = pairing.make_code()
    with pytest.raises(PairingFailed, match="malformed reply"):
        await client.join(settings, BOB, "bob", code, f"127.0.0.1:{server.port}")


@pytest.mark.parametrize("path", ["/v1/sessions", "/v1/info"])
async def test_json_nested_too_deep_is_a_malformed_reply(aiohttp_server, bob, path):
    settings, project = bob
    deep = b"[" * 30_000 + b"]" * 30_000  # under the 64 KiB cap, far past the recursion limit

    async def answer(_request: web.Request) -> web.Response:
        return web.Response(body=deep, content_type="application/json")

    fake = FakePeer([])
    app = web.Application()
    for route, handler in (("/v1/info", fake.info), ("/v1/sessions", fake.listing)):
        app.router.add_get(route, answer if route == path else handler)
    server = await aiohttp_server(app)
    alice = Peers.load(settings).get("alice")
    with pytest.raises(PeerError, match="malformed"):
        await client.fetch_latest(
            settings, alice, project, address=f"127.0.0.1:{server.port}", identity=BOB
        )


async def test_an_error_answer_nested_too_deep_is_a_plain_peer_error(aiohttp_server, bob):
    settings, project = bob

    async def refuse(_request: web.Request) -> web.Response:
        return web.Response(status=403, body=b"[" * 50_000, content_type="application/json")

    fake = FakePeer([])
    app = web.Application()
    app.router.add_get("/v1/info", fake.info)
    app.router.add_get("/v1/sessions", refuse)
    server = await aiohttp_server(app)
    alice = Peers.load(settings).get("alice")
    with pytest.raises(PeerError, match="alice answered HTTP 403"):
        await client.fetch_latest(
            settings, alice, project, address=f"127.0.0.1:{server.port}", identity=BOB
        )
