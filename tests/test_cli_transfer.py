"""push and pull through the CLI in subprocesses: folder drops, the relay, one-line errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "transports"))
sys.path.insert(0, str(Path(__file__).parent / "relay"))

from claude_home import PLAN, TOOLS, transcript
from relayhelp import RelayProcess
from transhelp import env_for, make_world, one_error_line, run

from commuter import config


@pytest.fixture
def world(tmp_path):
    w = make_world(tmp_path)
    return w, env_for(w.a.home), env_for(w.b.home)


def test_push_to_the_folder_then_pull_once(world):
    w, env_a, env_b = world
    pushed = run(env_a, "push", cwd=w.project_a)
    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stdout.strip() == f"pushed {TOOLS[:7]} to {w.shared} via folder (sealed to bob)"
    assert pushed.stderr == ""
    dry = run(env_b, "pull", "--dry-run", cwd=w.b.home)
    assert dry.returncode == 0 and "would import" in dry.stdout, dry.stderr
    assert not transcript(w.b.home, w.project_b, TOOLS).exists()
    pulled = run(env_b, "pull", cwd=w.b.home)
    assert pulled.returncode == 0, pulled.stderr
    assert "from alice (" in pulled.stdout and "via folder" in pulled.stdout
    assert f"claude --resume {TOOLS}" in pulled.stdout
    assert transcript(w.b.home, w.project_b, TOOLS).is_file()
    again = run(env_b, "pull", cwd=w.b.home)
    assert again.returncode == 0 and again.stdout.strip() == "nothing to pull"


def test_a_pull_of_two_sessions_shows_continue_only_for_the_one_it_resumes(world, tmp_path):
    w, env_a, env_b = world
    for sid, when in ((PLAN, 1_800_000_000), (TOOLS, 1_700_000_000)):  # PLAN last active
        os.utime(transcript(w.a.home, w.project_a, sid), (when, when))
        pushed = run(env_a, "push", sid, cwd=w.project_a)
        assert pushed.returncode == 0, pushed.stderr
    pulled = run(env_b, "pull", cwd=w.b.home)
    assert pulled.returncode == 0, pulled.stderr
    lines = pulled.stdout.splitlines()
    assert sum(f"claude --resume {sid}" in line for line in lines for sid in (PLAN, TOOLS)) == 2
    [cont] = [line for line in lines if line.startswith("continue:")]
    # The continue line follows PLAN's resume line: the session `claude --continue` takes.
    assert f"claude --resume {PLAN}" in lines[lines.index(cont) - 1]


def test_plain_push_without_peers_warns(tmp_path):
    w = make_world(tmp_path, pair=False)
    env_a, env_b = env_for(w.a.home), env_for(w.b.home)
    pushed = run(env_a, "push", cwd=w.project_a)
    assert pushed.returncode == 0, pushed.stderr
    assert "NOT encrypted" in pushed.stderr and "via folder" in pushed.stdout
    [drop] = w.shared.iterdir()
    assert drop.suffix == ".commuter"
    explicit = run(env_a, "push", "--plain", cwd=w.project_a)
    assert explicit.returncode == 0
    # no warning for an asked-for plain drop; the first, unread, is replaced by it (unless
    # both came in the same second: the same bytes under the same name)
    note = f"note: removed {drop.name}, an unread older push of it\n"
    assert explicit.stderr in ("", note)
    assert len([p for p in w.shared.iterdir() if not p.name.startswith(".")]) == 1
    pulled = run(env_b, "pull", cwd=w.b.home)
    assert pulled.returncode == 0 and "plain bundle, sender not verified" in pulled.stdout


def test_push_through_a_relay_restarted_before_the_pull(world, tmp_path):
    w, env_a, env_b = world
    data_dir = tmp_path / "relay-data"
    relay = RelayProcess(data_dir, tmp_path / "relayhome")
    try:
        config.set_value(w.a, "relay", (relay.url,))
        pushed = run(env_a, "push", "--to", "bob", "--via", "relay", cwd=w.project_a)
        assert pushed.returncode == 0, pushed.stderr
        assert pushed.stdout.strip() == f"pushed {TOOLS[:7]} to bob via relay"
        assert relay.stop() == 0
        relay = RelayProcess(data_dir, tmp_path / "relayhome")
        config.set_value(w.b, "relay", (relay.url,))
        pulled = run(env_b, "pull", cwd=w.b.home)
        assert pulled.returncode == 0, pulled.stderr
        assert "via relay" in pulled.stdout and f"claude --resume {TOOLS}" in pulled.stdout
        assert transcript(w.b.home, w.project_b, TOOLS).is_file()
        assert not list((data_dir / "mailboxes").rglob("*.sealed"))
    finally:
        relay.kill()


def test_errors_are_one_line_and_write_nothing(world, tmp_path, unused_tcp_port):
    w, env_a, env_b = world
    one_error_line(run(env_a, "push", "--to", "nobody", cwd=w.project_a), "no paired peer")
    one_error_line(
        run(env_a, "push", "--via", "pigeon", cwd=w.project_a), "unknown transport 'pigeon'"
    )
    one_error_line(
        run(env_a, "push", "--to", "bob", "--via", "relay", cwd=w.project_a),
        "no relay is configured",
    )
    config.set_value(w.a, "relay", (f"http://127.0.0.1:{unused_tcp_port}",))
    one_error_line(
        run(env_a, "push", "--to", "bob", "--via", "relay", cwd=w.project_a),
        f"Error: the relay at http://127.0.0.1:{unused_tcp_port} is unreachable "
        "(connection refused)",
        status=3,
    )
    one_error_line(run(env_b, "pull", "--via", "relay"), "no relay configured")
    config.unset_value(w.a, "transfer-dir")
    # Plain push goes through the configured relay; down, and no transfer dir to fall back to.
    one_error_line(run(env_a, "push", cwd=w.project_a), "is unreachable", status=3)
    config.unset_value(w.a, "relay")
    one_error_line(run(env_a, "push", cwd=w.project_a), "no transfer directory configured")
    assert list(w.shared.iterdir()) == []
    assert [p for p in w.a.staging_root.rglob("*") if not p.is_dir()] == []


def test_pull_from_a_peer_fetches_its_newest_session_for_this_project(world):
    import re
    import select
    import subprocess

    w, env_a, env_b = world
    serve = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "commuter",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-mdns",
        ],
        env={**env_a, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert serve.stdout is not None
        ready, _, _ = select.select([serve.stdout], [], [], 20)
        line = serve.stdout.readline() if ready else ""
        port = re.search(r":(\d+)\s*$", line.strip())
        assert port, line
        pulled = run(
            env_b,
            "pull",
            "--from",
            "alice",
            "--address",
            f"127.0.0.1:{port.group(1)}",
            cwd=w.project_b,
        )
        assert pulled.returncode == 0, pulled.stderr
        assert "from alice (" in pulled.stdout and "claude --resume" in pulled.stdout
    finally:
        serve.terminate()
        serve.communicate(timeout=10)  # and close its pipes
    one_error_line(run(env_b, "pull", "--from", "nobody"), "no paired peer named 'nobody'")


def test_pull_warnings_show_a_hostile_file_name_inert(world):
    # Anyone who can write to the shared folder picks the file names pull warns about.
    w, _, env_b = world
    (w.shared / "evil\x1b[2J\nwarning: all good.commuter").write_bytes(b"not a bundle")
    pulled = run(env_b, "pull", cwd=w.b.home)
    assert "\x1b" not in pulled.stderr and "\\x1b[2J\\x0awarning: all good" in pulled.stderr
    assert all(line.startswith("warning: ") for line in pulled.stderr.splitlines())


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 16 KiB tmpfs (needs root): a shared folder that fills up mid-copy."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a tmpfs")
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mount)],
        capture_output=True,
        timeout=30,
        check=False,
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode(errors='replace')}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30, check=False)


def test_a_full_shared_folder_is_one_line_and_leaves_no_part_file(world, tiny_disk):
    w, env_a, _ = world
    config.set_value(w.a, "transfer-dir", (str(tiny_disk),))
    pushed = run(env_a, "push", cwd=w.project_a)
    one_error_line(pushed, f"cannot write to transfer dir {tiny_disk}: No space left on device")
    assert list(tiny_disk.iterdir()) == []  # no half bundle, not even a hidden .part
    assert [p for p in w.a.staging_root.rglob("*") if not p.is_dir()] == []
    config.set_value(w.a, "transfer-dir", (str(w.shared),))
    assert run(env_a, "push", cwd=w.project_a).returncode == 0  # the retry works


@pytest.mark.parametrize("via", ["relay", "folder", "pigeon"])
def test_pull_from_a_peer_over_another_transport_is_a_usage_error(world, via):
    w, _, env_b = world
    pulled = run(env_b, "pull", "--from", "alice", "--via", via, cwd=w.project_b)
    assert pulled.returncode == 2, (pulled.stdout, pulled.stderr)
    assert pulled.stderr.strip().splitlines()[-1] == (
        f"Error: --from fetches straight from the peer over the LAN; it cannot go --via {via}"
    )
    assert pulled.stdout == "" and "Traceback" not in pulled.stderr


def test_pull_with_only_the_lan_configured_says_why_nothing_can_arrive(world, unused_tcp_port):
    w, _, env_b = world
    config.unset_value(w.b, "transfer-dir")
    pulled = run(env_b, "pull", cwd=w.project_b)
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout.strip() == (
        "nothing to pull (no transfer-dir or relay configured; only bundles sent over the LAN "
        "arrive)"
    )
    assert pulled.stderr == ""
    lan = run(env_b, "pull", "--via", "lan", cwd=w.project_b)
    assert lan.returncode == 0 and lan.stdout.strip() == "nothing to pull"
    config.set_value(w.b, "relay", (f"http://127.0.0.1:{unused_tcp_port}",))
    with_relay = run(env_b, "pull", cwd=w.project_b)  # the relay is down: a warning, no hint
    assert with_relay.returncode == 0 and with_relay.stdout.strip() == "nothing to pull"
    assert with_relay.stderr.startswith("warning: relay: ")
