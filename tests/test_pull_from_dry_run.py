"""`pull --from PEER --dry-run` against a real `commuter serve` on loopback: it names the
session it would take (id, agent, project, size, sender) from the peer's listing, and the
peer serves no bundle; nothing is imported. The same pull without --dry-run does fetch it
(the server logs the bundle it sends: what the dry run's check looks for)."""

from __future__ import annotations

import pytest
from claude_home import TOOLS, transcript
from peerhelp import ServeProcess
from transhelp import env_for, make_world, run


@pytest.fixture
def world(tmp_path):
    w = make_world(tmp_path)
    return w, env_for(w.a.home), env_for(w.b.home)


def test_a_dry_run_pull_from_a_peer_lists_and_downloads_nothing(world):
    w, env_a, env_b = world
    home = ServeProcess(env_a)
    try:
        dry = run(
            env_b,
            "pull",
            "--from",
            "alice",
            "--address",
            home.address,
            "--dry-run",
            cwd=w.project_b,
        )
        assert dry.returncode == 0, dry.stderr
        [line] = dry.stdout.splitlines()
        assert line.startswith(f"would import {TOOLS} (claude, {w.project_a}) from alice ("), line
        assert "via lan, " in line and "KB" in line and line.endswith(": new here"), line
        assert not transcript(w.b.home, w.project_b, TOOLS).exists()
        assert not w.b.state_dir.joinpath("pulled.json").exists()
        # The real pull (the control): the server logs the session it sends.
        real = run(env_b, "pull", "--from", "alice", "--address", home.address, cwd=w.project_b)
        assert real.returncode == 0, real.stderr
        assert transcript(w.b.home, w.project_b, TOOLS).is_file()
        again = run(
            env_b,
            "pull",
            "--from",
            "alice",
            "--address",
            home.address,
            "--dry-run",
            cwd=w.project_b,
        )
        assert again.returncode == 0, again.stderr
        assert again.stdout.strip().endswith(
            ": update of the local session (or a fork if both sides went on)"
        ), again.stdout
    finally:
        code, out, err = home.stop()
    assert code == 0, err
    assert out.count(f"sent session {TOOLS} to bob") == 1, out  # the real pull's only
