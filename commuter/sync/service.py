"""`commuter service install|uninstall|status`: run `commuter serve --sync` at login — a
systemd user unit on Linux, a launchd agent on macOS. The files are written under HOME
(XDG_CONFIG_HOME respected), atomically, with a marker line so uninstall removes only a
file this command wrote."""

from __future__ import annotations

import os
import plistlib
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from commuter.errors import ConfigError
from commuter.fsutil import atomic_write_bytes
from commuter.settings import Settings

UNIT_NAME = "commuter-sync.service"
LAUNCHD_LABEL = "dev.commuter.sync"
MARKER = "written by `commuter service install`"
# Passed on to the service, so it sees the same folders as the shell that installed it.
_ENV_PREFIXES = ("COMMUTER_", "CLAUDE_CONFIG_DIR", "CODEX_HOME", "GEMINI_CLI_HOME", "XDG_")


@dataclass(frozen=True, slots=True)
class ServiceFile:
    kind: str  # "systemd" | "launchd"
    path: Path
    text: bytes
    start_hint: str
    stop_hint: str


def command_argv(quiet: float | None = None) -> list[str]:
    """The absolute command that runs this commuter's daemon."""
    here = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else None
    script = Path(sys.executable).parent / "commuter"
    if here is not None and here.name == "commuter" and os.access(here, os.X_OK):
        base = [str(here)]
    elif script.is_file() and os.access(script, os.X_OK):
        base = [str(script.resolve())]
    else:
        base = [str(Path(sys.executable).resolve()), "-m", "commuter"]
    extra = [] if quiet is None else ["--quiet", f"{quiet:g}"]
    return [*base, "serve", "--sync", *extra]


def _passed_env(settings: Settings) -> dict[str, str]:
    return {
        k: v
        for k, v in sorted(settings.env.items())
        if k.startswith(_ENV_PREFIXES) and "\n" not in v and k.replace("_", "").isalnum()
    }


def _systemd_quote(arg: str) -> str:
    """One ExecStart argument: double-quoted, with systemd's specifier (%) and variable ($)
    expansion and backslashes escaped."""
    escaped = arg.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    return f'"{escaped}"'


def systemd_unit(settings: Settings, quiet: float | None = None) -> ServiceFile:
    config_home = settings.env.get("XDG_CONFIG_HOME") or str(settings.home / ".config")
    path = Path(config_home) / "systemd" / "user" / UNIT_NAME
    argv = command_argv(quiet)
    env_lines = "".join(
        f"Environment={_systemd_quote(f'{k}={v}')}\n" for k, v in _passed_env(settings).items()
    )
    text = (
        f"# {MARKER}\n"
        "[Unit]\n"
        "Description=commuter sync: keep coding-agent sessions in step with paired machines\n"
        "After=network.target\n"
        "\n"
        "[Service]\n"
        "Type=simple\n"
        f"ExecStart={' '.join(_systemd_quote(a) for a in argv)}\n"
        "Restart=on-failure\n"
        "RestartSec=10\n"
        "TimeoutStopSec=30\n"
        "StandardOutput=journal\n"
        "StandardError=journal\n"
        "Environment=PYTHONUNBUFFERED=1\n"
        f"{env_lines}"
        "\n"
        "[Install]\n"
        "WantedBy=default.target\n"
    )
    return ServiceFile(
        "systemd",
        path,
        text.encode(),
        f"systemctl --user daemon-reload && systemctl --user enable --now {UNIT_NAME}",
        f"systemctl --user disable --now {UNIT_NAME}",
    )


def launchd_plist(settings: Settings, quiet: float | None = None) -> ServiceFile:
    path = settings.home / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"
    logs = settings.home / "Library" / "Logs" / "commuter-sync.log"
    plist = {
        "Label": LAUNCHD_LABEL,
        "Comment": MARKER,
        "ProgramArguments": command_argv(quiet),
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": 10,
        "StandardOutPath": str(logs),
        "StandardErrorPath": str(logs),
        "EnvironmentVariables": {"PYTHONUNBUFFERED": "1", **_passed_env(settings)},
    }
    return ServiceFile(
        "launchd",
        path,
        plistlib.dumps(plist),
        f"launchctl bootstrap gui/{os.getuid()} {shlex.quote(str(path))}",
        f"launchctl bootout gui/{os.getuid()} {shlex.quote(str(path))}",
    )


def service_file(settings: Settings, quiet: float | None = None) -> ServiceFile:
    if sys.platform == "darwin":
        return launchd_plist(settings, quiet)
    if sys.platform.startswith("linux"):
        return systemd_unit(settings, quiet)
    raise ConfigError(
        f"`commuter service` knows systemd (Linux) and launchd (macOS), not {sys.platform}"
    )


def ours(path: Path) -> bool:
    """True if `path` is a regular file this command wrote (its marker line)."""
    try:
        if path.is_symlink() or not path.is_file():
            return False
        return MARKER.encode() in path.read_bytes()[:4096]
    except OSError:
        return False


def install(settings: Settings, quiet: float | None = None) -> ServiceFile:
    """Write the unit / plist (replacing one this command wrote before, never another)."""
    found = service_file(settings, quiet)
    if found.path.exists() and not ours(found.path):
        raise ConfigError(f"{found.path} exists and was not written by commuter; left alone")
    found.path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(found.path, found.text, 0o644)
    return found


def uninstall(settings: Settings) -> ServiceFile | None:
    """Remove the unit / plist if this command wrote it; None if there was none."""
    found = service_file(settings)
    if not found.path.exists() and not found.path.is_symlink():
        return None
    if not ours(found.path):
        raise ConfigError(f"{found.path} was not written by commuter; left alone")
    found.path.unlink()
    return found


def manager_works(kind: str) -> bool:
    """True if `systemctl --user` (or launchctl) can be talked to from here."""
    tool = "systemctl" if kind == "systemd" else "launchctl"
    if shutil.which(tool) is None:
        return False
    argv = (
        ["systemctl", "--user", "show-environment"] if kind == "systemd" else ["launchctl", "list"]
    )
    try:
        done = subprocess.run(argv, capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def run_hint(hint: str) -> tuple[bool, str]:
    """Run a start/stop line (a `&&` chain of plain commands); (ok, what it said)."""
    for part in hint.split("&&"):
        try:
            done = subprocess.run(
                shlex.split(part), capture_output=True, text=True, timeout=60, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return False, str(exc)
        if done.returncode != 0:
            said = (done.stderr or done.stdout).strip().splitlines()
            return False, said[-1] if said else f"exit {done.returncode}"
    return True, ""


def manager_state(kind: str) -> str | None:
    """`systemctl --user is-active` of the unit (or launchctl's word), None if unknown."""
    if not manager_works(kind):
        return None
    argv = (
        ["systemctl", "--user", "is-active", UNIT_NAME]
        if kind == "systemd"
        else ["launchctl", "list", LAUNCHD_LABEL]
    )
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if kind == "systemd":
        return done.stdout.strip() or None
    return "loaded" if done.returncode == 0 else "not loaded"
