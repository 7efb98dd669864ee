"""CLI in subprocesses against bad input: one error line, exit 1, nothing written or hung."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_bundle_hostile import bad_size_bundle

TIMEOUT = 60
LEGACY = Path(__file__).parent / "data" / "legacy"


def env_for(home: Path, **extra: str) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("XDG_", "COMMUTER_")) and k != "CLAUDE_CONFIG_DIR"
    }
    env.update(HOME=str(home), USER="tester")
    env.update(extra)
    return env


def run(
    env: dict[str, str],
    *args: str,
    cwd: Path | None = None,
    stdin: int | None = subprocess.DEVNULL,
    timeout: float = TIMEOUT,
):
    return subprocess.run(
        [sys.executable, "-m", "commuter", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        stdin=stdin,
        check=False,
    )


def one_error_line(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), lines[0]
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return env_for(tmp_path / "home")


def test_inspect_of_a_negative_tar_size_is_one_line(tmp_path: Path, env) -> None:
    path = tmp_path / "neg.bundle"
    path.write_bytes(bad_size_bundle(-1))
    one_error_line(run(env, "inspect", str(path)), "corrupt")
    one_error_line(run(env, "import", str(path), "--no-launch"), "corrupt")
    assert not (Path(env["HOME"]) / ".claude").exists()


# --- OSError and encoding errors are one line, not a traceback ----------------------------


@pytest.fixture
def legacy_json() -> dict[str, Any]:
    return json.loads((LEGACY / "plain.json").read_text())


def test_claude_dir_that_is_a_file_is_one_line(tmp_path: Path, env, legacy_json) -> None:
    home = Path(env["HOME"])
    (home / ".claude").write_text("not a folder")
    project = tmp_path / "proj"
    project.mkdir()
    line = one_error_line(
        run(
            env,
            "import",
            str(LEGACY / "plain.json"),
            "--project-dir",
            str(project),
            "--no-launch",
            "--yes",
        ),
        "Not a directory",
    )
    assert str(home / ".claude") in line
    assert (home / ".claude").read_text() == "not a folder"


def test_oserror_format_names_the_path(env) -> None:
    """`Error: <command>: <strerror> (<path>)`, control characters in the path escaped."""
    from commuter.cli import _one_line

    exc = FileNotFoundError(2, "No such file or directory", "/x/a\nb\x1b[31m")
    assert _one_line(exc, "export") == ("export: No such file or directory (/x/a\\x0ab\\x1b[31m)")
    assert _one_line(OSError("plain"), None) == "commuter: plain"


def test_legacy_bundle_with_lone_surrogates_is_one_line(tmp_path: Path, env, legacy_json) -> None:
    legacy_json["session"]["config"]["claude_md"] = "\udcff"
    path = tmp_path / "surr.json"
    path.write_text(json.dumps(legacy_json))  # ensure_ascii: the surrogate is a \udcff escape
    for command in ("inspect", "import"):
        one_error_line(
            run(env, command, str(path), "--no-launch", "--yes")
            if command == "import"
            else run(env, command, str(path)),
            "claude_md",
            "lone surrogate",
        )
    assert not (Path(env["HOME"]) / ".claude").exists()


def test_unexpected_errors_keep_their_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only expected failures are shortened; a bug still shows where it happened."""
    from click.testing import CliRunner

    from commuter import listing
    from commuter.cli import cli

    def boom(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("bug")

    monkeypatch.setattr(listing, "list_sessions", boom)
    result = CliRunner().invoke(cli, ["list"])
    assert isinstance(result.exception, ZeroDivisionError)


def test_a_closed_stdout_pipe_exits_quietly(env) -> None:
    """`commuter config show | head -0`: no traceback and no error line for a broken pipe."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "commuter", "config", "show"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # long before the interpreter has started
    with proc.stderr:
        err = proc.stderr.read()
    assert proc.wait(TIMEOUT) == 141
    assert err == b""


# --- text from a bundle cannot drive the terminal ------------------------------------------

EVIL = "evil\x1b[31mhost\nwarning: x\u2028\x9b2J"


def evil_bundle(tmp_path: Path) -> Path:
    from test_bundle import SID, make_manifest
    from test_bundle_hostile import craft, entry, manifest_bytes

    from commuter.model import Origin

    line = {
        "type": "user",
        "uuid": "00000000-0000-4000-8000-000000000001",
        "sessionId": SID,
        "cwd": "/home/a/proj",
        "message": {"role": "user", "content": f"hi {EVIL}"},
    }
    data = json.dumps(line).encode() + b"\n"
    manifest = manifest_bytes(
        origin=Origin(EVIL, "alice\x07", "2026-05-01T10:00:00Z\x1b]0;title\x07", "0.3.0", None),
        project_dir="/home/a/proj\x1b[2J",
        meta={"first_prompt": EVIL, "file_history": {}},
        git={**make_manifest().git, "branch": "main\nwarning: fake\x1b[0m"},  # type: ignore[dict-item]
    )
    path = tmp_path / "evil.bundle"
    path.write_bytes(craft([entry(f"session/{SID}.jsonl", data)], manifest=manifest))
    return path


def assert_inert(result: subprocess.CompletedProcess[str]) -> None:
    out = result.stdout + result.stderr
    for raw in ("\x1b", "\x07", "\x9b", "\u2028"):
        assert raw not in out, (raw, out)
    lines = out.splitlines()
    assert not [line for line in lines if line.startswith(("warning: x", "warning: fake"))]


def test_inspect_escapes_what_the_bundle_says(tmp_path: Path, env) -> None:
    result = run(env, "inspect", str(evil_bundle(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert_inert(result)
    assert "evil\\x1b[31mhost\\x0awarning: x\\u2028\\x9b2J" in result.stdout
    assert "/home/a/proj\\x1b[2J" in result.stdout


def test_import_and_list_escape_what_the_bundle_says(tmp_path: Path, env) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    bundle = evil_bundle(tmp_path)
    result = run(env, "import", str(bundle), "--project-dir", str(project), "--no-launch", "--yes")
    assert result.returncode == 0, result.stderr
    assert_inert(result)
    assert "exported: " in result.stdout and "evil\\x1b[31mhost\\x0a" in result.stdout
    listed = run(env, "list", "--all")
    assert listed.returncode == 0, listed.stderr
    assert_inert(listed)
    assert "hi evil\\x1b[31mhost warning: x" in listed.stdout  # a newline in a prompt: a space
    as_json = run(env, "list", "--all", "--json")
    assert_inert(as_json)
    assert json.loads(as_json.stdout)[0]["first_prompt"].startswith("hi evil\x1b[31mhost")
    assert "\\u001b[31m" in as_json.stdout and "\\u009b2J" in as_json.stdout


# --- export -o writes only a regular file, in a folder that exists -------------------------


@pytest.fixture
def exporter(tmp_path: Path, env) -> dict[str, str]:
    from claude_home import install

    install(Path(env["HOME"]))
    return env


def export(env: dict[str, str], target: Path | str, cwd: Path):
    from claude_home import TOOLS

    return run(env, "export", TOOLS[:8], "-o", str(target), cwd=cwd, timeout=30)


def test_export_refuses_a_fifo(tmp_path: Path, exporter) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    one_error_line(export(exporter, fifo, tmp_path), str(fifo), "not a regular file", "fifo")
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left


def test_export_refuses_a_symlink_and_leaves_both_ends(tmp_path: Path, exporter) -> None:
    real = tmp_path / "real.bundle"
    real.write_bytes(b"keep me")
    link = tmp_path / "link.bundle"
    link.symlink_to(real)
    one_error_line(export(exporter, link, tmp_path), str(link), "symlink")
    assert link.is_symlink() and real.read_bytes() == b"keep me"
    dangling = tmp_path / "dangling.bundle"
    dangling.symlink_to(tmp_path / "nowhere")
    one_error_line(export(exporter, dangling, tmp_path), "symlink")
    assert not (tmp_path / "nowhere").exists()


def test_export_does_not_create_missing_folders(tmp_path: Path, exporter) -> None:
    target = tmp_path / "missing" / "deeper" / "x.bundle"
    one_error_line(
        export(exporter, target, tmp_path), f"no such directory: {tmp_path / 'missing' / 'deeper'}"
    )
    assert not (tmp_path / "missing").exists()
    (tmp_path / "afile").write_text("")
    one_error_line(
        export(exporter, tmp_path / "afile" / "x.bundle", tmp_path), "is not a directory"
    )
    one_error_line(export(exporter, tmp_path, tmp_path), "is a directory")


def test_export_leaves_a_command_file_whose_name_is_not_utf8_at_home(
    tmp_path: Path, exporter
) -> None:
    """A bundle member name must be UTF-8: such a file stays behind, the session travels."""
    commands = Path(exporter["HOME"]) / "projects" / "my.app" / ".claude" / "commands"
    commands.mkdir(parents=True, exist_ok=True)
    (commands / os.fsdecode(b"\xff.md")).write_text("x")
    (commands / "fine.md").write_text("y")
    target = tmp_path / "x.bundle"
    result = export(exporter, target, tmp_path)
    assert result.returncode == 0, result.stderr
    shown = subprocess.run(
        [sys.executable, "-m", "commuter", "inspect", str(target)],
        env=exporter,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "project/.claude/commands/fine.md" in shown.stdout
    assert "\\udcff" not in shown.stdout and "\\xff" not in shown.stdout


def test_export_replaces_a_regular_file(tmp_path: Path, exporter) -> None:
    target = tmp_path / "old.bundle"
    target.write_bytes(b"old")
    result = export(exporter, target, tmp_path)
    assert result.returncode == 0, result.stderr
    assert target.read_bytes().startswith(b"COMMUTER-BUNDLE ")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    relative = export(exporter, "rel.bundle", tmp_path)  # a bare name: the cwd is its folder
    assert relative.returncode == 0, relative.stderr
    assert (tmp_path / "rel.bundle").is_file()


# --- config show / unset --------------------------------------------------------------------


def test_config_show_and_unset(tmp_path: Path, env) -> None:
    empty = run(env, "config", "show")
    assert empty.returncode == 0, empty.stderr
    config_file = Path(empty.stdout.splitlines()[0].removeprefix("config file: "))
    assert empty.stdout.splitlines()[1:] == ["(nothing set)"]
    assert json.loads(run(env, "config", "show", "--json").stdout) == {}
    assert not config_file.exists()
    drop = tmp_path / "drop"
    for args in (
        ("path-map", "/home/me/p", "/Users/me/code"),
        ("transfer-dir", str(drop)),
        ("relay", "https://relay.example/"),
        ("name", "office"),
    ):
        result = run(env, "config", "set", *args)
        assert result.returncode == 0 and result.stdout == f"{args[0]} set\n", result.stderr
    shown = run(env, "config", "show").stdout.splitlines()
    assert shown[1:] == [
        "path-map: /home/me/p <-> /Users/me/code",
        f"transfer-dir: {drop}",
        "relay: https://relay.example",
        "name: office",
    ]
    assert json.loads(run(env, "config", "show", "--json").stdout) == {
        "path-map": [["/home/me/p", "/Users/me/code"]],
        "transfer-dir": str(drop),
        "relay": "https://relay.example",
        "name": "office",
    }
    for key in ("relay", "path-map"):
        result = run(env, "config", "unset", key)
        assert result.returncode == 0 and result.stdout == f"{key} unset\n", result.stderr
    assert json.loads(run(env, "config", "show", "--json").stdout) == {
        "transfer-dir": str(drop),
        "name": "office",
    }
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600
    one_error_line(run(env, "config", "unset", "colour"), "unknown key 'colour'")
    assert json.loads(config_file.read_text()) == {"transfer-dir": str(drop), "name": "office"}


@pytest.mark.parametrize(
    "text",
    ["{not json", "[1, 2]", '{"path-map": 5}', '{"path-map": [["only-one"]]}', '{"path-map": [1]}'],
)
def test_config_show_of_a_broken_file_is_one_line(env, text: str) -> None:
    shown = run(env, "config", "show")
    config_file = Path(shown.stdout.splitlines()[0].removeprefix("config file: "))
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text(text)
    one_error_line(run(env, "config", "show"), "not valid commuter config")
    one_error_line(run(env, "config", "unset", "relay"), "not valid commuter config")
    assert config_file.read_text() == text


# --- no terminal: never a question, never a hang --------------------------------------------


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.email=a@b", "-c", "user.name=a", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        timeout=TIMEOUT,
    )


def test_import_without_a_terminal_warns_instead_of_asking(tmp_path: Path, env) -> None:
    """Git differences make a terminal ask "Import anyway?"; with stdin a pipe that stays open
    and never answers, the import must not wait for it: it warns and goes on."""
    if shutil.which("git") is None:
        pytest.skip("no git")
    from test_bundle import SID
    from test_bundle_hostile import craft, entry, manifest_bytes

    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "feature")
    (repo / "a.txt").write_text("one\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "one")
    (repo / "a.txt").write_text("two\n")
    line = {
        "type": "user",
        "uuid": "00000000-0000-4000-8000-000000000001",
        "sessionId": SID,
        "cwd": str(repo),
        "message": {"role": "user", "content": "hello"},
    }
    git: dict[str, object] = {
        "branch": "main",
        "commit": "c" * 40,
        "dirty": [],
        "remote": None,
        "root_commit": None,
    }
    bundle = tmp_path / "s.bundle"
    bundle.write_bytes(
        craft(
            [entry(f"session/{SID}.jsonl", json.dumps(line).encode() + b"\n")],
            manifest=manifest_bytes(project_dir=str(repo), git=git),
        )
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "commuter", "import", str(bundle), "--no-launch"],
        env=env,
        cwd=repo,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("import waited for an answer on a stdin that is not a terminal")
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert "warning: source was on branch main, here it is feature" in err
    assert "warning: source commit cccccccccccc is not in this repository" in err
    assert "uncommitted change" in err
    assert "Import anyway" not in err and "[yes" not in err
    assert f"imported: session {SID}" in out


def test_the_import_size_cap_comes_from_the_environment(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    args = (
        "import",
        str(LEGACY / "plain.json"),
        "--project-dir",
        str(project),
        "--no-launch",
        "--yes",
    )
    small = env_for(tmp_path / "home", COMMUTER_MAX_IMPORT_SIZE="1k")
    one_error_line(run(small, *args), "COMMUTER_MAX_IMPORT_SIZE")
    assert not (tmp_path / "home" / ".claude").exists()
    bad = env_for(tmp_path / "home", COMMUTER_MAX_IMPORT_SIZE="lots")
    one_error_line(run(bad, *args), "COMMUTER_MAX_IMPORT_SIZE")
    fine = env_for(tmp_path / "home", COMMUTER_MAX_IMPORT_SIZE="64M")
    assert run(fine, *args).returncode == 0
