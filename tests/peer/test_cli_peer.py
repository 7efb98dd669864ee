"""Peer CLI in subprocesses: id, pair (by address and by mDNS), peers, unpair, send errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from peerhelp import ALICE, trust

from commuter.errors import ExitStatus
from commuter.peer.peers import Peers
from commuter.settings import Settings

TIMEOUT = 60


def env_for(home: Path, **extra: str) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("XDG_", "COMMUTER_")) and k != "CLAUDE_CONFIG_DIR"
    }
    env.update(HOME=str(home), USER="tester", COMMUTER_MDNS_INTERFACES="127.0.0.1")
    env.update(extra)
    return env


def run(env: dict[str, str], *args: str, cwd: Path | None = None):
    return subprocess.run(
        [sys.executable, "-m", "commuter", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=cwd,
        check=False,
    )


def settings_of(env: dict[str, str]) -> Settings:
    return Settings.from_env(env)


def one_error_line(result: subprocess.CompletedProcess[str], needle: str, status: int = 1) -> None:
    assert result.returncode == status, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert needle in lines[0]
    assert "Traceback" not in result.stderr


def test_id_prints_name_device_id_and_fingerprint(tmp_path):
    env = env_for(tmp_path / "a")
    assert run(env, "config", "set", "name", "office").returncode == 0
    result = run(env, "id", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["name"] == "office"
    assert len(data["device_id"].split("-")) == 4 and ":" in data["fingerprint"]
    again = json.loads(run(env, "id", "--json").stdout)
    assert again == data
    text = run(env, "id").stdout
    assert "office" in text and data["device_id"] in text


def _invite(env: dict[str, str], *extra: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "commuter", "pair", "--json", "--timeout", "30", *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        pytest.fail(f"inviter printed nothing: {proc.communicate(timeout=10)}")
    return proc, json.loads(line)


def _finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=10)
        raise
    return proc.returncode, out, err


def test_pair_by_address_then_peers_and_unpair(tmp_path):
    office, home = env_for(tmp_path / "office"), env_for(tmp_path / "home")
    run(office, "config", "set", "name", "office")
    run(home, "config", "set", "name", "home")
    proc, invite = _invite(office, "--host", "127.0.0.1", "--no-mdns")
    assert invite["address"].startswith("127.0.0.1:")
    joined = run(home, "pair", invite["code"], "--address", invite["address"])
    rc, out, err = _finish(proc)
    assert joined.returncode == 0, joined.stderr
    assert "paired with office" in joined.stdout
    assert rc == 0, err
    assert json.loads(out.strip().splitlines()[-1])["paired"]["name"] == "home"
    office_id = json.loads(run(office, "id", "--json").stdout)["device_id"]
    assert Peers.load(settings_of(home)).get("office").device_id == office_id
    listed = json.loads(run(home, "peers", "--json", "--no-scan").stdout)
    assert [p["name"] for p in listed["paired"]] == ["office"]
    gone = run(home, "unpair", "office")
    assert gone.returncode == 0 and Peers.load(settings_of(home)).all() == []
    one_error_line(run(home, "unpair", "office"), "no paired peer named 'office'")


def test_pair_with_wrong_code_fails_on_both_sides(tmp_path):
    office, home = env_for(tmp_path / "office"), env_for(tmp_path / "home")
    proc, invite = _invite(office, "--host", "127.0.0.1", "--no-mdns")
    number, *words = invite["code"].split("-")
    words[-1] = "zebra" if words[-1] != "zebra" else "yacht"
    joined = run(home, "pair", "-".join([number, *words]), "--address", invite["address"])
    rc, _out, err = _finish(proc)
    one_error_line(joined, "pairing failed: wrong code")
    assert rc == 1 and "pairing failed: wrong code" in err and "Traceback" not in err
    assert Peers.load(settings_of(office)).all() == [] and Peers.load(settings_of(home)).all() == []


@pytest.mark.mdns
def test_pair_finds_the_inviter_by_mdns(tmp_path):
    office, home = env_for(tmp_path / "office"), env_for(tmp_path / "home")
    run(office, "config", "set", "name", "office")
    proc, invite = _invite(office, "--host", "127.0.0.1")
    joined = run(home, "pair", invite["code"])
    rc, _out, err = _finish(proc)
    assert joined.returncode == 0, joined.stderr
    assert rc == 0, err
    address = Peers.load(settings_of(home)).get("office").last_address
    assert address is not None and address.startswith("127.0.0.1:")


def test_join_with_no_invitation_open_is_one_clear_line(tmp_path, unused_tcp_port):
    home = env_for(tmp_path / "home", COMMUTER_MDNS_INTERFACES="127.0.0.1")
    started = time.monotonic()
    result = run(home, "pair", "7-orbit-lemon-piano", "--address", f"127.0.0.1:{unused_tcp_port}")
    one_error_line(
        result, f"no pairing invitation is open at 127.0.0.1:{unused_tcp_port} (connection refused)"
    )
    assert time.monotonic() - started < 15
    assert not (settings_of(home).config_dir / "peers.json").exists()


def test_bad_code_is_one_clear_line(tmp_path):
    result = run(env_for(tmp_path / "home"), "pair", "not-a-code", "--address", "127.0.0.1:1")
    one_error_line(result, "is not a pairing code")


def test_a_mistyped_peer_name_is_one_line_with_a_suggestion(tmp_path):
    env = env_for(tmp_path / "home")
    trust(settings_of(env), "office", ALICE)
    for wrong, args in (
        ("offce", ("unpair", "offce")),
        ("Ofice", ("send", "Ofice", "--latest")),
        ("offfice", ("pull", "--from", "offfice")),
    ):
        result = run(env, *args)
        one_error_line(result, f"Error: no paired peer named {wrong!r}; did you mean 'office'?")
        assert result.stderr.count("(") == 0 and "pair` first" not in result.stderr
    far = run(env, "unpair", "printer")
    one_error_line(far, "Error: no paired peer named 'printer' (see `commuter peers`)")
    assert far.stderr.strip().endswith("(see `commuter peers`)")
    assert [p.name for p in Peers.load(settings_of(env)).all()] == ["office"]


def test_send_to_unpaired_name_is_one_clear_line(tmp_path):
    one_error_line(
        run(env_for(tmp_path / "home"), "send", "nobody", "--latest"),
        "no paired peer named 'nobody' (this machine has no paired peers; run `commuter pair`)",
    )


def test_send_to_unreachable_peer_fails_fast(tmp_path, unused_tcp_port):
    from claude_home import PLAIN, install

    home_dir = install(tmp_path / "home")
    env = env_for(home_dir)
    trust(settings_of(env), "office", ALICE, f"127.0.0.1:{unused_tcp_port}")
    started = time.monotonic()
    result = run(env, "send", "office", PLAIN, "--address", f"127.0.0.1:{unused_tcp_port}")
    # aiohttp's "Cannot connect to host ... [Connect call failed ...]" shrinks to its reason,
    # and --address is not suggested to someone who passed it.
    one_error_line(
        result,
        f"Error: office is unreachable at 127.0.0.1:{unused_tcp_port} "
        "(connection refused); is `commuter serve` running there?",
        ExitStatus.UNREACHABLE,
    )
    assert result.stderr.strip().endswith("running there?")
    assert time.monotonic() - started < 15
    assert [p for p in settings_of(env).staging_root.rglob("*") if not p.is_dir()] == []
    remembered = run(env, "send", "office", PLAIN)  # mDNS finds nothing: the last address
    one_error_line(
        remembered,
        "(connection refused); is `commuter serve` running there? (or pass --address HOST:PORT)",
        ExitStatus.UNREACHABLE,
    )
    assert remembered.stderr.count(f"127.0.0.1:{unused_tcp_port}") == 1


def test_send_bad_address_is_one_clear_line(tmp_path):
    env = env_for(tmp_path / "home")
    trust(settings_of(env), "office", ALICE)
    one_error_line(run(env, "send", "office", "--address", "nowhere"), "is not an address")


async def test_send_to_a_peer_that_never_answers_is_one_line_within_seconds(tmp_path):
    import asyncio

    from claude_home import PLAIN, install

    held: list[asyncio.StreamWriter] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # accept, read, never answer
        while await reader.read(1 << 16):
            pass

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        env = env_for(install(tmp_path / "home"))
        trust(settings_of(env), "office", ALICE)
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "commuter",
            "send",
            "office",
            PLAIN,
            "--address",
            address,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        elapsed = time.monotonic() - started
        assert proc.returncode is not None
        result = subprocess.CompletedProcess("send", proc.returncode, out.decode(), err.decode())
        one_error_line(result, f"office at {address} did not answer within", ExitStatus.UNREACHABLE)
        assert held, "send did connect"
        assert elapsed < 10
        assert [p for p in settings_of(env).staging_root.rglob("*") if not p.is_dir()] == []
    finally:
        for writer in held:
            writer.close()
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)


def test_receive_timeout_is_one_error_line(tmp_path):
    env = env_for(tmp_path / "home")
    started = time.monotonic()
    result = run(
        env, "receive", "--timeout", "1", "--host", "127.0.0.1", "--port", "0", "--no-mdns"
    )
    one_error_line(result, "no bundle arrived within 1 s")
    assert time.monotonic() - started < 15
    assert "serving as" in result.stdout  # the daemon's own line goes to stdout


def test_pair_timeout_expires_with_one_error_line(tmp_path):
    env = env_for(tmp_path / "office")
    started = time.monotonic()
    result = run(env, "pair", "--timeout", "1", "--host", "127.0.0.1", "--no-mdns")
    one_error_line(result, "pairing failed: no one joined within 1 s (code expired)")
    assert time.monotonic() - started < 15
    assert "pairing code:" in result.stdout
    # Without mDNS the joiner cannot find this machine by the code alone: the line to copy
    # carries the address.
    [run_line] = [ln for ln in result.stdout.splitlines() if "on the other machine" in ln]
    assert re.search(r"commuter pair \d+(-\w+)+ --address 127\.0\.0\.1:\d+$", run_line)
    assert not (settings_of(env).config_dir / "peers.json").exists()


def test_pair_with_a_hello_whose_body_never_comes_ends_on_time_and_says_so(tmp_path):
    import socket

    env = env_for(tmp_path / "office")
    started = time.monotonic()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "commuter",
            "pair",
            "--json",
            "--timeout",
            "2",
            "--host",
            "127.0.0.1",
            "--no-mdns",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    assert proc.stdout is not None
    invite = json.loads(proc.stdout.readline() or "{}")
    host, port = invite["address"].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as joiner:
        joiner.sendall(
            b"POST /pair/v1/hello HTTP/1.1\r\nHost: office\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        )
        try:
            out, err = proc.communicate(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate(timeout=10)
            raise
    elapsed = time.monotonic() - started
    result = subprocess.CompletedProcess("pair", proc.returncode, out, err)
    one_error_line(
        result, "pairing failed: a joiner connected but did not finish within 2 s (code expired)"
    )
    assert elapsed < 15
    assert not (settings_of(env).config_dir / "peers.json").exists()
