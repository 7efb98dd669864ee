"""`commuter serve --auto-import` in a subprocess: a session sent A -> B is imported on arrival."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from claude_home import TOOLS, install, transcript
from peerhelp import ALICE, inbox_files, machine, sealed_payload, trust

from commuter import config, core
from commuter.peer import client
from commuter.peer.identity import Identity
from commuter.peer.inbox import Inbox
from commuter.peer.peers import Peers
from commuter.settings import Settings

READY_TIMEOUT = 30.0


def _env(home: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("XDG_", "COMMUTER_")) and k != "CLAUDE_CONFIG_DIR"
    }
    env.update(HOME=str(home), USER="tester", COMMUTER_MDNS_INTERFACES="127.0.0.1")
    return env


def _wait_ready(proc: subprocess.Popen[bytes], address: str, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"serve exited with {proc.returncode}: {log.read_text()}")
        try:
            with urllib.request.urlopen(f"http://{address}/v1/info", timeout=2) as resp:
                if json.load(resp)["name"] == "bob":
                    return
        except OSError:
            pass
        time.sleep(0.05)
    pytest.fail(f"serve was not ready within {READY_TIMEOUT:g} s: {log.read_text()}")


@pytest.fixture
def machines(tmp_path: Path) -> tuple[Settings, Settings, Identity]:
    """A (a real Claude home, key ALICE) and B (empty), paired both ways; B's key is its own."""
    a_home = install(tmp_path / "A")
    sa = machine(a_home)
    sb = machine(tmp_path / "B")
    (sb.home / "code" / "my.app").mkdir(parents=True)
    config.set_value(sb, "path-map", (str(a_home / "projects"), str(sb.home / "code")))
    config.set_value(sb, "name", ("bob",))
    bob = Identity.load_or_create(sb)
    trust(sa, "bob", bob)
    trust(sb, "alice", ALICE)
    return sa, sb, bob


@pytest.fixture
def serve_b(machines, tmp_path: Path, unused_tcp_port: int) -> Iterator[tuple[str, Path]]:
    """B's `commuter serve --auto-import` on loopback; (address, its log) while it runs."""
    _sa, sb, _bob = machines
    address = f"127.0.0.1:{unused_tcp_port}"
    log = tmp_path / "serve-b.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "commuter",
                "serve",
                "--auto-import",
                "--no-mdns",
                "--host",
                "127.0.0.1",
                "--port",
                str(unused_tcp_port),
            ],
            env=_env(sb.home),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )
    try:
        _wait_ready(proc, address, log)
        yield address, log
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _export(settings: Settings, tmp: Path, session: str) -> Path:
    out = tmp / f"{session}.bundle"
    with out.open("wb") as fh:
        core.export_to(settings, fh, session=session)
    return out


async def test_sent_session_is_imported_on_arrival_and_the_inbox_is_emptied(
    machines, serve_b, tmp_path
):
    sa, sb, _bob = machines
    address, log = serve_b
    imported = transcript(sb.home, sb.home / "code" / "my.app", TOOLS)
    assert not imported.exists()
    bundle = await asyncio.to_thread(_export, sa, tmp_path, TOOLS)
    bob = Peers.load(sa).get("bob")
    answer = await asyncio.wait_for(client.send_file(sa, ALICE, bob, bundle, address), 60)
    # The daemon answers only after its on_received hook (the import) has run.
    assert answer["status"] == "imported", log.read_text()
    assert imported.is_file(), log.read_text()
    assert imported.stat().st_size > 0
    assert Inbox(sb).pending() == []
    assert inbox_files(sb) == [], log.read_text()
    text = log.read_text()
    assert "from alice" in text and "kept" not in text
    assert "Traceback" not in text


async def test_a_bundle_that_cannot_be_imported_stays_in_the_inbox(machines, serve_b, tmp_path):
    sa, sb, bob_key = machines
    address, log = serve_b
    # Sealed correctly by a paired sender, so the daemon stores it, but not a bundle inside.
    junk = sealed_payload(tmp_path, ALICE, bob_key, size=5000)
    bob = Peers.load(sa).get("bob")
    async with client.PeerClient(sa, ALICE, bob, address) as c:
        answer = await asyncio.wait_for(c.upload(junk), 60)
    assert answer["status"] == "stored"  # kept for `commuter pull`, not "imported"
    [item] = Inbox(sb).pending()
    assert item.sender_name == "alice"
    assert f"kept {item.id} in the inbox" in log.read_text()
    assert not (sb.home / ".claude" / "projects").exists() or not any(
        (sb.home / ".claude" / "projects").rglob("*.jsonl")
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serve_stops_quietly_on_sigterm_and_ctrl_c(machines, tmp_path, unused_tcp_port, signum):
    """A service manager's SIGTERM (or Ctrl-C) ends `serve` with exit 0 and no error line."""
    _sa, sb, _bob = machines
    address = f"127.0.0.1:{unused_tcp_port}"
    log = tmp_path / "serve.log"
    err = tmp_path / "serve.err"
    with log.open("wb") as out, err.open("wb") as errors:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "commuter",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(unused_tcp_port),
            ],
            env=_env(sb.home),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=errors,
        )
    try:
        _wait_ready(proc, address, log)
        proc.send_signal(signum)
        assert proc.wait(15) == 0, err.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert err.read_text() == ""
    assert log.read_text().splitlines()[-1] == "stopped"
