"""Is a running claude process writing to a session? (Linux /proc and ~/.claude/sessions.)"""

from __future__ import annotations

import os
from pathlib import Path

import orjson

from commuter.backends.claude.paths import claude_project_folder, is_project_dir_name
from commuter.procscan import PROC, Process, others, read_small


def _is_claude(cmdline: list[str], comm: str) -> bool:
    if comm == "claude":
        return True
    return any(os.path.basename(arg) == "claude" for arg in cmdline[:2])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def busy_pids(transcript: Path, session_id: str, proc: Path = PROC) -> list[int]:
    """Pids of claude processes that hold `transcript` open or run that session in its folder."""
    target = {os.path.realpath(transcript)}
    folder = transcript.parent.name
    found: list[int] = []
    for p in others(proc):
        cmdline = p.cmdline()
        if not _is_claude(cmdline, p.comm()):
            continue
        if p.holds_open(target):
            found.append(p.pid)
            continue
        cwd = p.cwd()
        if cwd is None:
            continue
        if _folder_of(p, cwd) == folder and (
            session_id in " ".join(cmdline) or "--continue" in cmdline or "-c" in cmdline
        ):
            found.append(p.pid)
    return found


def _folder_of(p: Process, cwd: str) -> str:
    """The project folder a claude process uses: CLAUDE_CODE_PROJECT_DIR_NAME from its
    environment when CLAUDE_CONFIG_DIR is set there too (as Claude honours it), else cwd's."""
    env = p.environ()
    name = env.get(b"CLAUDE_CODE_PROJECT_DIR_NAME", b"").decode(errors="replace")
    if env.get(b"CLAUDE_CONFIG_DIR") and is_project_dir_name(name):
        return name
    return claude_project_folder(cwd)


def named_in_sessions_dir(sessions_dir: Path, session_id: str) -> bool:
    """True if a live entry of ~/.claude/sessions/ names the session."""
    try:
        files = [Path(e.path) for e in os.scandir(sessions_dir) if e.is_file()]
    except OSError:
        return False
    needle = session_id.encode()
    for path in files:
        data = read_small(path)
        if needle not in data:
            continue
        pid: object = None
        try:
            parsed = orjson.loads(data)
            pid = parsed.get("pid") if isinstance(parsed, dict) else None
        except orjson.JSONDecodeError:
            pass
        if pid is None and path.stem.isdigit():
            pid = int(path.stem)
        if isinstance(pid, int) and not _pid_alive(pid):
            continue
        return True
    return False


def session_busy(transcript: Path, session_id: str, sessions_dir: Path) -> str | None:
    """A reason the session is in use, or None."""
    pids = busy_pids(transcript, session_id)
    if pids:
        return f"claude (pid {pids[0]}) is writing to session {session_id}"
    if named_in_sessions_dir(sessions_dir, session_id):
        return f"a running claude names session {session_id} in {sessions_dir}"
    return None
