"""The /v1 peer API: only paired, correctly signed senders get a sealed bundle into the inbox."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from peerhelp import (
    ALICE,
    BOB,
    CAROL,
    EVE,
    inbox_files,
    machine,
    sealed_payload,
    signed_get,
    signed_upload,
    trust,
)

from commuter.peer import auth, seal
from commuter.peer.inbox import Inbox
from commuter.peer.peers import Peers
from commuter.peer.server import make_app


@pytest.fixture
def bob_settings(tmp_path: Path):
    return machine(tmp_path / "bob")


@pytest.fixture
async def client(aiohttp_client, bob_settings):
    peers = trust(bob_settings, "alice", ALICE)
    return await aiohttp_client(make_app(bob_settings, BOB, peers, name="bob", max_body=64_000))


@pytest.fixture
async def roomy(aiohttp_client, bob_settings):
    """A receiver that takes bundles of several sealed chunks."""
    peers = trust(bob_settings, "alice", ALICE)
    return await aiohttp_client(make_app(bob_settings, BOB, peers, name="bob"))


async def test_info_is_public(client):
    resp = await client.get("/v1/info")
    assert resp.status == 200
    assert await resp.json() == {"name": "bob", "device_id": BOB.device_id, "protocol": 1}


async def test_paired_sender_lands_in_the_inbox(client, bob_settings, tmp_path):
    sealed = sealed_payload(tmp_path, ALICE, BOB)
    data = sealed.read_bytes()
    resp = await client.post("/v1/bundles", data=data, headers=signed_upload(ALICE, data))
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["status"] == "stored"
    [item] = Inbox(bob_settings).pending()
    assert item.id == body["id"]
    assert item.sender_name == "alice" and item.sender_key == ALICE.public_key
    assert item.digest == seal.read_header(sealed).digest.hex()
    assert item.sealed_path.read_bytes() == data
    out = Inbox(bob_settings).open(item, BOB, Peers.load(bob_settings), tmp_path / "out")
    plain = Path(str(sealed).removesuffix(".sealed"))
    assert out.read_bytes() == plain.read_bytes()  # noqa: ASYNC240
    Inbox(bob_settings).remove(item)
    assert inbox_files(bob_settings) == []


async def _refused(client, bob_settings, data, headers, status, code):
    if isinstance(data, bytes):  # as a file: aiohttp warns about bytes over 1 MiB (loop-blocking)
        data = io.BytesIO(data)
    resp = await client.post("/v1/bundles", data=data, headers=headers)
    assert resp.status == status, await resp.text()
    assert (await resp.json())["error"] == code
    assert inbox_files(bob_settings) == []


async def test_unpaired_sender_gets_403(client, bob_settings, tmp_path):
    data = sealed_payload(tmp_path, EVE, BOB).read_bytes()
    await _refused(client, bob_settings, data, signed_upload(EVE, data), 403, "not-paired")


async def test_unsigned_request_gets_401(client, bob_settings, tmp_path):
    data = sealed_payload(tmp_path, ALICE, BOB).read_bytes()
    await _refused(client, bob_settings, data, {}, 401, "bad-signature")


async def test_bad_signature_gets_401(client, bob_settings, tmp_path):
    data = sealed_payload(tmp_path, ALICE, BOB).read_bytes()
    headers = signed_upload(ALICE, data)
    headers[auth.H_NONCE] = headers[auth.H_NONCE] + "x"
    await _refused(client, bob_settings, data, headers, 401, "bad-signature")


async def test_body_swapped_under_a_signature_gets_401(client, bob_settings, tmp_path):
    data = sealed_payload(tmp_path, ALICE, BOB).read_bytes()
    other = sealed_payload(tmp_path, ALICE, BOB).read_bytes()
    await _refused(client, bob_settings, other, signed_upload(ALICE, data), 401, "bad-signature")


async def test_replayed_request_gets_401(client, bob_settings, tmp_path):
    data = sealed_payload(tmp_path, ALICE, BOB).read_bytes()
    headers = signed_upload(ALICE, data)
    first = await client.post("/v1/bundles", data=data, headers=headers)
    assert first.status == 200
    again = await client.post("/v1/bundles", data=data, headers=headers)
    assert again.status == 401
    assert (await again.json())["error"] == "replayed"
    assert len(Inbox(bob_settings).pending()) == 1


async def test_tampered_ciphertext_is_refused(client, bob_settings, tmp_path):
    data = bytearray(sealed_payload(tmp_path, ALICE, BOB).read_bytes())
    data[-5] ^= 1
    await _refused(
        client, bob_settings, bytes(data), signed_upload(ALICE, bytes(data)), 400, "bad-bundle"
    )


async def test_garbage_body_is_refused(client, bob_settings):
    data = b'{"not": "a bundle"}'
    await _refused(client, bob_settings, data, signed_upload(ALICE, data), 400, "bad-bundle")


async def test_bundle_sealed_by_someone_else_is_refused(client, bob_settings, tmp_path):
    trust(bob_settings, "eve", EVE)
    data = sealed_payload(tmp_path, EVE, BOB).read_bytes()
    await _refused(client, bob_settings, data, signed_upload(ALICE, data), 401, "bad-signature")


async def test_bundle_for_another_machine_is_refused(client, bob_settings, tmp_path):
    data = sealed_payload(tmp_path, ALICE, EVE).read_bytes()
    await _refused(client, bob_settings, data, signed_upload(ALICE, data), 400, "bad-bundle")


async def test_oversized_body_gets_413(client, bob_settings, tmp_path):
    data = sealed_payload(tmp_path, ALICE, BOB, size=100_000).read_bytes()
    await _refused(client, bob_settings, data, signed_upload(ALICE, data), 413, "too-large")


async def test_oversized_chunked_body_gets_413(client, bob_settings, tmp_path):
    data = sealed_payload(tmp_path, ALICE, BOB, size=100_000).read_bytes()

    async def chunks():
        for i in range(0, len(data), 10_000):
            yield data[i : i + 10_000]

    await _refused(client, bob_settings, chunks(), signed_upload(ALICE, data), 413, "too-large")


async def test_sessions_need_pairing_and_a_signature(client):
    resp = await client.get("/v1/sessions", headers=signed_get(EVE, "/v1/sessions"))
    assert resp.status == 403
    resp = await client.get("/v1/sessions")
    assert resp.status == 401
    resp = await client.get("/v1/sessions", headers=signed_get(ALICE, "/v1/sessions"))
    assert resp.status == 200
    assert await resp.json() == {"sessions": []}


async def test_signature_is_bound_to_the_query(client):
    headers = signed_get(ALICE, "/v1/sessions?project=%2Fa")
    resp = await client.get("/v1/sessions?project=%2Fb", headers=headers)
    assert resp.status == 401


async def test_unknown_session_bundle_is_404_json(client):
    path = "/v1/sessions/nope/bundle"
    resp = await client.get(path, headers=signed_get(ALICE, path))
    assert resp.status == 404
    assert (await resp.json())["error"] == "no-session"


async def test_unknown_route_is_json_404(client):
    resp = await client.get("/v2/whatever")
    assert resp.status == 404
    assert "error" in await resp.json()


async def test_body_cut_at_a_frame_boundary_is_refused(roomy, bob_settings, tmp_path):
    data = sealed_payload(tmp_path, ALICE, BOB, size=2 * seal.CHUNK + 10).read_bytes()
    cut = data[: _frame_ends(data)[0]]  # a complete first frame, then nothing
    await _refused(roomy, bob_settings, cut, signed_upload(ALICE, cut), 400, "bad-bundle")


async def test_body_cut_inside_a_frame_is_refused(roomy, bob_settings, tmp_path):
    data = sealed_payload(tmp_path, ALICE, BOB, size=2 * seal.CHUNK).read_bytes()[:-100]
    await _refused(roomy, bob_settings, data, signed_upload(ALICE, data), 400, "bad-bundle")


async def test_trailing_bytes_after_the_final_frame_are_refused(client, bob_settings, tmp_path):
    data = sealed_payload(tmp_path, ALICE, BOB).read_bytes()
    for tail in (b"x", b"\x00\x00\x00\x20" + bytes(32)):
        body = data + tail
        resp = await client.post("/v1/bundles", data=body, headers=signed_upload(ALICE, body))
        assert resp.status == 400, await resp.text()
        assert "trailing" in (await resp.json())["message"]
    assert inbox_files(bob_settings) == []


async def test_frames_spliced_from_another_seal_are_refused(client, bob_settings, tmp_path):
    one = sealed_payload(tmp_path, ALICE, BOB).read_bytes()
    two = sealed_payload(tmp_path, ALICE, BOB).read_bytes()
    head = _frame_starts(one)[0]
    spliced = one[:head] + two[_frame_starts(two)[0] :]
    await _refused(client, bob_settings, spliced, signed_upload(ALICE, spliced), 400, "bad-bundle")


def _frame_starts(data: bytes) -> list[int]:
    """Offsets of every frame's length prefix in a sealed file."""
    size = seal.header_size(data[: len(seal.MAGIC) + 4])
    pos = len(seal.MAGIC) + 4 + size + 64
    starts = []
    while pos < len(data):
        starts.append(pos)
        pos += 4 + int.from_bytes(data[pos : pos + 4], "big")
    return starts


def _frame_ends(data: bytes) -> list[int]:
    return [*_frame_starts(data)[1:], len(data)]


async def test_any_port_on_all_interfaces_is_one_port_for_every_family():
    from aiohttp import web

    from commuter.peer.server import start_site

    for _ in range(4):  # the order of aiohttp's sockets varies: try it a few times
        runner, bound = await start_site(web.Application(), None, 0)
        try:
            ports = {int(a[1]) for a in runner.addresses if isinstance(a, tuple)}
            assert ports == {bound}
        finally:
            await runner.cleanup()


async def test_a_request_signed_for_one_peer_is_refused_by_another(aiohttp_client, tmp_path):
    """Alice is paired with Bob and Carol: what she signed for Bob cannot be replayed to Carol."""
    b_settings, c_settings = machine(tmp_path / "b"), machine(tmp_path / "c")
    bob = await aiohttp_client(make_app(b_settings, BOB, trust(b_settings, "alice", ALICE)))
    carol = await aiohttp_client(make_app(c_settings, CAROL, trust(c_settings, "alice", ALICE)))
    plain = tmp_path / "plain"
    plain.write_bytes(b"both may open this" * 100)
    sealed = tmp_path / "both.sealed"
    seal.seal_file(plain, sealed, ALICE, [BOB.public_key, CAROL.public_key])
    data = sealed.read_bytes()
    for_bob = signed_upload(ALICE, data, to=BOB)
    assert for_bob[auth.H_TO] == BOB.device_id
    resp = await carol.post("/v1/bundles", data=data, headers=for_bob)
    assert resp.status == 401, await resp.text()
    answer = await resp.json()
    assert answer["error"] == "bad-signature"
    assert answer["message"] == (
        f"request is addressed to {BOB.device_id}, not to this machine ({CAROL.device_id})"
    )
    assert inbox_files(c_settings) == []
    resp = await bob.post("/v1/bundles", data=data, headers=for_bob)
    assert resp.status == 200, await resp.text()

    listing = signed_get(ALICE, "/v1/sessions", to=BOB)
    resp = await carol.get("/v1/sessions", headers=listing)
    assert resp.status == 401 and (await resp.json())["error"] == "bad-signature"
    resp = await bob.get("/v1/sessions", headers=listing)
    assert resp.status == 200


async def test_a_request_naming_no_recipient_is_refused(client, tmp_path):
    data = sealed_payload(tmp_path, ALICE, BOB).read_bytes()
    headers = signed_upload(ALICE, data)
    del headers[auth.H_TO]
    resp = await client.post("/v1/bundles", data=data, headers=headers)
    assert resp.status == 401 and (await resp.json())["error"] == "bad-signature"


async def test_a_request_signed_for_the_relay_is_refused_by_a_peer(client):
    resp = await client.get("/v1/sessions", headers=auth.sign_headers(ALICE, "GET", "/v1/sessions"))
    assert resp.status == 401 and (await resp.json())["error"] == "bad-signature"


@pytest.fixture
def pids():
    """(pid of a process that has exited, pid of one that runs until the test ends)."""
    import subprocess
    import sys

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield int(dead.stdout), live.pid
    live.kill()
    live.wait(timeout=10)


async def test_startup_removes_what_a_killed_daemon_left_in_the_inbox(
    aiohttp_client, tmp_path, pids
):
    import os
    import time

    dead_pid, live_pid = pids
    settings = machine(tmp_path / "bob")
    inbox = settings.inbox_dir
    inbox.mkdir(parents=True)
    leftovers = [
        f".incoming.cm{dead_pid}-0.0123456789abcdef.tmp",  # killed mid-body
        ".incoming-0123456789abcdef.tmp",
    ]  # an earlier version's, hours old
    kept = [
        f".incoming.cm{live_pid}-0.fedcba9876543210.tmp",  # a live daemon's upload
        ".incoming-fedcba9876543210.tmp",  # untagged but fresh: maybe still running
        ".incoming-notmine.tmp",
        "notes.txt",
        "20260101T000000-abc.sealed",
    ]
    for name in leftovers + kept:
        (inbox / name).write_bytes(b"x" * 1000)
    hours_ago = time.time() - 3 * 3600
    os.utime(inbox / leftovers[1], (hours_ago, hours_ago))
    logged: list[str] = []
    app = make_app(settings, BOB, Peers.load(settings), name="bob", log=logged.append)
    client = await aiohttp_client(app)
    assert (await client.get("/v1/info")).status == 200
    assert inbox_files(settings) == sorted(kept)
    assert logged == ["removed 2 unfinished upload(s) left in the inbox by a stopped daemon"]


async def test_the_inbox_temp_name_carries_the_process_tag(tmp_path):
    from commuter.fsutil import process_tag

    tmp = Inbox(machine(tmp_path / "bob")).temp_path()
    assert tmp.name.startswith(f".incoming.cm{process_tag()}.") and tmp.suffix == ".tmp"
