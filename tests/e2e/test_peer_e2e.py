"""Real claude: a session made at A is paired-sent to B over loopback and resumed; C is refused."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from commuter.peer.identity import Identity
from commuter.peer.peers import Peer, Peers
from commuter.settings import Settings

from .fake_model import FakeModel
from .harness import check, run_claude, session_files

pytestmark = pytest.mark.e2e


def _env(home: Path) -> dict[str, str]:
    return {
        "HOME": str(home),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "COMMUTER_MDNS_INTERFACES": "127.0.0.1",
    }


def commuter(home: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "commuter", *args],
        cwd=cwd,
        env=_env(home),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"{proc.args}\n{proc.stdout}\n{proc.stderr}"
    return proc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_pair_send_receive_resume_and_stranger_refused(
    tmp_path: Path, claude_bin: Path, fake_model: FakeModel
) -> None:
    home_a, home_b, home_c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    proj_a, proj_b = home_a / "src" / "app", home_b / "work" / "app"
    for d in (proj_a, proj_b, home_c):
        d.mkdir(parents=True)
    check(run_claude(claude_bin, home_a, proj_a, ["-p", "Remember LIME-55."], fake_model.base_url))
    [transcript_a] = session_files(home_a, proj_a)
    sid = transcript_a.stem

    ok(commuter(home_a, home_a, "config", "set", "name", "a"))
    ok(commuter(home_b, home_b, "config", "set", "name", "b"))
    ok(
        commuter(
            home_b, home_b, "config", "set", "path-map", str(home_a / "src"), str(home_b / "work")
        )
    )
    inviter = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "commuter",
            "pair",
            "--json",
            "--timeout",
            "60",
            "--host",
            "127.0.0.1",
            "--no-mdns",
        ],
        cwd=home_b,
        env=_env(home_b),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert inviter.stdout is not None
        invite = json.loads(inviter.stdout.readline())
        ok(commuter(home_a, home_a, "pair", invite["code"], "--address", invite["address"]))
        _out, err = inviter.communicate(timeout=30)
    finally:
        if inviter.poll() is None:
            inviter.kill()
            inviter.communicate()
    assert inviter.returncode == 0, err

    # C knows B's key but B never paired with C.
    b_key = Identity.load_or_create(Settings.from_env(_env(home_b))).public_key
    c_peers = Peers.load(Settings.from_env(_env(home_c)))
    c_peers.add(Peer.new("b", b_key))
    c_peers.save()

    port = _free_port()
    receiver = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "commuter",
            "receive",
            "--timeout",
            "90",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-mdns",
        ],
        cwd=home_b,
        env=_env(home_b),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    try:
        assert receiver.stdout is not None
        assert "serving as b" in receiver.stdout.readline()
        address = f"127.0.0.1:{port}"
        check(
            run_claude(claude_bin, home_c, home_c, ["-p", "Remember EVIL-1."], fake_model.base_url)
        )
        refused = commuter(home_c, home_c, "send", "b", "--latest", "--address", address)
        assert refused.returncode == 1
        [line] = refused.stderr.strip().splitlines()
        assert "not paired" in line
        sent = ok(commuter(home_a, proj_a, "send", "b", "--latest", "--address", address))
        assert sid in sent.stdout
        out, err = receiver.communicate(timeout=60)
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.communicate()
    assert receiver.returncode == 0, err
    assert f"claude --resume {sid}" in out
    assert "from a (" in out
    [transcript_b] = session_files(home_b, proj_b)
    assert transcript_b.stem == sid

    fake_model.clear()
    resumed = check(
        run_claude(
            claude_bin, home_b, proj_b, ["-p", "--continue", "Which codeword?"], fake_model.base_url
        )
    )
    assert resumed.stdout.strip() == "Codewords seen: LIME-55."
    assert fake_model.session_ids() == [sid]
