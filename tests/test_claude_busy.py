"""A session a running claude writes to is never replaced under it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from claude_home import DOT_SPACE, carry, install, transcript
from conftest import settings_for

from commuter import config
from commuter.backends.claude.procs import busy_pids, named_in_sessions_dir
from commuter.errors import SessionBusy

STAND_IN = """import sys, time
fh = open(sys.argv[1], "rb")
print("ready", flush=True)
time.sleep(30)
"""

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux /proc")


def _dumps(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _stand_in(tmp_path: Path, held: Path) -> subprocess.Popen[str]:
    script = tmp_path / "bin" / "claude"
    script.parent.mkdir(exist_ok=True)
    script.write_text(STAND_IN)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(held)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_stand_in_claude_holding_the_file_is_seen(tmp_path: Path) -> None:
    held = tmp_path / f"{DOT_SPACE}.jsonl"
    held.write_text("{}\n")
    proc = _stand_in(tmp_path, held)
    try:
        assert proc.pid in busy_pids(held, DOT_SPACE)
    finally:
        proc.kill()
        proc.communicate(timeout=10)  # and close its stdout
    assert busy_pids(held, DOT_SPACE) == []


def test_sessions_dir_entry_for_live_pid(tmp_path: Path) -> None:
    sessions = tmp_path / "sessions"
    sessions.mkdir()
    assert not named_in_sessions_dir(sessions, DOT_SPACE)
    (sessions / "1.json").write_text(json.dumps({"pid": os.getpid(), "sessionId": DOT_SPACE}))
    assert named_in_sessions_dir(sessions, DOT_SPACE)
    (sessions / "1.json").write_text(json.dumps({"pid": 2**22 + 12345, "sessionId": DOT_SPACE}))
    assert not named_in_sessions_dir(sessions, DOT_SPACE)


def test_update_refused_while_claude_writes(tmp_path: Path) -> None:
    a = install(tmp_path / "A")
    b = tmp_path / "B"
    (b / "code" / "My Project.v2").mkdir(parents=True)
    sa, sb = settings_for(a), settings_for(b)
    config.set_value(sb, "path-map", (str(a / "projects"), str(b / "code")))
    carry(sa, sb, tmp_path / "s1", session=DOT_SPACE, cwd=a)
    at_a = transcript(a, a / "projects" / "My Project.v2", DOT_SPACE)
    with at_a.open("a") as fh:
        fh.write(_dumps({"type": "user", "uuid": str(uuid.uuid4())}) + "\n")
    at_b = transcript(b, b / "code" / "My Project.v2", DOT_SPACE)
    before = at_b.read_bytes()
    proc = _stand_in(tmp_path, at_b)
    try:
        deadline = time.monotonic() + 5
        while not busy_pids(at_b, DOT_SPACE) and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(SessionBusy, match="quit it first"):
            carry(sa, sb, tmp_path / "s2", session=DOT_SPACE, cwd=a)
        assert at_b.read_bytes() == before
    finally:
        proc.kill()
        proc.communicate(timeout=10)  # and close its stdout
    assert carry(sa, sb, tmp_path / "s3", session=DOT_SPACE, cwd=a).action == "updated"


def test_a_claude_with_a_project_dir_name_is_seen_in_that_folder(tmp_path: Path) -> None:
    # A stand-in `claude --continue` in some other directory, with the variable set as Claude
    # Code honours it: it writes to projects/<name>/, whatever its cwd.
    folder = tmp_path / "projects" / "team"
    folder.mkdir(parents=True)
    held = folder / f"{DOT_SPACE}.jsonl"
    held.write_text("{}\n")
    script = tmp_path / "bin" / "claude"
    script.parent.mkdir()
    script.write_text("import time\nprint('ready', flush=True)\ntime.sleep(30)\n")
    env = {**os.environ, "CLAUDE_CONFIG_DIR": str(tmp_path), "CLAUDE_CODE_PROJECT_DIR_NAME": "team"}
    for extra, seen in (({}, True), ({"CLAUDE_CONFIG_DIR": ""}, False)):
        proc = subprocess.Popen(
            [sys.executable, str(script), "--continue"],
            cwd=tmp_path / "bin",
            env={**env, **extra},
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            assert (proc.pid in busy_pids(held, DOT_SPACE)) is seen
        finally:
            proc.kill()
            proc.communicate(timeout=10)  # and close its stdout
