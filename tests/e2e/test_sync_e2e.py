"""Real claude on two fake machines, each running `commuter serve --sync --quiet 1` as a
subprocess on loopback: a session made at A appears at B with no command typed and resumes
there; B's continuation comes back to A; with B's daemon stopped both go on, B restarts, and
the machines converge. The same through a relay with the LAN unreachable."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from commuter import config
from commuter.peer.identity import Identity
from commuter.peer.peers import Peers
from commuter.settings import Settings

from .fake_model import FakeModel
from .harness import check, run_claude, session_files

pytestmark = pytest.mark.e2e

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "relay"))
from relayhelp import RelayProcess  # noqa: E402

WAIT = 90.0


def _env(home: Path) -> dict[str, str]:
    return {
        "HOME": str(home),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "USER": "tester",
        "COMMUTER_MDNS_INTERFACES": "127.0.0.1",
        "PYTHONUNBUFFERED": "1",
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SyncDaemon:
    """`commuter serve --sync --quiet 1` of one fake machine; its output read as it comes."""

    def __init__(self, home: Path, port: int, *extra: str) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "commuter",
                "serve",
                "--sync",
                "--quiet",
                "1",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                *extra,
            ],
            cwd=home,
            env=_env(home),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.wait_line("sync: quiet 1 s")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_line(self, needle: str, within: float = 30.0) -> str:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            found = [line for line in self.lines if needle in line]
            if found:
                return found[-1]
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"no {needle!r} line:\n" + "\n".join(self.lines))

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(10)
        self._reader.join(10)
        assert self.proc.stderr is not None
        err = self.proc.stderr.read()
        self.proc.stderr.close()
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return code, err


def until(check_fn: Callable[[], bool], what: str, within: float = WAIT) -> None:
    deadline = time.monotonic() + within
    while not check_fn():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within:g} s: {what}")
        time.sleep(0.25)


def _settings(home: Path) -> Settings:
    return Settings.from_env(_env(home))


def _pair(home_a: Path, home_b: Path, addr_a: str, addr_b: str) -> None:
    """Pair for real (B invites on loopback, A joins with the code), then pin where each
    finds the other's daemon (a closed port: only the relay or folder can carry)."""
    commuter = [sys.executable, "-m", "commuter", "pair"]
    inviter = subprocess.Popen(
        [*commuter, "--json", "--timeout", "60", "--host", "127.0.0.1", "--no-mdns"],
        env=_env(home_b),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert inviter.stdout is not None
        invite = json.loads(inviter.stdout.readline())
        joined = subprocess.run(
            [*commuter, invite["code"], "--address", invite["address"], "--no-mdns"],
            env=_env(home_a),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert joined.returncode == 0, joined.stderr
        _out, err = inviter.communicate(timeout=30)
    finally:
        if inviter.poll() is None:
            inviter.kill()
            inviter.communicate()
    assert inviter.returncode == 0, err
    ka = Identity.load_or_create(_settings(home_a))
    kb = Identity.load_or_create(_settings(home_b))
    for home, name, key, address in ((home_a, "office", kb, addr_b), (home_b, "home", ka, addr_a)):
        peers = Peers.load(_settings(home))
        assert peers.get(name).public_key == key.public_key  # what the pairing exchanged
        peers.touch_address(key.public_key, address)
        peers.save()


def _has_text(path: Path, text: str) -> bool:
    try:
        return text in path.read_text(encoding="utf-8")
    except OSError:
        return False


def _uuids(path: Path) -> list[str]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and isinstance(entry.get("uuid"), str):
                out.append(entry["uuid"])
    return out


def _machines(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    home_a, home_b = tmp_path / "a", tmp_path / "b"
    proj_a, proj_b = home_a / "src" / "app", home_b / "work" / "app"
    for d in (proj_a, proj_b):
        d.mkdir(parents=True)
    for home in (home_a, home_b):
        config.set_value(_settings(home), "path-map", (str(home_a / "src"), str(home_b / "work")))
    config.set_value(_settings(home_a), "name", ("home",))
    config.set_value(_settings(home_b), "name", ("office",))
    return home_a, home_b, proj_a, proj_b


def _there_and_back(
    claude_bin: Path,
    fake_model: FakeModel,
    home_a: Path,
    home_b: Path,
    proj_a: Path,
    proj_b: Path,
    daemon_a: SyncDaemon,
    daemon_b: SyncDaemon,
    via: str,
) -> str:
    check(run_claude(claude_bin, home_a, proj_a, ["-p", "Remember LIME-55."], fake_model.base_url))
    [transcript_a] = session_files(home_a, proj_a)
    sid = transcript_a.stem
    # No command typed: A's daemon sends it once quiet, B's imports it.
    until(lambda: any(p.stem == sid for p in session_files(home_b, proj_b)), "A's session at B")
    sent = daemon_a.wait_line(f"sent {sid[:8]}")
    assert f"to office via {via}" in sent and str(proj_a) in sent, sent
    imported = daemon_b.wait_line(f"imported {sid[:8]}")
    assert f"from home via {via}" in imported and str(proj_b) in imported, imported

    fake_model.clear()
    resumed = check(
        run_claude(
            claude_bin, home_b, proj_b, ["-p", "--continue", "Which codeword?"], fake_model.base_url
        )
    )
    assert resumed.stdout.strip() == "Codewords seen: LIME-55."
    assert fake_model.session_ids() == [sid]
    # B's continuation comes back to A by itself.
    until(lambda: _has_text(transcript_a, "Which codeword?"), "B's continuation at A")
    assert daemon_a.wait_line(f"imported {sid[:8]}").endswith(": updated")
    assert _uuids(transcript_a) == _uuids(session_files(home_b, proj_b)[-1])
    return sid


def test_a_session_syncs_there_and_back_and_converges_after_a_daemon_was_down(
    tmp_path: Path, claude_bin: Path, fake_model: FakeModel
) -> None:
    home_a, home_b, proj_a, proj_b = _machines(tmp_path)
    port_a, port_b = _free_port(), _free_port()
    _pair(home_a, home_b, f"127.0.0.1:{port_a}", f"127.0.0.1:{port_b}")
    daemon_a = SyncDaemon(home_a, port_a)
    daemon_b = SyncDaemon(home_b, port_b)
    try:
        sid = _there_and_back(
            claude_bin, fake_model, home_a, home_b, proj_a, proj_b, daemon_a, daemon_b, "lan"
        )
        shown = json.loads(
            subprocess.run(
                [sys.executable, "-m", "commuter", "status", "--json"],
                env=_env(home_a),
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            ).stdout
        )
        [row] = [s for s in shown["sessions"] if s["session_id"] == sid]
        assert row["peers"][0]["state"] == "in step", row
        assert shown["daemon"]["running"] is True

        code, err = daemon_b.stop()
        assert code == 0 and "Traceback" not in err, err
        # Both go on while apart.
        check(
            run_claude(
                claude_bin,
                home_a,
                proj_a,
                ["-p", "--continue", "Remember KIWI-7."],
                fake_model.base_url,
            )
        )
        check(
            run_claude(
                claude_bin,
                home_b,
                proj_b,
                ["-p", "--continue", "Remember PEAR-3."],
                fake_model.base_url,
            )
        )
        daemon_b = SyncDaemon(home_b, port_b)

        def converged() -> bool:
            at_a = {p.stem: _uuids(p) for p in session_files(home_a, proj_a)}
            at_b = {p.stem: _uuids(p) for p in session_files(home_b, proj_b)}
            texts = [p.read_text() for p in session_files(home_a, proj_a)]
            texts_b = [p.read_text() for p in session_files(home_b, proj_b)]
            every = all(
                any(word in t for t in ts)
                for word in ("KIWI-7", "PEAR-3")
                for ts in (texts, texts_b)
            )
            return at_a == at_b and every

        until(converged, "the same sessions, ids and messages on both machines", 60)
        assert sid in {p.stem for p in session_files(home_a, proj_a)}
    finally:
        for d in (daemon_a, daemon_b):
            if d.proc.poll() is None:
                d.stop()


def test_a_session_syncs_there_and_back_through_a_relay(
    tmp_path: Path, claude_bin: Path, fake_model: FakeModel
) -> None:
    home_a, home_b, proj_a, proj_b = _machines(tmp_path)
    relay = RelayProcess(tmp_path / "relay-data", tmp_path / "relay-home")
    try:
        for home in (home_a, home_b):
            config.set_value(_settings(home), "relay", (relay.url,))
        closed = f"127.0.0.1:{_free_port()}"  # nobody listens: the LAN is not a way
        _pair(home_a, home_b, closed, closed)
        daemon_a = SyncDaemon(home_a, _free_port(), "--no-mdns")
        daemon_b = SyncDaemon(home_b, _free_port(), "--no-mdns")
        try:
            _there_and_back(
                claude_bin, fake_model, home_a, home_b, proj_a, proj_b, daemon_a, daemon_b, "relay"
            )
        finally:
            for d in (daemon_a, daemon_b):
                code, err = d.stop()
                assert code == 0 and "Traceback" not in err, err
    finally:
        relay.stop()


def test_status_names_what_waits_on_the_relay(
    tmp_path: Path, claude_bin: Path, fake_model: FakeModel
) -> None:
    """A session sent while B's daemon is down waits on the relay: B's status names it
    (sender, session, project, size) without taking it; B's daemon imports it when back."""
    home_a, home_b, proj_a, proj_b = _machines(tmp_path)
    relay = RelayProcess(tmp_path / "relay-data", tmp_path / "relay-home")
    try:
        for home in (home_a, home_b):
            config.set_value(_settings(home), "relay", (relay.url,))
        closed = f"127.0.0.1:{_free_port()}"
        _pair(home_a, home_b, closed, closed)
        check(
            run_claude(claude_bin, home_a, proj_a, ["-p", "Remember FIG-9."], fake_model.base_url)
        )
        [transcript_a] = session_files(home_a, proj_a)
        daemon_a = SyncDaemon(home_a, _free_port(), "--no-mdns")
        try:
            daemon_a.wait_line(f"sent {transcript_a.stem[:8]}")
        finally:
            daemon_a.stop()
        shown = subprocess.run(
            [sys.executable, "-m", "commuter", "status", "--json"],
            env=_env(home_b),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        [item] = json.loads(shown.stdout)["pending"]
        assert (item["transport"], item["sender"]) == ("relay", "home")
        assert item["session_id"] == transcript_a.stem and item["project"] == str(proj_a)
        assert item["size"] > 0
        assert session_files(home_b, proj_b) == []
        daemon_b = SyncDaemon(home_b, _free_port(), "--no-mdns")
        try:
            until(lambda: session_files(home_b, proj_b) != [], "the relay item imported at B")
        finally:
            daemon_b.stop()
    finally:
        relay.stop()
