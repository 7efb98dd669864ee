"""A machine cannot pair with itself: the code joined from the machine that made it (or one
with the same key) fails on both sides with one line, and neither stores anything."""

from __future__ import annotations

import time

import pytest
from peerhelp import ALICE, machine
from test_cli_peer import _finish, _invite, env_for, one_error_line, run, settings_of

from commuter.errors import PairingFailed
from commuter.peer import client, pairing
from commuter.peer.peers import Peers
from commuter.peer.server import Invite, make_pair_app


def test_joining_ones_own_code_is_one_line_on_both_sides_and_nothing_is_saved(tmp_path):
    env = env_for(tmp_path / "office")
    proc, invite = _invite(env, "--host", "127.0.0.1", "--no-mdns")
    joined = run(env, "pair", invite["code"], "--address", invite["address"], "--no-mdns")
    rc, out, err = _finish(proc)
    one_error_line(joined, "the other side is this machine itself")
    assert rc == 1 and err.count("\n") == 1 and "this machine itself" in err, err
    assert "paired" not in out
    assert Peers.load(settings_of(env)).all() == []


async def test_another_home_with_the_same_key_is_refused_too(aiohttp_server, tmp_path):
    office, copy = machine(tmp_path / "office"), machine(tmp_path / "copy")
    code = pairing.make_code()
    invite = Invite(office, ALICE, "office", code, time.time() + 60, serve_port=47001)
    server = await aiohttp_server(make_pair_app(invite))
    with pytest.raises(PairingFailed, match="this machine itself"):
        await client.join(copy, ALICE, "copy", code, f"127.0.0.1:{server.port}")
    with pytest.raises(PairingFailed, match="this machine itself"):
        await invite.result
    assert Peers.load(office).all() == [] and Peers.load(copy).all() == []


def test_the_check_compares_keys():
    other = pairing.PeerInfo("home", b"\x01" * 32, (), 47474)
    pairing.refuse_itself(b"\x02" * 32, other)
    with pytest.raises(PairingFailed, match="itself"):
        pairing.refuse_itself(b"\x01" * 32, other)
