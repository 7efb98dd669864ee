"""`commuter to HOST` / `from HOST` through a real sshd on loopback, between two fake machines."""

from __future__ import annotations

import json
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from commuter.backends.claude.stream import restore_prefix

sys.path.insert(0, str(Path(__file__).parent / "transports"))

from claude_home import TOOLS, carry, install, transcript
from transhelp import env_for, one_error_line, run

from commuter import config
from commuter.backends.claude.paths import claude_project_folder
from commuter.settings import Settings

SSHD = Path("/usr/sbin/sshd")
READY_WITHIN = 10.0


@dataclass
class Sshd:
    """A private sshd on 127.0.0.1 and a client config naming it `office` (and a dead `nowhere`)."""

    port: int
    client_config: Path
    log: Path


@dataclass
class World:
    """Machine A (has the real sessions, runs the CLI) and B (reached as `office`)."""

    a: Settings
    b: Settings
    project_a: Path
    project_b: Path
    env_a: dict[str, str]
    remote_b: str  # --remote-commuter: commuter with B's fake home, nothing of the real one


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)],
        check=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )


def _ready(proc: subprocess.Popen[bytes], port: int) -> bool:
    """True once sshd answers with its banner; False if it died or READY_WITHIN passed."""
    deadline = time.monotonic() + READY_WITHIN
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                conn.settimeout(2)
                if conn.recv(64).startswith(b"SSH-"):
                    return True
        except OSError:
            time.sleep(0.1)
    return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    if not SSHD.is_file():
        pytest.skip(f"{SSHD} is not installed (openssh-server)")
    if os.geteuid() != 0:
        pytest.skip("needs root to run a private sshd")
    if not (shutil.which("ssh") and shutil.which("ssh-keygen")):
        pytest.skip("the ssh client is not installed")
    try:
        pwd.getpwnam("sshd")
    except KeyError:
        pytest.skip("no `sshd` privilege separation user")
    d = tmp_path_factory.mktemp("sshd")
    _keygen(d / "host_ed25519")
    _keygen(d / "client_ed25519")
    (d / "authorized_keys").write_text((d / "client_ed25519.pub").read_text())
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir
    (d / "sshd_config").write_text(
        "ListenAddress 127.0.0.1\n"
        f"HostKey {d}/host_ed25519\n"
        f"AuthorizedKeysFile {d}/authorized_keys\n"
        f"PidFile {d}/sshd.pid\n"
        "PubkeyAuthentication yes\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "StrictModes no\nPrintMotd no\nPrintLastLog no\nX11Forwarding no\n"
        "AllowTcpForwarding no\nAllowAgentForwarding no\nPermitTunnel no\n"
    )
    log = d / "sshd.log"
    proc = None
    for _ in range(3):  # the free port may be taken between the probe and sshd's bind
        port = _free_port()
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [str(SSHD), "-D", "-e", "-f", str(d / "sshd_config"), "-p", str(port)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
        if _ready(proc, port):
            break
        _stop(proc)
        proc = None
    if proc is None:
        pytest.fail(f"sshd did not start:\n{log.read_text()}")
    host_key = (d / "host_ed25519.pub").read_text().split()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    user = pwd.getpwuid(os.getuid()).pw_name
    (d / "ssh_config").write_text(
        f"Host office\n  Port {port}\n"
        f"Host nowhere\n  Port {_free_port()}\n"
        "Host *\n  HostName 127.0.0.1\n"
        f"  User {user}\n  IdentityFile {d}/client_ed25519\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {d}/known_hosts\n  GlobalKnownHostsFile /dev/null\n"
        "  StrictHostKeyChecking yes\n  ControlMaster no\n  ControlPath none\n"
    )
    try:
        yield Sshd(port, d / "ssh_config", log)
    finally:
        _stop(proc)


def _remote_commuter(home: Path) -> str:
    """B's commuter run by the remote shell, with B's fake HOME and XDG dirs."""
    words = [
        # Not `env -i`: sshd's environment is a fresh login's anyway, and what the hop exports
        # for the far side (COMMUTER_SSH_HOP) must reach it.
        "env",
        "PATH=/usr/local/bin:/usr/bin:/bin",
        "LC_ALL=C.UTF-8",
        "USER=tester",
        f"HOME={home}",
        f"XDG_CONFIG_HOME={home}/.config",
        f"XDG_DATA_HOME={home}/.local/share",
        f"XDG_STATE_HOME={home}/.local/state",
        f"XDG_CACHE_HOME={home}/.cache",
        sys.executable,
        "-m",
        "commuter",
    ]
    return shlex.join(words)


@pytest.fixture
def world(sshd: Sshd, tmp_path: Path) -> World:
    a_home = install(tmp_path / "A")
    b_home = tmp_path / "B"
    project_b = b_home / "code" / "my.app"
    project_b.mkdir(parents=True)
    a, b = (Settings.from_env(env_for(h)) for h in (a_home, b_home))
    for s in (a, b):
        config.set_value(s, "path-map", (str(a_home / "projects"), str(b_home / "code")))
    env_a = env_for(a_home, COMMUTER_SSH=f"ssh -F {sshd.client_config}")
    env_a.pop("SSH_AUTH_SOCK", None)
    return World(a, b, a_home / "projects" / "my.app", project_b, env_a, _remote_commuter(b_home))


def _to(w: World, *args: str) -> subprocess.CompletedProcess[str]:
    return run(w.env_a, "to", "office", *args, "--remote-commuter", w.remote_b, cwd=w.project_a)


def _continue(path: Path, text: str, cwd: Path) -> None:
    """Append one user turn to a transcript, chained to its last entry (as claude would)."""
    last = [json.loads(line) for line in path.read_text().splitlines() if '"uuid"' in line][-1]
    entry = {
        "parentUuid": last["uuid"],
        "type": "user",
        "uuid": str(uuid.uuid4()),
        "cwd": str(cwd),
        "sessionId": last.get("sessionId"),
        "message": {"role": "user", "content": text},
        # as claude writes it: the branch that began first keeps the id when both went on
        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    }
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry, separators=(",", ":")) + "\n")


def _cwds(path: Path) -> set[str]:
    return {json.loads(line).get("cwd") for line in path.read_text().splitlines()} - {None}


def _staging_empty(s: Settings) -> bool:
    return not any(p.is_file() or p.is_symlink() for p in s.staging_root.rglob("*"))


def test_to_imports_the_session_on_the_host(world: World) -> None:
    w = world
    (w.project_a / "CLAUDE.md").write_text("from A\n")
    sent = _to(w, "--latest")
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.strip().splitlines()[-1] == f"sent session {TOOLS[:7]} to office"
    assert f"imported: session {TOOLS} in {w.project_b}" in sent.stdout
    at_b = transcript(w.b.home, w.project_b, TOOLS)
    assert at_b.is_file()
    assert _cwds(at_b) == {str(w.project_b)}
    # Inside the user's own ssh the bundle is as trusted as a paired peer's: new project
    # config arrives (a plain bundle from a shared folder would need --yes).
    assert (w.project_b / "CLAUDE.md").is_file(), sent.stdout + sent.stderr
    assert (w.project_b / "CLAUDE.md").read_text() == "from A\n"
    assert _staging_empty(w.a) and _staging_empty(w.b)


def test_to_with_an_id_and_a_remote_project_dir_with_a_space(world: World) -> None:
    w = world
    elsewhere = w.b.home / "other place" / "app"
    elsewhere.mkdir(parents=True)
    sent = _to(w, TOOLS[:8], "--project-dir", str(elsewhere))
    assert sent.returncode == 0, sent.stderr
    assert transcript(w.b.home, elsewhere, TOOLS).is_file()
    projects = w.b.home / ".claude" / "projects"
    assert not (projects / claude_project_folder(str(w.project_b))).exists()


def test_from_fetches_the_hosts_newest_session_for_the_mapped_dir(world: World, tmp_path: Path):
    w = world
    carry(w.a, w.b, tmp_path / "carry", session=TOOLS, cwd=w.project_a)
    at_b = transcript(w.b.home, w.project_b, TOOLS)
    _continue(at_b, "continued at B", w.project_b)
    (w.project_b / ".claude" / "commands").mkdir(parents=True)
    (w.project_b / ".claude" / "commands" / "b.md").write_text("from B\n")
    at_a = transcript(w.a.home, w.project_a, TOOLS)
    before = at_a.read_bytes()
    got = run(
        w.env_a, "from", "office", "--no-launch", "--remote-commuter", w.remote_b, cwd=w.project_a
    )
    assert got.returncode == 0, got.stderr
    lines = got.stdout.splitlines()
    assert lines[0] == "from office via ssh:"
    assert f"updated: session {TOOLS} in {w.project_a}" in lines
    assert f"resume:   cd {w.project_a} && claude --resume {TOOLS}" in lines
    assert "continued at B" in at_a.read_text()
    # inside the user's own ssh: new project config arrives as from a paired peer
    assert (w.project_a / ".claude" / "commands" / "b.md").read_text() == "from B\n"
    assert _cwds(at_a) == {str(w.project_a)}
    # B only appended, so the backup is a record of the old length and digest, and
    # cutting a copy of the new transcript back by it gives A's transcript as it was
    assert not list(w.a.backups_dir.rglob(f"{TOOLS}.jsonl"))
    [record] = w.a.backups_dir.rglob("prefix.json")
    copy = tmp_path / "restored.jsonl"
    copy.write_bytes(at_a.read_bytes())
    assert restore_prefix(record, copy).read_bytes() == before
    assert _staging_empty(w.a)


def test_to_twice_with_the_host_continuing_loses_nothing(world: World) -> None:
    w = world
    assert _to(w).returncode == 0
    at_a = transcript(w.a.home, w.project_a, TOOLS)
    at_b = transcript(w.b.home, w.project_b, TOOLS)
    _continue(at_b, "continued at B", w.project_b)
    b_copy = at_b.read_bytes()
    again = _to(w)  # B is newer: kept, with the remote's warning relayed
    assert again.returncode == 0, again.stderr
    assert "warning:" in again.stderr and "newer" in again.stderr
    assert f"unchanged: session {TOOLS}" in again.stdout
    assert at_b.read_bytes() == b_copy
    _continue(at_a, "continued at A", w.project_a)
    third = _to(w)  # both went on: the host keeps its copy and gets a fork
    assert third.returncode == 0, third.stderr
    assert "imported as a fork" in third.stdout
    assert at_b.read_bytes() == b_copy
    forks = [p for p in at_b.parent.glob("*.jsonl") if p != at_b]
    assert len(forks) == 1 and "continued at A" in forks[0].read_text()
    assert "continued at B" not in forks[0].read_text()


def test_errors_are_one_line_and_leave_nothing_behind(world: World) -> None:
    w = world
    start = time.monotonic()
    down = run(w.env_a, "to", "nowhere", "--remote-commuter", w.remote_b, cwd=w.project_a)
    one_error_line(down, "cannot reach nowhere over ssh (", status=3)
    assert time.monotonic() - start < 10
    one_error_line(
        run(w.env_a, "from", "nowhere", cwd=w.project_a), "cannot reach nowhere over ssh", status=3
    )
    for cmd in ("to", "from"):
        missing = run(
            w.env_a, cmd, "office", "--remote-commuter", "/nonexistent/commuter", cwd=w.project_a
        )
        one_error_line(missing, "--remote-commuter")
        assert "commuter not found on office" in missing.stderr
    empty = w.b.home / "code" / "empty"
    empty.mkdir()
    for remote_dir, needle in (
        (str(empty), "no Claude Code session"),
        ("/nonexistent/dir", "/nonexistent/dir"),
    ):
        failed = run(
            w.env_a,
            "from",
            "office",
            "--project-dir",
            remote_dir,
            "--remote-commuter",
            w.remote_b,
            cwd=w.project_a,
        )
        one_error_line(failed, needle)
        assert "on office: " in failed.stderr
    for fake, needle in (("true", "bundle is empty"), ("echo", "not a commuter bundle")):
        one_error_line(
            run(w.env_a, "from", "office", "--remote-commuter", fake, cwd=w.project_a), needle
        )
    bad = dict(w.env_a, COMMUTER_SSH="ssh 'unbalanced")
    one_error_line(run(bad, "to", "office", cwd=w.project_a), "COMMUTER_SSH")
    assert _staging_empty(w.a)
    assert not (w.b.home / ".claude").exists()
