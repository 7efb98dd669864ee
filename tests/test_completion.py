"""Shell completion: peer names for --to/--from/send/unpair, session ids for the session
arguments, and `commuter completion SHELL` printing a script bash really completes with."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from claude_home import PLAIN, PLAN, TOOLS
from transhelp import CAROL, env_for, make_world, run, trust


@pytest.fixture
def world(tmp_path):
    w = make_world(tmp_path)
    trust(w.a, "office", CAROL)  # paired: bob and office
    return w


def complete(env, words: str, cword: int, shell: str = "bash") -> list[str]:
    """What commuter offers for the shell's COMP_WORDS/COMP_CWORD (values only)."""
    done = subprocess.run(
        [sys.executable, "-m", "commuter"],
        env={
            **env,
            "_COMMUTER_COMPLETE": f"{shell}_complete",
            "COMP_WORDS": words,
            "COMP_CWORD": str(cword),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return [line.split(",", 1)[1] for line in done.stdout.splitlines() if line]


def test_peer_names_complete_for_every_param_that_names_a_peer(world):
    env = env_for(world.a.home)
    assert sorted(complete(env, "commuter push --to ", 3)) == ["bob", "office"]
    assert complete(env, "commuter push --to o", 3) == ["office"]
    assert sorted(complete(env, "commuter send ", 2)) == ["bob", "office"]
    assert complete(env, "commuter unpair b", 2) == ["bob"]
    assert complete(env, "commuter pull --from of", 3) == ["office"]


def test_session_ids_complete_by_prefix(world):
    env = env_for(world.a.home)
    assert complete(env, f"commuter export {TOOLS[:2]}", 2) == [TOOLS]
    assert complete(env, f"commuter push {PLAN[:3].upper()}", 2) == [PLAN]
    assert complete(env, f"commuter send bob {PLAIN[:4]}", 3) == [PLAIN]
    assert complete(env, f"commuter to office {PLAIN[:4]}", 3) == [PLAIN]
    everything = complete(env, "commuter export ", 2)
    assert TOOLS in everything and PLAN in everything and len(everything) == 9
    assert complete(env, "commuter export --agent codex ", 4) == []  # codex has none here


def test_zsh_gets_the_first_prompt_as_the_description(world):
    env = env_for(world.a.home)
    done = subprocess.run(
        [sys.executable, "-m", "commuter"],
        env={
            **env,
            "_COMMUTER_COMPLETE": "zsh_complete",
            "COMP_WORDS": f"commuter export {PLAN[:4]}",
            "COMP_CWORD": "2",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.stdout.splitlines() == ["plain", PLAN, "Plan a small refactor."]


def test_completing_in_a_broken_home_offers_nothing_and_prints_no_error(tmp_path):
    env = env_for(tmp_path / "h")
    config = tmp_path / "h" / ".config" / "commuter"
    config.mkdir(parents=True)
    (config / "peers.json").write_text("{not json")
    assert complete(env, "commuter push --to ", 3) == []


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_prints_the_script(tmp_path, shell):
    result = run(env_for(tmp_path / "h"), "completion", shell)
    assert result.returncode == 0, result.stderr
    assert "_COMMUTER_COMPLETE" in result.stdout and f"{shell}_complete" in result.stdout
    one_error = run(env_for(tmp_path / "h"), "completion", "tcsh")
    assert one_error.returncode == 2


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_bash_completes_peer_names_with_the_printed_script(world, tmp_path):
    env = env_for(world.a.home)
    script = tmp_path / "commuter.bash"
    script.write_text(run(env, "completion", "bash").stdout)
    shim = tmp_path / "bin" / "commuter"  # what pipx or pip puts on PATH
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m commuter "$@"\n')
    shim.chmod(0o755)
    probe = (
        f"source {script}; COMP_WORDS=(commuter push --to o); COMP_CWORD=3; "
        'COMP_LINE="commuter push --to o"; _commuter_completion commuter o; '
        'printf "%s\\n" "${COMPREPLY[@]}"'
    )
    done = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", probe],
        env={**env, "PATH": f"{shim.parent}:{env['PATH']}"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.stdout.split() == ["office"], (done.stdout, done.stderr)


def test_file_arguments_fall_back_to_the_shells_file_names(tmp_path):
    env = env_for(tmp_path / "h")
    for words, cword in (("commuter import ./s", 2), ("commuter export -o ./s", 3)):
        done = subprocess.run(
            [sys.executable, "-m", "commuter"],
            env={
                **env,
                "_COMMUTER_COMPLETE": "bash_complete",
                "COMP_WORDS": words,
                "COMP_CWORD": str(cword),
            },
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.stdout.split() == ["file,./s"], (words, done.stdout)


def test_to_and_from_complete_the_hosts_of_ssh_config(tmp_path):
    env = env_for(tmp_path / "h")
    ssh = tmp_path / "h" / ".ssh"
    ssh.mkdir()
    (ssh / "config").write_text(
        "Host office office-vpn\n  HostName 10.0.0.2\nHost *.example.org !bad\n"
        "  User me\nhost build\nMatch host x\n"
    )
    assert complete(env, "commuter to ", 2) == ["office", "office-vpn", "build"]
    assert complete(env, "commuter from off", 2) == ["office", "office-vpn"]


def test_agent_completes_the_backend_names_plugins_too(tmp_path):
    from test_startup import write_plugin

    site = tmp_path / "site"
    write_plugin(site)  # installed as a distribution: its entry point names it
    env = {k: v for k, v in env_for(tmp_path / "h").items() if k != "PYTHONPATH"}
    assert complete(env, "commuter list --agent ", 3) == ["claude", "codex", "gemini"]
    assert complete(env, "commuter push --agent c", 3) == ["claude", "codex"]
    env["PYTHONPATH"] = str(site)
    assert complete(env, "commuter export --agent ", 3) == ["claude", "codex", "gemini", "notes"]
    assert complete(env, "commuter to --agent n", 3) == ["notes"]
    assert complete(env, "commuter send --agent x", 3) == []


def _shim(tmp_path) -> str:
    """A `commuter` on PATH that runs this checkout (what pipx or pip puts there)."""
    shim = tmp_path / "shim" / "commuter"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m commuter "$@"\n')
    shim.chmod(0o755)
    return str(shim.parent)


@pytest.mark.skipif(shutil.which("fish") is None, reason="no fish (apt-get install fish)")
def test_fish_completes_peer_names_with_the_printed_script(world, tmp_path):
    env = env_for(world.a.home)
    script = tmp_path / "commuter.fish"
    script.write_text(run(env, "completion", "fish").stdout)
    done = subprocess.run(
        ["fish", "--no-config", "-c", f"source {script}; complete -C 'commuter push --to o'"],
        env={**env, "PATH": f"{_shim(tmp_path)}:{env['PATH']}"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert [line.split("\t")[0] for line in done.stdout.splitlines()] == ["office"], (
        done.stdout,
        done.stderr,
    )


@pytest.mark.skipif(shutil.which("zsh") is None, reason="no zsh (apt-get install zsh)")
def test_zsh_completes_peer_names_with_the_printed_script(world, tmp_path):
    """The script registers its completer, and that completer (called as compsys would, with
    zsh's own compadd/_describe standing in as printers) offers the peer."""
    env = env_for(world.a.home)
    script = tmp_path / "_commuter.zsh"
    script.write_text(run(env, "completion", "zsh").stdout)
    probe = (
        f"autoload -Uz compinit && compinit -u -D && source {script} && "
        "print -r -- $_comps[commuter] && "
        "compadd() { print -rl -- ${(P)${@[-1]}} }; _describe() { print -rl -- ${(P)3} }; "
        "words=(commuter push --to o); CURRENT=4; _commuter_completion"
    )
    done = subprocess.run(
        ["zsh", "-f", "-c", probe],
        env={**env, "PATH": f"{_shim(tmp_path)}:{env['PATH']}"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    registered, *offered = done.stdout.splitlines()
    assert registered == "_commuter_completion"
    assert [line.split(":")[0] for line in offered] == ["office"], done.stdout
