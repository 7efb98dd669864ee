"""Pairing over HTTP: inviter listener and joiner; one attempt per code, no trust on failure."""

from __future__ import annotations

import asyncio
import json
import stat
import time

import pytest
from peerhelp import ALICE, BOB, machine

from commuter.errors import PairingFailed
from commuter.peer import client, pairing
from commuter.peer.peers import PEERS_FILE, Peers
from commuter.peer.server import Invite, make_pair_app


@pytest.fixture
def two(tmp_path):
    return machine(tmp_path / "office"), machine(tmp_path / "home")


async def _invite(aiohttp_server, settings, code, expires_in=60.0):
    invite = Invite(settings, ALICE, "office", code, time.time() + expires_in, serve_port=47001)
    server = await aiohttp_server(make_pair_app(invite))
    return invite, f"127.0.0.1:{server.port}"


async def test_right_code_pairs_both_sides(aiohttp_server, two):
    office, home = two
    code = pairing.make_code()
    invite, address = await _invite(aiohttp_server, office, code)
    joined = await client.join(home, BOB, "home", code, address, serve_port=47002)
    assert joined.public_key == ALICE.public_key and joined.name == "office"
    assert joined.last_address == "127.0.0.1:47001"
    stored = await invite.result
    assert stored.public_key == BOB.public_key and stored.name == "home"
    assert stored.last_address == "127.0.0.1:47002"
    assert Peers.load(office).get("home").device_id == BOB.device_id
    assert Peers.load(home).get(ALICE.device_id).name == "office"
    mode = stat.S_IMODE((home.config_dir / PEERS_FILE).stat().st_mode)
    assert mode == 0o600


async def test_wrong_code_fails_both_and_stores_nothing(aiohttp_server, two):
    office, home = two
    code = pairing.parse_code("7-orbit-lemon-piano")
    invite, address = await _invite(aiohttp_server, office, code)
    with pytest.raises(PairingFailed, match="wrong code"):
        await client.join(home, BOB, "home", pairing.parse_code("7-orbit-lemon-pizza"), address)
    with pytest.raises(PairingFailed, match="wrong code"):
        await invite.result
    assert Peers.load(office).all() == [] and Peers.load(home).all() == []
    # One attempt per code: even the right code is refused now.
    with pytest.raises(PairingFailed, match="already used"):
        await client.join(home, BOB, "home", code, address)
    assert Peers.load(home).all() == []


async def test_wrong_nameplate_is_a_wrong_code(aiohttp_server, two):
    office, home = two
    code = pairing.parse_code("7-orbit-lemon-piano")
    invite, address = await _invite(aiohttp_server, office, code)
    with pytest.raises(PairingFailed, match="wrong code"):
        await client.join(home, BOB, "home", pairing.parse_code("8-orbit-lemon-piano"), address)
    with pytest.raises(PairingFailed):
        await invite.result
    assert Peers.load(office).all() == []


async def test_expired_code_is_refused(aiohttp_server, two):
    office, home = two
    code = pairing.make_code()
    _unused, address = await _invite(aiohttp_server, office, code, expires_in=-1)
    with pytest.raises(PairingFailed, match="expired"):
        await client.join(home, BOB, "home", code, address)
    assert Peers.load(office).all() == [] and Peers.load(home).all() == []


async def test_no_invitation_open_is_a_clear_error(two, unused_tcp_port):
    _office, home = two
    started = time.monotonic()
    with pytest.raises(PairingFailed, match="no pairing invitation is open"):
        await client.join(home, BOB, "home", pairing.make_code(), f"127.0.0.1:{unused_tcp_port}")
    assert time.monotonic() - started < 5
    assert Peers.load(home).all() == []


async def test_pairing_against_a_serve_daemon_says_no_invitation(aiohttp_client, two):
    from commuter.peer.server import make_app

    office, home = two
    served = await aiohttp_client(make_app(office, ALICE, Peers.load(office)))
    address = f"127.0.0.1:{served.port}"
    with pytest.raises(PairingFailed, match="no pairing invitation is open"):
        await client.join(home, BOB, "home", pairing.make_code(), address)


async def test_garbage_json_and_confirm_without_hello_are_refused(aiohttp_client, two):
    office, _home = two
    code = pairing.make_code()
    invite = Invite(office, ALICE, "office", code, time.time() + 60)
    http = await aiohttp_client(make_pair_app(invite))
    resp = await http.post("/pair/v1/confirm", json={"confirm": "", "info": ""})
    assert resp.status == 403 and (await resp.json())["error"] == "pairing-failed"
    resp = await http.post("/pair/v1/hello", data=b"{not json")
    assert resp.status == 403 and (await resp.json())["error"] == "pairing-failed"
    assert not invite.used or invite.result.done()
    resp = await http.post("/pair/v1/hello", data=json.dumps({"v": 1}))
    assert resp.status == 403
    assert Peers.load(office).all() == []


async def test_a_slow_hello_in_flight_spends_the_code_for_every_other_hello(aiohttp_server, two):
    """Two hellos at once (one sending its body slowly): exactly one is ever answered."""
    office, home = two
    code = pairing.make_code()
    invite, address = await _invite(aiohttp_server, office, code)
    host, port = address.split(":")
    guess = pairing.parse_code(f"{code.nameplate}-orbit-lemon-piano")
    body = json.dumps(pairing.hello_request(guess, pairing.PairingSession(guess, "joiner")))
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            b"POST /pair/v1/hello HTTP/1.1\r\nHost: "
            + address.encode()
            + b"\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body[:10].encode()
        )
        await writer.drain()
        for _ in range(100):  # until the listener has taken up the slow hello (bounded)
            if invite.used:
                break
            await asyncio.sleep(0.01)
        with pytest.raises(PairingFailed, match="already used"):
            await client.join(home, BOB, "home", code, address)
        writer.write(body[10:].encode())
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.close()
    assert status_line.split()[1] == b"200"  # the slow hello was the one answered
    assert Peers.load(office).all() == [] and Peers.load(home).all() == []
    assert not invite.result.done()  # the attacker cannot confirm without the code


async def test_a_hello_that_is_not_json_still_spends_the_code(aiohttp_client, two):
    office, _home = two
    code = pairing.make_code()
    invite = Invite(office, ALICE, "office", code, time.time() + 60)
    http = await aiohttp_client(make_pair_app(invite))
    resp = await http.post("/pair/v1/hello", data=b"{not json")
    assert resp.status == 403
    with pytest.raises(PairingFailed, match="not JSON"):
        await asyncio.wait_for(asyncio.shield(invite.result), 5)
    resp = await http.post(
        "/pair/v1/hello", json=pairing.hello_request(code, pairing.PairingSession(code, "joiner"))
    )
    assert resp.status == 403 and "already used" in (await resp.json())["message"]


async def test_inviter_refuses_a_joiner_under_a_name_it_already_trusts(aiohttp_server, two):
    from peerhelp import EVE, trust

    office, home = two
    trust(office, "home", EVE)  # another machine is "home" on office already
    code = pairing.make_code()
    invite, address = await _invite(aiohttp_server, office, code)
    with pytest.raises(PairingFailed, match=r"run `commuter unpair home` on office") as joined:
        await client.join(home, BOB, "home", code, address)
    with pytest.raises(PairingFailed) as ended:
        await asyncio.wait_for(asyncio.shield(invite.result), 5)
    assert str(ended.value) == str(joined.value)
    assert [p.public_key for p in Peers.load(office).all()] == [EVE.public_key]
    assert Peers.load(home).all() == []


async def test_joiner_refuses_an_inviter_under_a_name_it_already_trusts(aiohttp_server, two):
    from peerhelp import EVE, trust

    office, home = two
    trust(home, "office", EVE)
    code = pairing.make_code()
    invite, address = await _invite(aiohttp_server, office, code)
    with pytest.raises(PairingFailed, match=r"run `commuter unpair office`"):
        await client.join(home, BOB, "home", code, address)
    assert [p.public_key for p in Peers.load(home).all()] == [EVE.public_key]
    # The joiner learns the inviter's name last: the inviter has stored it (the message says so).
    assert (await asyncio.wait_for(invite.result, 5)).public_key == BOB.public_key


async def test_a_hello_whose_body_stops_coming_ends_the_invite(aiohttp_server, two):
    office, _home = two
    code = pairing.make_code()
    invite = Invite(office, ALICE, "office", code, time.time() + 60, body_timeout=1.0)
    server = await aiohttp_server(make_pair_app(invite))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(
            b"POST /pair/v1/hello HTTP/1.1\r\nHost: office\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        await writer.drain()
        with pytest.raises(PairingFailed, match="the joiner's message did not arrive within 1 s"):
            await asyncio.wait_for(asyncio.shield(invite.result), 20)
        status_line = await asyncio.wait_for(reader.readline(), 10)
        assert status_line.split()[1] == b"403"
    finally:
        writer.close()
    assert Peers.load(office).all() == []


async def test_a_hello_nested_too_deep_is_not_json(aiohttp_client, two):
    office, _home = two
    invite = Invite(office, ALICE, "office", pairing.make_code(), time.time() + 60)
    http = await aiohttp_client(make_pair_app(invite))
    resp = await http.post(
        "/pair/v1/hello", data=b"[" * 30_000, headers={"Content-Type": "application/json"}
    )
    assert resp.status == 403
    assert "not JSON" in (await resp.json())["message"]
    with pytest.raises(PairingFailed, match="not JSON"):
        await asyncio.wait_for(asyncio.shield(invite.result), 5)
