"""Progress bars on a terminal for a large export, import, folder push and pull; none in a pipe."""

from __future__ import annotations

import base64
import json
import os
import pty
import subprocess
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "transports"))

from claude_home import TOOLS, transcript
from transhelp import env_for, make_world, run

BAR = "━"  # rich's bar column


def _grow(path: Path, mib: int) -> None:
    """Make a transcript `mib` MiB larger with entries Claude Code would skip (summaries) that
    compress poorly, as a bundle of a long session does not shrink to nothing."""
    with path.open("a", encoding="utf-8") as fh:
        for i in range(mib):
            pad = base64.b64encode(os.urandom(3 << 18)).decode()
            fh.write(json.dumps({"type": "summary", "summary": pad, "leafUuid": f"pad-{i}"}) + "\n")


def run_on_tty(env: dict[str, str], *args: str, cwd: Path) -> tuple[int, str, str]:
    """Run commuter with stderr on a pseudo-terminal: (exit status, stdout, what the tty got)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "commuter", *args],
        env={**env, "TERM": "xterm", "COLUMNS": "100"},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=slave,
        stdin=subprocess.DEVNULL,
    )
    os.close(slave)
    got: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not data:
                return
            got.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    out, _ = proc.communicate(timeout=120)
    reader.join(timeout=10)
    os.close(master)
    return proc.returncode, out.decode(), b"".join(got).decode(errors="replace")


@pytest.fixture
def big(tmp_path):
    w = make_world(tmp_path)
    _grow(transcript(w.a.home, w.project_a, TOOLS), 24)
    return w


def test_a_large_export_and_import_draw_bars_on_a_terminal(big, tmp_path):
    env_a, env_b = env_for(big.a.home), env_for(big.b.home)
    out = tmp_path / "s.bundle"
    status, _, tty = run_on_tty(env_a, "export", TOOLS, "-o", str(out), cwd=big.project_a)
    assert status == 0, tty
    assert BAR in tty and f"export {TOOLS[:8]}" in tty and "MB" in tty
    assert "exported session" in tty  # the bar is gone; the summary line stays
    status, _, tty = run_on_tty(env_b, "import", str(out), "--no-launch", cwd=big.b.home)
    assert status == 0, tty
    assert BAR in tty and "import" in tty
    assert transcript(big.b.home, big.project_b, TOOLS).stat().st_size > 24 << 20


def test_folder_push_and_pull_draw_bars_and_a_pipe_gets_none(big):
    env_a, env_b = env_for(big.a.home), env_for(big.b.home)
    status, _, tty = run_on_tty(env_a, "push", TOOLS, cwd=big.project_a)
    assert status == 0, tty
    assert "folder send" in tty and BAR in tty
    status, out, tty = run_on_tty(env_b, "pull", cwd=big.b.home)
    assert status == 0, tty
    assert "fetch " in tty and BAR in tty and "import" in tty
    assert "from alice" in out
    piped = run(env_a, "export", TOOLS, "-o", str(big.a.home / "x.bundle"), cwd=big.project_a)
    assert piped.returncode == 0 and BAR not in piped.stderr
    assert piped.stderr.startswith("exported session"), piped.stderr


def test_small_transfers_and_no_progress_draw_nothing(big, tmp_path):
    env_a = env_for(big.a.home, COMMUTER_NO_PROGRESS="1")
    status, _, tty = run_on_tty(
        env_a, "export", TOOLS, "-o", str(tmp_path / "b.bundle"), cwd=big.project_a
    )
    assert status == 0 and BAR not in tty, tty
    from claude_home import PLAN

    small = run_on_tty(
        env_for(big.a.home), "export", PLAN, "-o", str(tmp_path / "p.bundle"), cwd=big.project_a
    )
    assert small[0] == 0 and BAR not in small[2], small
