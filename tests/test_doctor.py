"""`commuter doctor` finds what can fail: a missing or unwritable transfer dir, a relay that
does not answer, peers offline, no agent at all; it exits 1 when something needed is broken
and never calls a config file that does not exist "ok"."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent / "transports"))
sys.path.insert(0, str(Path(__file__).parent / "relay"))
sys.path.insert(0, str(Path(__file__).parent / "peer"))

from claude_home import install
from peerhelp import ServeProcess
from relayhelp import RelayProcess
from transhelp import BOB, env_for, give_identity, make_world, run, trust

from commuter import config
from commuter.peer.peers import Peers
from commuter.settings import Settings


def checks(result) -> dict[str, dict[str, Any]]:
    return {c["check"]: c for c in json.loads(result.stdout)}


def _unpair(settings: Settings, name: str) -> None:
    peers = Peers.load(settings)
    peers.remove(name)
    peers.save()


@pytest.fixture
def world(tmp_path):
    w = make_world(tmp_path)
    return w, env_for(w.a.home), env_for(w.b.home)


def test_no_config_file_is_not_called_ok(tmp_path: Path) -> None:
    home = install(tmp_path / "h")
    env = env_for(home)
    result = run(env, "doctor", "--json", "--offline")
    assert result.returncode == 0, result.stdout
    found = checks(result)
    assert found["config"]["status"] == "info" and found["config"]["ok"] is False
    assert "no config file yet" in found["config"]["detail"]
    human = run(env, "doctor", "--offline").stdout.splitlines()
    [line] = [x for x in human if x[6:].startswith("config  ")]
    assert not line.startswith("ok")


def test_a_missing_transfer_dir_fails_and_says_it_may_not_be_mounted(world) -> None:
    w, env_a, _ = world
    w.shared.rmdir()
    result = run(env_a, "doctor", "--offline")
    assert result.returncode == 1
    [line] = [x for x in result.stdout.splitlines() if "transfer-dir" in x]
    assert line.startswith("FAIL") and "does not exist" in line and "mounted" in line


def test_a_transfer_dir_that_is_not_a_writable_folder_fails(world) -> None:
    w, env_a, _ = world
    w.shared.rmdir()
    w.shared.write_text("a file, not a folder")
    result = run(env_a, "doctor", "--json", "--offline")
    assert result.returncode == 1
    assert checks(result)["transfer-dir"]["status"] == "fail"
    assert "is not a folder" in checks(result)["transfer-dir"]["detail"]


def test_a_writable_transfer_dir_is_ok_and_the_probe_leaves_nothing(world) -> None:
    w, env_a, _ = world
    result = run(env_a, "doctor", "--json", "--offline")
    assert result.returncode == 0, result.stdout
    assert checks(result)["transfer-dir"]["status"] == "ok"
    assert list(w.shared.iterdir()) == []


def test_relay_unreachable_fails_and_a_live_one_is_ok(world, tmp_path, unused_tcp_port) -> None:
    w, env_a, _ = world
    config.set_value(w.a, "relay", (f"http://127.0.0.1:{unused_tcp_port}",))
    _unpair(w.a, "bob")  # only the relay here
    down = run(env_a, "doctor", "--json")
    assert down.returncode == 1
    assert checks(down)["relay"]["status"] == "fail"
    assert "unreachable" in checks(down)["relay"]["detail"]
    relay = RelayProcess(tmp_path / "relay-data", tmp_path / "relayhome")
    try:
        config.set_value(w.a, "relay", (relay.url,))
        up = run(env_a, "doctor", "--json")
        assert up.returncode == 0, up.stdout
        assert checks(up)["relay"]["status"] == "ok"
    finally:
        relay.kill()


def test_peers_offline_are_a_warning_and_online_ones_ok(world, unused_tcp_port) -> None:
    w, env_a, env_b = world
    trust(w.a, "bob", BOB, f"127.0.0.1:{unused_tcp_port}")
    offline = run(env_a, "doctor", "--json")
    assert offline.returncode == 0  # an asleep peer is not a broken machine
    assert checks(offline)["peer bob"]["status"] == "warn"
    assert "offline" in checks(offline)["peer bob"]["detail"]
    serve = ServeProcess(env_b)
    try:
        trust(w.a, "bob", BOB, serve.address)
        online = run(env_a, "doctor", "--json")
        assert checks(online)["peer bob"]["status"] == "ok", online.stdout
        assert serve.address in checks(online)["peer bob"]["detail"]
    finally:
        serve.kill()


def test_no_agent_at_all_fails(tmp_path: Path) -> None:
    home = tmp_path / "empty"
    env = env_for(home)
    give_identity(Settings.from_env(env), BOB)
    result = run(env, "doctor", "--json", "--offline")
    assert result.returncode == 1
    assert checks(result)["agents"]["status"] == "fail"
    assert checks(result)["keys"]["status"] == "ok"
