"""Run the real Claude Code CLI in a throw-away HOME against the fake model server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

# The Claude Code versions every e2e test runs against (oldest supported, newest on npm).
# The one place they are listed; CLAUDE_CODE_VERSIONS (space-separated) overrides it, as it
# does for scripts/install-claude.sh.
PINNED_VERSIONS = ("2.1.197", "2.1.332")
CLAUDE_VERSIONS = tuple(os.environ.get("CLAUDE_CODE_VERSIONS", "").split()) or PINNED_VERSIONS
CLAUDE_VERSION = CLAUDE_VERSIONS[0]
API_KEY = "sk-ant-dummy"
REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / ".tools"
INSTALL_HINT = "run `bash scripts/install-claude.sh` (installs it into .tools/claude-<version>)"


class ClaudeNotFound(RuntimeError):
    """No usable Claude Code CLI was found."""


def tools_bin(version: str) -> Path:
    """Where scripts/install-claude.sh puts Claude Code `version`."""
    return TOOLS / f"claude-{version}" / "node_modules" / ".bin" / "claude"


def claude_version(claude_bin: Path) -> str:
    """Return the version `claude --version` reports, e.g. "2.1.197"."""
    out = subprocess.run(
        [str(claude_bin), "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    return out.stdout.split()[0] if out.returncode == 0 and out.stdout.split() else ""


def version_tuple(version: str) -> tuple[int, ...]:
    """ "2.1.332" -> (2, 1, 332), for comparing versions."""
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def find_claude(version: str = CLAUDE_VERSION) -> Path:
    """Return Claude Code `version` from COMMUTER_CLAUDE_BIN, .tools/ or PATH, or raise
    ClaudeNotFound."""
    explicit = os.environ.get("COMMUTER_CLAUDE_BIN")
    wrong: list[str] = []
    if explicit:
        path = Path(explicit)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ClaudeNotFound(
                f"COMMUTER_CLAUDE_BIN={explicit} is not an executable file; {INSTALL_HINT}"
            )
        if claude_version(path) == version:
            return path
        wrong.append(f"COMMUTER_CLAUDE_BIN={explicit} is {claude_version(path) or 'unknown'}")
    on_path = shutil.which("claude")
    for candidate in (tools_bin(version), Path(on_path) if on_path else None):
        if candidate is None or not candidate.is_file():
            continue
        found_version = claude_version(candidate)
        if found_version == version:
            return candidate
        wrong.append(f"{candidate} is {found_version or 'of unknown version'}")
    found = f" ({'; '.join(wrong)})" if wrong else ""
    raise ClaudeNotFound(
        f"Claude Code {version} not found{found}: {INSTALL_HINT}, "
        "or set COMMUTER_CLAUDE_BIN to the binary to use"
    )


def seed_claude_json(home: Path, trusted: list[Path] | tuple[Path, ...] = ()) -> Path:
    """Write ~/.claude.json (onboarding done, dummy key approved) unless it already exists."""
    path = home / ".claude.json"
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        config = {
            "hasCompletedOnboarding": True,
            "customApiKeyResponses": {"approved": [API_KEY[-20:]], "rejected": []},
            "projects": {os.path.realpath(p): {"hasTrustDialogAccepted": True} for p in trusted},
        }
        path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return path


def claude_env(
    home: Path, base_url: str, extra_env: dict[str, str] | None = None
) -> dict[str, str]:
    """Return the clean environment every claude run gets."""
    env = {
        "HOME": str(home),
        "TZ": "UTC",
        "LANG": "C.UTF-8",
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": API_KEY,
        "DISABLE_TELEMETRY": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }
    env.update(extra_env or {})
    return env


def run_claude(
    claude_bin: Path,
    home: Path,
    cwd: Path,
    args: list[str],
    base_url: str,
    extra_env: dict[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run `claude *args` in `cwd` with HOME=`home`; stdin is closed, output captured."""
    if not cwd.is_dir():
        raise FileNotFoundError(f"working directory {cwd} does not exist")
    seed_claude_json(home, trusted=[cwd])
    return subprocess.run(
        [str(claude_bin), *args],
        cwd=cwd,
        env=claude_env(home, base_url, extra_env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def check(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """Return `proc` if it exited 0, else fail with its command, stdout and stderr."""
    if proc.returncode != 0:
        raise AssertionError(
            f"claude exited {proc.returncode}: {proc.args}\n"
            f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        )
    return proc


def claude_project_folder(path: str) -> str:
    """Return Claude's folder name under ~/.claude/projects/ for a project path."""
    units = path.encode("utf-16-le")
    codes = [int.from_bytes(units[i : i + 2], "little") for i in range(0, len(units), 2)]
    enc = "".join(chr(c) if chr(c).isascii() and chr(c).isalnum() else "-" for c in codes)
    if len(enc) <= 200:
        return enc
    h = 0
    for c in codes:
        h = (h * 31 + c) & 0xFFFFFFFF
    h = abs(h - (1 << 32) if h & 0x80000000 else h)
    digits = ""
    while True:
        h, r = divmod(h, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[r] + digits
        if h == 0:
            return enc[:200] + "-" + digits


def project_folder(home: Path, project_dir: Path) -> Path:
    """Return ~/.claude/projects/<enc> for a project directory (symlinks resolved)."""
    return home / ".claude" / "projects" / claude_project_folder(os.path.realpath(project_dir))


def session_files(home: Path, project_dir: Path) -> list[Path]:
    """Return the project's top-level session transcripts, oldest modification first."""
    folder = project_folder(home, project_dir)
    if not folder.is_dir():
        return []
    return sorted(folder.glob("*.jsonl"), key=lambda p: (p.stat().st_mtime_ns, p.name))


def make_newest(transcript: Path) -> None:
    """Give a transcript a later mtime than its siblings, so `--continue` picks it."""
    newest = max(p.stat().st_mtime_ns for p in transcript.parent.glob("*.jsonl"))
    stamp = newest + 1_000_000_000
    os.utime(transcript, ns=(stamp, stamp))


def read_transcript(transcript: Path) -> list[dict[str, object]]:
    """Return the JSON entries of a transcript."""
    lines = transcript.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]
