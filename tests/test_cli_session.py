"""CLI: list, export, import, inspect, as a person runs them (CliRunner in a fake HOME)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from claude_home import DOT_SPACE, LONG, TOOLS, install, transcript
from click.testing import CliRunner

from commuter.bundle.read import counted
from commuter.cli import cli


def run(*args: str, input: bytes | None = None):
    return CliRunner().invoke(cli, list(args), input=input)


def one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture
def machine(home: Path) -> Path:
    install(home)
    files = sorted(
        p for p in (home / ".claude" / "projects").rglob("*.jsonl") if "subagents" not in p.parts
    )
    for i, path in enumerate(files):
        os.utime(path, (1_700_000_000 + i * 60, 1_700_000_000 + i * 60))
    return home


def test_list_human_and_json(machine: Path) -> None:
    result = CliRunner(env={"COLUMNS": "200"}).invoke(cli, ["list"])
    assert result.exit_code == 0
    header, *lines = result.stdout.strip().splitlines()
    assert header.split() == ["ID", "AGENT", "UPDATED", "MSGS", "PROJECT", "FIRST", "PROMPT"]
    assert len(lines) == 9
    assert all(len(line.split()[0]) >= 7 for line in lines)
    assert "~/projects/" in result.stdout and "ago" in result.stdout
    data = json.loads(run("list", "--json").stdout)
    assert {d["session_id"] for d in data} >= {TOOLS, DOT_SPACE}
    times = [d["updated_at"] for d in data]
    assert times == sorted(times, reverse=True)
    # A deep project path is shortened around "…" for the eye; --json keeps it whole.
    [deep] = [line for line in lines if line.startswith(LONG[:7])]
    assert "  ~/projects/…/segment_with.dots-and_underscores06  " in deep
    [whole] = [d["project"] for d in data if d["session_id"] == LONG]
    assert whole.endswith("_underscores05/segment_with.dots-and_underscores06")


def test_list_hides_empty_sessions_unless_all(machine: Path) -> None:
    folder = transcript(machine, machine / "projects" / "my.app", TOOLS).parent
    (folder / "00000000-0000-4000-8000-000000000000.jsonl").write_text(
        '{"type":"queue-operation","operation":"enqueue"}\n'
    )
    assert "0000000" not in run("list").stdout
    assert "0000000" in run("list", "--all").stdout


def test_short_ids_are_unique_prefixes() -> None:
    from commuter.commands.table import short_ids

    got = short_ids(["abcdef0123", "abcdef0199", "zzzzzzzzzz"])
    assert got == {"abcdef0123": "abcdef012", "abcdef0199": "abcdef019", "zzzzzzzzzz": "zzzzzzz"}


def test_export_errors_are_one_line(
    machine: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "x.bundle"
    assert "not found" in one_line_error(run("export", "0000000", "-o", str(out)))
    assert "matches" in one_line_error(run("export", "e", "-o", str(out)))
    assert "no Claude Code session" in one_line_error(run("export", "--latest", "-o", str(out)))
    assert not out.exists()


def test_counts_take_the_right_number() -> None:
    assert [counted(n, "file") for n in (0, 1, 2)] == ["0 files", "1 file", "2 files"]


def test_import_missing_file_is_one_line(tmp_path: Path) -> None:
    assert "no such file" in one_line_error(run("import", str(tmp_path / "nope.bundle")))
    assert "no such file" in one_line_error(run("inspect", str(tmp_path / "nope.bundle")))
    assert "not a regular file" in one_line_error(run("import", str(tmp_path)))


# --- with real bundles (commuter/bundle.py) ------------------------------------------------


@pytest.fixture
def bundle_mod():
    return pytest.importorskip("commuter.bundle")


def test_export_import_round_trip_cli(
    bundle_mod, machine: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proj_a = machine / "projects" / "my.app"
    monkeypatch.chdir(proj_a)
    out = tmp_path / "s.bundle"
    result = run("export", TOOLS[:8], "-o", str(out))
    assert result.exit_code == 0, result.stderr
    assert out.is_file() and bundle_mod.is_bundle(out)
    assert re.search(
        rf"^exported session {TOOLS} \(\d+ messages, \d+ files\) from ", result.stderr
    ), result.stderr
    assert TOOLS in run("inspect", str(out)).stdout
    home_b = tmp_path / "B"
    proj_b = home_b / "code" / "my.app"
    proj_b.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home_b))
    monkeypatch.chdir(proj_b)
    dry = run("import", str(out), "--dry-run")
    assert dry.exit_code == 0, dry.stderr
    assert not (home_b / ".claude").exists()
    result = run("import", str(out), "--project-dir", str(proj_b), "--no-launch")
    assert result.exit_code == 0, result.stderr
    assert f"claude --resume {TOOLS}" in result.stdout
    assert "exported: " in result.stdout and "warning" not in result.stderr
    dest = transcript(home_b, proj_b, TOOLS)
    assert dest.is_file()
    again = run("import", str(out), "--project-dir", str(proj_b), "--no-launch")
    assert again.exit_code == 0 and "unchanged" in again.stdout


def test_import_from_stdin(
    bundle_mod, machine: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(machine / "projects" / "My Project.v2")
    out = tmp_path / "s.bundle"
    assert run("export", "--latest", "-o", str(out)).exit_code == 0
    home_b = tmp_path / "B"
    proj_b = home_b / "p"
    proj_b.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home_b))
    result = run("import", "-", "--project-dir", str(proj_b), "--no-launch", input=out.read_bytes())
    assert result.exit_code == 0, result.stderr
    assert transcript(home_b, proj_b, DOT_SPACE).is_file()
    staging = home_b / ".local" / "share" / "commuter" / "staging"
    assert [p for p in staging.rglob("*") if not p.is_dir()] == []


def test_garbage_bundle_is_one_line_and_writes_nothing(
    bundle_mod, tmp_path: Path, home: Path
) -> None:
    bad = tmp_path / "bad.bundle"
    bad.write_bytes(b"not a bundle at all" * 10)
    one_line_error(run("import", str(bad), "--no-launch"))
    assert not (home / ".claude").exists()


def test_dry_run_says_what_the_import_would_do(
    bundle_mod, machine: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(machine / "projects" / "my.app")
    out = tmp_path / "s.bundle"
    assert run("export", TOOLS[:8], "-o", str(out)).exit_code == 0
    home_b = tmp_path / "B"
    proj_b = home_b / "code" / "my.app"
    proj_b.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home_b))

    def dry() -> str:
        result = run("import", str(out), "--project-dir", str(proj_b), "--dry-run")
        assert result.exit_code == 0, result.stderr
        return next(line for line in result.stdout.splitlines() if "session" in line)

    assert dry() == f"would import: session {TOOLS} in {proj_b}"
    assert run("import", str(out), "--project-dir", str(proj_b), "--no-launch").exit_code == 0
    assert dry() == f"would leave unchanged: session {TOOLS} in {proj_b}"
    at_b = transcript(home_b, proj_b, TOOLS)
    with at_b.open("a") as fh:  # B goes on with its own message: the bundle now diverges
        fh.write(
            json.dumps(
                {
                    "type": "user",
                    "uuid": "1" * 8 + "-1111-4111-8111-" + "1" * 12,
                    "sessionId": TOOLS,
                    "message": {"content": "B"},
                    "timestamp": "2000-01-01T00:00:00Z",  # B's branch began first: it stays
                },
                separators=(",", ":"),
            )
            + "\n"
        )
    # and B lacks the bundle's last entry: neither chain is a prefix of the other
    lines = at_b.read_text().splitlines()
    del lines[max(i for i, line in enumerate(lines[:-1]) if '"uuid"' in line)]
    at_b.write_text("\n".join(lines) + "\n")
    result = run("import", str(out), "--project-dir", str(proj_b), "--dry-run")
    assert (
        f"would import as a fork: session {TOOLS} in {proj_b} (a new id is chosen at import)"
        in result.stdout
    )
    assert "resume:" not in result.stdout
    assert "an import would make the fork " in result.stderr
    assert sorted(p.name for p in at_b.parent.glob("*.jsonl")) == [f"{TOOLS}.jsonl"]
