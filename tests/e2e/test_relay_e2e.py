"""Real claude: home pushes a session through a relay subprocess, office pulls and continues it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from commuter.peer.identity import Identity
from commuter.peer.peers import Peer, Peers
from commuter.settings import Settings

from .fake_model import FakeModel
from .harness import check, run_claude, session_files

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "relay"))
from relayhelp import RelayProcess

pytestmark = pytest.mark.e2e
CODEWORD = "PLUM-731"


def _env(home: Path) -> dict[str, str]:
    return {
        "HOME": str(home),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "COMMUTER_MDNS_INTERFACES": "127.0.0.1",
    }


def commuter(home: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "commuter", *args],
        cwd=cwd,
        env=_env(home),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"{proc.args}\n{proc.stdout}\n{proc.stderr}"
    return proc


def _pair(home_a: Path, name_a: str, home_b: Path, name_b: str) -> None:
    sa, sb = Settings.from_env(_env(home_a)), Settings.from_env(_env(home_b))
    ka, kb = Identity.load_or_create(sa), Identity.load_or_create(sb)
    for settings, name, key in ((sa, name_b, kb), (sb, name_a, ka)):
        peers = Peers.load(settings)
        peers.add(Peer.new(name, key.public_key))
        peers.save()


def _holds(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_push_through_relay_pull_and_continue(
    tmp_path: Path, claude_bin: Path, fake_model: FakeModel
) -> None:
    home, office = tmp_path / "home", tmp_path / "office"
    proj_home, proj_office = home / "src" / "app", office / "work" / "app"
    for d in (proj_home, proj_office):
        d.mkdir(parents=True)
    check(
        run_claude(
            claude_bin, home, proj_home, ["-p", f"Remember {CODEWORD}."], fake_model.base_url
        )
    )
    [transcript] = session_files(home, proj_home)
    sid = transcript.stem

    _pair(home, "home", office, "office")
    commuter(office, office, "config", "set", "path-map", str(home / "src"), str(office / "work"))
    data_dir = tmp_path / "relay-data"
    relay = RelayProcess(data_dir, tmp_path / "relay-home")
    try:
        for h in (home, office):
            commuter(h, h, "config", "set", "relay", relay.url)
        pushed = commuter(home, proj_home, "push", "--to", "office", "--via", "relay")
        assert pushed.stdout.strip() == f"pushed {sid[:7]} to office via relay"
        assert list((data_dir / "mailboxes").rglob("*.sealed"))
        assert _holds(data_dir, CODEWORD.encode()) == []
        pulled = commuter(office, office, "pull")
        assert f"claude --resume {sid}" in pulled.stdout and "via relay" in pulled.stdout
        assert _holds(data_dir, CODEWORD.encode()) == []
        assert not list((data_dir / "mailboxes").rglob("*.sealed"))
    finally:
        relay.kill()
    [transcript_office] = session_files(office, proj_office)
    assert transcript_office.stem == sid

    fake_model.clear()
    resumed = check(
        run_claude(
            claude_bin,
            office,
            proj_office,
            ["-p", "--continue", "Which codeword?"],
            fake_model.base_url,
        )
    )
    assert resumed.stdout.strip() == f"Codewords seen: {CODEWORD}."
    assert fake_model.session_ids() == [sid]
