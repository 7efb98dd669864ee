"""`commuter send` of a large session on a terminal draws a bar while the export streams into
the upload (no temp bundle; the bar counts the session's bytes as the bundle's writer reads
them), to a real `commuter serve --auto-import`; in a pipe it draws none."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "peer"))

from claude_home import TOOLS, transcript
from peerhelp import ServeProcess
from test_progress import BAR, _grow, big, run_on_tty
from transhelp import env_for, run

__all__ = ["big"]  # the fixture


def test_a_large_send_draws_a_bar_on_a_terminal_and_none_in_a_pipe(big, tmp_path):
    env_a, env_b = env_for(big.a.home), env_for(big.b.home)
    server = ServeProcess(env_b, "--auto-import")
    try:
        status, out, tty = run_on_tty(
            env_a, "send", "bob", TOOLS, "--address", server.address, cwd=big.project_a
        )
        assert status == 0, tty
        assert BAR in tty and "to bob" in tty and "MB" in tty
        assert f"sent session {TOOLS} to bob (imported there)" in out
        assert transcript(big.b.home, big.project_b, TOOLS).is_file()
        _grow(transcript(big.a.home, big.project_a, TOOLS), 1)
        piped = run(env_a, "send", "bob", TOOLS, "--address", server.address, cwd=big.project_a)
        assert piped.returncode == 0, piped.stderr
        assert BAR not in piped.stderr and "sent session" in piped.stdout
    finally:
        server.stop()
