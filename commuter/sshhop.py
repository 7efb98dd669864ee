"""The ssh hop: stream a plain bundle through the user's own ssh to a remote `commuter`.

`send_to` pipes a bundle file into `commuter import -` on the host; `fetch_from` runs
`commuter export --latest -o -` there and writes its stdout to a local file. Nothing is
stored on the remote side but the imported session; ssh's encryption covers the bundle.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from commuter.errors import ConfigError, PeerUnreachable, TransportError
from commuter.settings import Settings

SSH_HOP_VAR = "COMMUTER_SSH_HOP"

# No prompts, no TTY, a bounded connect, and a dead link noticed within a minute.
SSH_OPTIONS = (
    "-T",
    "-o",
    "BatchMode=yes",
    "-o",
    "ConnectTimeout=10",
    "-o",
    "ServerAliveInterval=15",
    "-o",
    "ServerAliveCountMax=4",
    "-o",
    "LogLevel=ERROR",
)
# Where a user install puts commuter: PATH, then pip --user's and pipx's default bin dir,
# then pipx's PIPX_BIN_DIR. POSIX sh, run through `sh -c` so a fish or zsh login shell on the
# host runs it alike; no backslash or single quote inside, so fish's quoting leaves it as is.
FIND_REMOTE = (
    'for c in "$(command -v commuter)" "$HOME/.local/bin/commuter" '
    '"${PIPX_BIN_DIR:-$HOME/.local/bin}/commuter"; do '
    'if [ -n "$c" ] && [ -f "$c" ] && [ -x "$c" ]; then exec "$c" "$@"; fi; done; '
    'echo "commuter is not on PATH, in ~/.local/bin or in PIPX_BIN_DIR" >&2; exit 127'
)
DEFAULT_REMOTE = f"sh -c {shlex.quote(FIND_REMOTE)} commuter"
REMOTE_HINT = (
    "install it there (pipx install /path/to/commuter) or pass --remote-commuter CMD, "
    "the command that runs it there (e.g. --remote-commuter '~/venv/bin/commuter')"
)
SSH_FAILED = 255  # ssh's own failure (connect, auth, lost link)
NOT_RUNNABLE = (126, 127)  # the remote shell could not run the command


@dataclass(frozen=True, slots=True)
class RemoteOutput:
    """What the remote command printed."""

    stdout: str
    stderr: str


def remote_dir_for(settings: Settings, cwd: Path) -> str:
    """`cwd` as the remote side names it: through the config path-maps, else unchanged."""
    from commuter import config
    from commuter.pathmap import PathMap

    return PathMap.from_config(config.load(settings).path_maps).apply(str(cwd))


def remote_commuter(command: str | None) -> str:
    """Shell text that runs commuter on the host (the words that follow are its arguments):
    the first install FIND_REMOTE finds, or `command`'s words quoted."""
    if command is None:
        return DEFAULT_REMOTE
    try:
        words = shlex.split(command)
    except ValueError as exc:
        raise TransportError(f"--remote-commuter does not parse: {exc}") from exc
    if not words:
        raise TransportError("--remote-commuter is empty")
    return " ".join(_quote(word) for word in words)


def _quote(word: str) -> str:
    """shlex.quote, keeping a leading `~` / `~/` for the remote shell to expand."""
    if word == "~" or word == "~/":
        return word
    if word.startswith("~/"):
        return "~/" + shlex.quote(word[2:])
    return shlex.quote(word)


def ssh_argv(settings: Settings, host: str, command: str) -> list[str]:
    """The ssh command line running `command` (shell text) on `host`."""
    if not host or host.startswith("-"):
        raise TransportError(f"not a host name: {host!r}")
    try:
        program = shlex.split(settings.ssh_command)
    except ValueError as exc:
        raise ConfigError(f"COMMUTER_SSH does not parse: {exc}") from exc
    return [*(program or ["ssh"]), *SSH_OPTIONS, host, command]


@contextmanager
def staging_file(settings: Settings, prefix: str) -> Iterator[Path]:
    """A new empty file under the staging dir, removed on the way out whatever happens."""
    settings.staging_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=settings.staging_dir)
    os.close(fd)
    path = Path(name)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def send_to(
    settings: Settings,
    host: str,
    bundle_path: Path,
    *,
    project_dir: str | None = None,
    remote_command: str | None = None,
) -> RemoteOutput:
    """Import `bundle_path` on `host` (`commuter import - --no-launch`); its output."""
    args = ["import", "-", "--no-launch"]
    if project_dir:
        args += ["--project-dir", project_dir]
    # The bundle comes from this user's own commuter inside their own ssh (host key checked by
    # ssh): the far side treats it like one sealed by a paired peer. An older commuter there
    # ignores the variable; `export V=1 &&` works in sh, bash, zsh and fish.
    command = f"export {SSH_HOP_VAR}=1 && {remote_commuter(remote_command)} {shlex.join(args)}"
    argv = ssh_argv(settings, host, command)
    with bundle_path.open("rb") as bundle:
        code, out, err = _run(argv, stdin=bundle, stdout=subprocess.PIPE)
    _check(host, code, err)
    return RemoteOutput(out, err)


def fetch_from(
    settings: Settings,
    host: str,
    remote_dir: str,
    dst: Path,
    *,
    remote_command: str | None = None,
) -> RemoteOutput:
    """Write `host`'s newest session of `remote_dir` as a bundle into `dst` (streamed)."""
    command = f"cd {_quote(remote_dir)} && {remote_commuter(remote_command)} export --latest -o -"
    argv = ssh_argv(settings, host, command)
    with dst.open("wb") as out:
        code, _, err = _run(argv, stdin=subprocess.DEVNULL, stdout=out)
    _check(host, code, err)
    return RemoteOutput("", err)


def _run(
    argv: Sequence[str], *, stdin: int | IO[Any], stdout: int | IO[Any]
) -> tuple[int, str, str]:
    """Run ssh to completion; stderr (and stdout if piped) decoded. Killed on any exception."""
    try:
        proc = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE)
    except OSError as exc:
        raise ConfigError(f"cannot run {argv[0]} ({exc.strerror}); set COMMUTER_SSH") from exc
    try:
        out, err = proc.communicate()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    text = out.decode(errors="replace") if out else ""
    return proc.returncode, text, err.decode(errors="replace")


def _check(host: str, code: int, stderr: str) -> None:
    """One error naming what failed, from ssh's exit code and the last line it relayed."""
    if code == 0:
        return
    last = _last_line(stderr)
    if code == SSH_FAILED:
        raise PeerUnreachable(f"cannot reach {host} over ssh ({last or 'ssh exit 255'})")
    if code in NOT_RUNNABLE:
        raise TransportError(
            f"commuter not found on {host} ({last or f'exit {code}'}); {REMOTE_HINT}"
        )
    raise TransportError(f"on {host}: {last or f'remote command exited with {code}'}")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    last = lines[-1]
    return last[len("Error: ") :] if last.startswith("Error: ") else last
