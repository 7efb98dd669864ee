"""Issue 15 walked through on a terminal: what `pull` asks about a diverged session (which
bundle, both sides, what replace discards), answered on a real pseudo-terminal."""

from __future__ import annotations

from claude_home import TOOLS, transcript
from test_cli_pull import _first_copy
from test_picker import on_tty
from transhelp import env_for, make_world, run, say


def test_pull_on_a_terminal_names_the_bundle_and_both_sides_before_asking(tmp_path):
    w = make_world(tmp_path)
    env_a, env_b = env_for(w.a.home), env_for(w.b.home)
    _first_copy(w, env_a, env_b, tmp_path)
    say(transcript(w.a.home, w.project_a, TOOLS), "only at A")
    at_b = transcript(w.b.home, w.project_b, TOOLS)
    say(at_b, "only at B")
    before = at_b.read_bytes()
    assert run(env_a, "push", TOOLS, cwd=w.project_a).returncode == 0
    status, out, tty = on_tty(env_b, "pull", cwd=w.b.home, answer=b"cancel\n", when=b"cancel")
    assert status == 0, tty
    assert f"holds session {TOOLS}" in tty
    assert "here:" in tty and "bundle:" in tty and "only at B" in tty and "only at A" in tty
    assert "replace: the bundle's copy replaces this one" in tty
    assert at_b.read_bytes() == before  # cancelled: nothing written, the drop stays
    assert "nothing imported (1 skipped" in out
