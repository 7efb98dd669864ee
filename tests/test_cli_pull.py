"""pull's own flags (--project-dir, --replace, --yes), plain push through a configured relay,
and pull's warning for a transfer dir that is not there (in subprocesses, two fake machines)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "transports"))
sys.path.insert(0, str(Path(__file__).parent / "relay"))

from claude_home import TOOLS, transcript
from relayhelp import RelayProcess
from transhelp import env_for, make_world, run, say

from commuter import config


@pytest.fixture
def world(tmp_path):
    w = make_world(tmp_path)
    return w, env_for(w.a.home), env_for(w.b.home)


def test_pull_project_dir_places_a_session_whose_path_does_not_exist_here(world, tmp_path):
    w, env_a, env_b = world
    config.unset_value(w.b, "path-map")
    assert run(env_a, "push", TOOLS, cwd=w.project_a).returncode == 0
    shutil.rmtree(w.project_a)  # the source path: not on this machine either
    refused = run(env_b, "pull", cwd=w.b.home)
    assert "pass --project-dir DIR" in refused.stderr
    elsewhere = w.b.home / "elsewhere"
    elsewhere.mkdir()
    pulled = run(env_b, "pull", "--project-dir", str(elsewhere), cwd=w.b.home)
    assert pulled.returncode == 0, pulled.stderr
    assert f"session {TOOLS} in {elsewhere}" in pulled.stdout
    assert transcript(w.b.home, elsewhere, TOOLS).is_file()


def _first_copy(w, env_a, env_b, tmp_path: Path) -> None:
    """B gets the session by hand (export, import): A has no record that B has it, so the
    next push is the whole session, not a delta."""
    bundle = tmp_path / "first.bundle"
    assert run(env_a, "export", TOOLS, "-o", str(bundle), cwd=w.project_a).returncode == 0
    imported = run(env_b, "import", str(bundle), "--no-launch", cwd=w.b.home)
    assert imported.returncode == 0, imported.stderr


def test_pull_replace_takes_the_bundles_copy_of_a_diverged_session(world, tmp_path):
    w, env_a, env_b = world
    _first_copy(w, env_a, env_b, tmp_path)
    at_a, at_b = transcript(w.a.home, w.project_a, TOOLS), transcript(w.b.home, w.project_b, TOOLS)
    say(at_a, "only at A")
    say(at_b, "only at B")
    assert run(env_a, "push", TOOLS, cwd=w.project_a).returncode == 0
    pulled = run(env_b, "pull", "--replace", "--yes", cwd=w.b.home)
    assert pulled.returncode == 0, pulled.stderr
    assert f"replaced: session {TOOLS}" in pulled.stdout
    assert "backup:" in pulled.stderr
    assert "only at A" in at_b.read_text() and "only at B" not in at_b.read_text()


def test_pull_without_replace_keeps_both_and_lists_the_fork(world, tmp_path):
    w, env_a, env_b = world
    _first_copy(w, env_a, env_b, tmp_path)
    say(transcript(w.a.home, w.project_a, TOOLS), "only at A")
    say(transcript(w.b.home, w.project_b, TOOLS), "only at B")
    assert run(env_a, "push", TOOLS, cwd=w.project_a).returncode == 0
    pulled = run(env_b, "pull", cwd=w.b.home)
    assert pulled.returncode == 0, pulled.stderr
    # One branch keeps the id, the other continues as a fork (which one: the convergence rule).
    assert "fork" in pulled.stdout + pulled.stderr
    data = json.loads(run(env_b, "list", "--json", cwd=w.b.home).stdout)
    [fork] = [d for d in data if d["fork_of"] == TOOLS]
    assert fork["fork_from"] and fork["session_id"] != TOOLS


def test_plain_push_goes_through_the_relay_when_one_is_configured(world, tmp_path):
    w, env_a, env_b = world
    relay = RelayProcess(tmp_path / "relay-data", tmp_path / "relayhome")
    try:
        for s in (w.a, w.b):
            config.set_value(s, "relay", (relay.url,))
        pushed = run(env_a, "push", TOOLS, cwd=w.project_a)
        assert pushed.returncode == 0, pushed.stderr
        assert pushed.stdout.strip() == f"pushed {TOOLS[:7]} to bob via relay"
        assert list(w.shared.iterdir()) == []
        pulled = run(env_b, "pull", cwd=w.b.home)
        assert "via relay" in pulled.stdout, pulled.stderr
    finally:
        relay.kill()


def test_plain_push_falls_back_to_the_folder_when_the_relay_is_down(world, unused_tcp_port):
    w, env_a, _env_b = world
    config.set_value(w.a, "relay", (f"http://127.0.0.1:{unused_tcp_port}",))
    pushed = run(env_a, "push", TOOLS, cwd=w.project_a)
    assert pushed.returncode == 0, pushed.stderr
    assert "via folder" in pushed.stdout and "skipped relay:" in pushed.stderr


def test_pull_warns_when_the_transfer_dir_is_missing(world):
    w, _env_a, env_b = world
    shutil.rmtree(w.shared)  # an unmounted Dropbox: not an empty inbox
    pulled = run(env_b, "pull", cwd=w.b.home)
    assert pulled.returncode == 0
    assert f"transfer dir {w.shared} does not exist" in pulled.stderr


def test_warnings_are_coloured_on_a_terminal_only(world):
    from click.testing import CliRunner

    from commuter.cli import cli

    w, _env_a, _env_b = world
    shutil.rmtree(w.shared)
    env = {"HOME": str(w.b.home), "USER": "tester"}
    coloured = CliRunner(env=env).invoke(cli, ["pull", "--via", "folder"], color=True)
    assert "\x1b[33m\x1b[1mwarning:\x1b[0m transfer dir" in coloured.stderr
    plain = CliRunner(env=env).invoke(cli, ["pull", "--via", "folder"])
    assert plain.stderr.startswith("warning: transfer dir") and "\x1b" not in plain.stderr
