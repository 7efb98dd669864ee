"""The ssh hop finds a user install on the host (commuter on PATH, ~/.local/bin, pipx's
PIPX_BIN_DIR) or says exactly what to pass. The host is played by a stand-in for ssh
(COMMUTER_SSH) that runs the command the way sshd does, `$SHELL -c COMMAND`, with the host's
own HOME, PATH and nothing else; sh (dash) and bash as that shell."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from claude_home import TOOLS, install
from test_ssh_hop import Sshd, sshd  # noqa: F401 (the fixture: a private sshd on loopback)
from transhelp import env_for, one_error_line, run

from commuter import config, sshhop
from commuter.settings import Settings

SHELLS = [s for s in ("sh", "bash") if shutil.which(s)]
BASE_PATH = "/usr/bin:/bin"  # the host's PATH: no commuter in it


@dataclass
class Host:
    env_a: dict[str, str]
    project_a: Path
    b_home: Path
    log: Path


def _fake_ssh(path: Path, b_home: Path, shell: str, log: Path) -> None:
    """An `ssh` that skips its options and the host name and runs the command as sshd would."""
    path.write_text(
        "#!/bin/sh\n"
        'while [ $# -gt 1 ]; do case "$1" in -o) shift 2;; -*) shift;; *) break;; esac; done\n'
        "shift\n"  # the host
        f'printf "%s\\n" "$*" >> {shlex.quote(str(log))}\n'
        f"exec env -i HOME={shlex.quote(str(b_home))} USER=tester LC_ALL=C.UTF-8 "
        f'PATH="$FAKE_PATH" ${{FAKE_PIPX:+PIPX_BIN_DIR="$FAKE_PIPX"}} {shell} -c "$*"\n'
    )
    path.chmod(0o755)


def _install_at(folder: Path, status: int | None = None) -> Path:
    """A `commuter` script in `folder`, as pipx or pip --user leave one (or one that only
    exits with `status`, to tell which was run)."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "commuter"
    body = f"exit {status}" if status is not None else f'exec {sys.executable} -m commuter "$@"'
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return script


@pytest.fixture(params=SHELLS)
def host(request, tmp_path) -> Host:
    a_home = install(tmp_path / "A")
    b_home = tmp_path / "B"
    (b_home / "code" / "my.app").mkdir(parents=True)
    for h in (a_home, b_home):
        config.set_value(
            Settings.from_env(env_for(h)),
            "path-map",
            (str(a_home / "projects"), str(b_home / "code")),
        )
    log = tmp_path / "ssh.log"
    ssh = tmp_path / "bin" / "ssh"
    ssh.parent.mkdir()
    _fake_ssh(ssh, b_home, request.param, log)
    env_a = env_for(a_home, COMMUTER_SSH=str(ssh), FAKE_PATH=BASE_PATH)
    return Host(env_a, a_home / "projects" / "my.app", b_home, log)


def _landed(h: Host) -> bool:
    return any((h.b_home / ".claude" / "projects").glob(f"*/{TOOLS}.jsonl"))


def test_to_finds_commuter_in_the_hosts_local_bin(host):
    _install_at(host.b_home / ".local" / "bin")
    result = run(host.env_a, "to", "office", TOOLS, cwd=host.project_a)
    assert result.returncode == 0, result.stderr
    assert f"sent session {TOOLS[:7]} to office" in result.stdout and _landed(host)


def test_from_finds_commuter_in_pipx_bin_dir(host):
    _install_at(host.b_home / "pipx-bin")
    assert run(host.env_a, "to", "office", TOOLS, cwd=host.project_a).returncode == 1  # not found
    env = {**host.env_a, "FAKE_PIPX": str(host.b_home / "pipx-bin")}
    sent = run(env, "to", "office", TOOLS, cwd=host.project_a)
    assert sent.returncode == 0, sent.stderr
    fetched = run(env, "from", "office", "--no-launch", cwd=host.project_a)
    assert fetched.returncode == 0, fetched.stderr
    assert "from office via ssh:" in fetched.stdout and "unchanged: session" in fetched.stdout


def test_commuter_on_the_hosts_path_comes_first(host):
    _install_at(host.b_home / ".local" / "bin", status=42)  # would fail the hop if run
    on_path = host.b_home / "opt" / "bin"
    _install_at(on_path)
    env = {**host.env_a, "FAKE_PATH": f"{on_path}:{BASE_PATH}"}
    result = run(env, "to", "office", TOOLS, cwd=host.project_a)
    assert result.returncode == 0, result.stderr


def test_no_install_on_the_host_says_what_to_pass(host):
    for cmd in ("to", "from"):
        result = run(host.env_a, cmd, "office", cwd=host.project_a)
        one_error_line(
            result,
            "commuter not found on office (commuter is not on PATH, in ~/.local/bin or in "
            "PIPX_BIN_DIR); install it there (pipx install /path/to/commuter) or pass "
            "--remote-commuter CMD",
        )
    assert not (host.b_home / ".claude").exists()


def test_a_project_dir_with_quotes_and_spaces_reaches_the_host_intact(host):
    _install_at(host.b_home / ".local" / "bin")
    odd = host.b_home / "code" / "it's a $HOME `x`"
    odd.mkdir()
    result = run(host.env_a, "to", "office", TOOLS, "--project-dir", str(odd), cwd=host.project_a)
    assert result.returncode == 0, result.stderr
    assert f"in {odd}" in result.stdout, result.stdout


def test_the_snippet_has_nothing_fish_would_read_differently():
    assert "\\" not in sshhop.FIND_REMOTE and "'" not in sshhop.FIND_REMOTE
    assert sshhop.remote_commuter(None) == sshhop.DEFAULT_REMOTE
    assert f"sh -c '{sshhop.FIND_REMOTE}' commuter" == sshhop.DEFAULT_REMOTE
    done = subprocess.run(
        ["sh", "-c", f"{sshhop.DEFAULT_REMOTE} --version"],
        env={"PATH": BASE_PATH, "HOME": "/nonexistent"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 127
    assert done.stderr.strip() == "commuter is not on PATH, in ~/.local/bin or in PIPX_BIN_DIR"


def _installed_for_sshd_user() -> bool:
    home = Path.home()  # sshd logs this user in with their real HOME
    found = [
        Path(d) / "commuter"
        for d in ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]
    ]
    return any(p.exists() for p in (*found, home / ".local" / "bin" / "commuter"))


def test_through_a_real_sshd_the_default_says_what_to_pass(sshd: Sshd, tmp_path):  # noqa: F811
    if _installed_for_sshd_user():
        pytest.skip("commuter is installed for the user sshd logs in")
    a_home = install(tmp_path / "A")
    env_a = env_for(a_home, COMMUTER_SSH=f"ssh -F {sshd.client_config}")
    env_a.pop("SSH_AUTH_SOCK", None)
    for cmd in ("to", "from"):
        result = run(env_a, cmd, "office", cwd=a_home / "projects" / "my.app")
        one_error_line(
            result,
            "commuter not found on office (commuter is not on PATH, in ~/.local/bin or in "
            "PIPX_BIN_DIR); install it there",
        )
