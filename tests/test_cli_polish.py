"""Issue 15's small things: export's default file, `--via` naming auto, `peers` leaving this
machine out, a pairing code's typo explained before anything goes on the network, and the
session of a project found from a subfolder by `to`/`send`."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from claude_home import TOOLS
from transhelp import (
    ALICE,
    BOB,
    env_for,
    give_identity,
    make_world,
    one_error_line,
    run,
    settings_of,
    trust,
)

from commuter.errors import PairingFailed
from commuter.peer import pairing
from commuter.peer.identity import KEY_FILE
from commuter.peer.peers import Peers


@pytest.fixture
def world(tmp_path):
    return make_world(tmp_path)


def test_export_without_o_writes_the_short_id_bundle_here_and_never_replaces_it(world, tmp_path):
    env = env_for(world.a.home)
    here = tmp_path / "out"
    here.mkdir()
    result = run(env, "export", TOOLS[:9], cwd=here)
    assert result.returncode == 0, result.stderr
    target = here / f"{TOOLS[:8]}.bundle"
    assert result.stderr.strip().endswith(f"to ./{TOOLS[:8]}.bundle")
    assert target.is_file() and list(here.iterdir()) == [target]
    inspected = run(env, "inspect", str(target))
    assert TOOLS in inspected.stdout
    before = target.read_bytes()
    again = run(env, "export", TOOLS, cwd=here)
    one_error_line(again, f"./{TOOLS[:8]}.bundle already exists; pass -o FILE")
    assert target.read_bytes() == before and list(here.iterdir()) == [target]
    # -o naming it replaces it (that is asked for), and -o - still writes to stdout
    assert run(env, "export", TOOLS, "-o", str(target), cwd=here).returncode == 0
    piped = subprocess.run(
        [sys.executable, "-m", "commuter", "export", TOOLS, "-o", "-"],
        env=env,
        cwd=here,
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert piped.returncode == 0 and len(piped.stdout) > 1000
    assert list(here.iterdir()) == [target]


def _exported(env, cwd: Path, *args: str) -> str:
    """The id `export ARGS` in `cwd` exports (into a file of its own beside the world)."""
    out = cwd.parent / f"probe-{time.monotonic_ns()}.bundle"
    result = run(env, "export", *args, "-o", str(out), cwd=cwd)
    found = re.search(r"exported session (\S+) ", result.stderr)
    assert result.returncode == 0 and found, result.stderr
    out.unlink()
    return found.group(1)


def test_export_latest_names_the_file_after_the_newest_session(world):
    env = env_for(world.a.home)
    sid = _exported(env, world.project_a, "--latest")
    result = run(env, "export", "--latest", cwd=world.project_a)
    assert result.returncode == 0, result.stderr
    assert (world.project_a / f"{sid[:8]}.bundle").is_file()


def test_a_broken_link_in_the_way_is_refused_too(world, tmp_path):
    here = tmp_path / "out"
    here.mkdir()
    (here / f"{TOOLS[:8]}.bundle").symlink_to(tmp_path / "nowhere")
    result = run(env_for(world.a.home), "export", TOOLS, cwd=here)
    one_error_line(result, "already exists")
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("command", ["push", "pull"])
def test_via_help_and_errors_name_auto(tmp_path, command):
    env = env_for(tmp_path / "h")
    shown = run(env, command, "--help")
    assert "--via auto|folder|lan|relay" in shown.stdout
    assert "auto " in " ".join(shown.stdout.split()).split("--via auto|folder|lan|relay", 1)[1]
    wrong = run(env, command, "--via", "lna")
    one_error_line(wrong, "unknown transport 'lna' for --via (known: auto, folder, lan, relay)")


def test_peers_leaves_out_this_machine_itself(tmp_path):
    settings = make_world(tmp_path / "w").a  # a machine whose key is ALICE
    env = env_for(settings.home)
    trust(settings, "me-too", ALICE)  # paired with itself (or a copied config)
    shown = run(env, "peers", "--no-scan")
    assert shown.returncode == 0, shown.stderr
    assert "bob" in shown.stdout and "me-too" not in shown.stdout
    assert "me-too is this machine's own key; `commuter unpair me-too` removes it" in shown.stderr
    listed = run(env, "peers", "--no-scan", "--json")
    assert '"bob"' in listed.stdout and "me-too" not in listed.stdout
    assert {p.name for p in Peers.load(settings).all()} == {"bob", "me-too"}  # left as it was


def test_peers_without_a_key_makes_none(tmp_path):
    env = env_for(tmp_path / "h")
    assert run(env, "peers", "--no-scan").returncode == 0
    assert not (settings_of(tmp_path / "h").config_dir / KEY_FILE).exists()
    assert run(env, "id").returncode == 0  # the check above looks where the key goes
    assert (settings_of(tmp_path / "h").config_dir / KEY_FILE).exists()


@pytest.mark.mdns
def test_peers_on_the_lan_leaves_out_this_machines_own_daemon(tmp_path):
    w = make_world(tmp_path)
    env_a, env_b = env_for(w.a.home), env_for(w.b.home)
    serve = subprocess.Popen(
        [sys.executable, "-m", "commuter", "serve", "--host", "127.0.0.1", "--port", "0"],
        env={**env_a, "PYTHONUNBUFFERED": "1"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert serve.stdout is not None
        serve.stdout.readline()
        time.sleep(1)
        seen_by_b = run(env_b, "peers", "--json")
        seen_by_a = run(env_a, "peers", "--json")
    finally:
        serve.terminate()
        serve.communicate(timeout=20)
    assert ALICE.device_id in seen_by_b.stdout.split('"seen"')[1], seen_by_b.stdout
    assert ALICE.device_id not in seen_by_a.stdout, seen_by_a.stdout


@pytest.mark.parametrize(
    ("typed", "what"),
    [
        ("", "it is empty"),
        ("7_orbit_lemon_piano", "it holds '_', which no code has"),
        ("orbit-lemon-piano", "the number in front is missing"),
        ("orbit-7-lemon-piano", "the number goes first"),
        ("7orbit-lemon-piano", "a - goes after the number"),
        ("hello", "it must start with the number `commuter pair` printed"),
        ("0-orbit-lemon-piano", "its number is 1 to 99, not 0"),
        ("7-orbit-lemon", "it has only 2 words after the number, not 3"),
        ("7-orbit-lemon-piano-x", "it has 4 words after the number, not 3"),
        ("7-orbit-lemn-piano", "'lemn' is not one of its words (did you mean 'lemon'?)"),
        ("7-orbit-zzzzzz-piano", "'zzzzzz' is not one of its words"),
    ],
)
def test_a_mistyped_code_says_what_is_wrong(typed, what):
    with pytest.raises(PairingFailed) as caught:
        pairing.parse_code(typed)
    assert str(caught.value).startswith(f"{typed!r} is not a pairing code: {what}")
    assert "\n" not in str(caught.value)


def test_a_code_typed_with_spaces_or_apart_is_fine():
    assert str(pairing.parse_code(" 7 Orbit LEMON  piano ")) == "7-orbit-lemon-piano"


def test_a_mistyped_code_fails_before_any_connection(tmp_path):
    env = env_for(tmp_path / "h")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        started = time.monotonic()
        result = run(env, "pair", "7-orbit-lemn-piano", "--address", f"127.0.0.1:{port}")
        one_error_line(result, "'lemn' is not one of its words (did you mean 'lemon'?)")
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody came
    no_address = run(env, "pair", "7", "orbit", "lemon")  # mDNS would be next: never reached
    one_error_line(no_address, "'7 orbit lemon' is not a pairing code: it has only 2 words")
    assert time.monotonic() - started < 20


def test_to_and_send_find_the_project_session_from_a_subfolder(world, tmp_path):
    env = env_for(world.a.home, COMMUTER_SSH=str(tmp_path / "no-ssh-here"))
    sub = world.project_a / "notes"
    assert _exported(env, sub) == _exported(env, world.project_a, "--latest")
    # `to` gets as far as running ssh (the session was found), and says why it cannot
    result = run(env, "to", "office", cwd=sub)
    one_error_line(result, "cannot run")
    give_identity(world.a, ALICE)
    trust(world.a, "bob", BOB, "127.0.0.1:1")
    sent = run(env, "send", "bob", "--address", "127.0.0.1:1", cwd=sub)
    assert "no Claude Code session" not in sent.stderr and "not found" not in sent.stderr
    assert sent.returncode == 3, sent.stderr  # unreachable: it got past finding the session
