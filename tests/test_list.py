"""`list` as a person reads it: a header, aligned columns fitted to the terminal, forks marked,
message counts, `--here` from any subfolder; and the fork / replace / cancel question."""

from __future__ import annotations

import json
import os
import subprocess
import unicodedata
import uuid
from pathlib import Path

import pytest
from claude_home import DOT_SPACE, LONG, TOOLS, carry, install, transcript
from click.testing import CliRunner
from conftest import answering, settings_for

from commuter import config, forks
from commuter.cli import cli
from commuter.commands.session import project_root
from commuter.commands.table import fit_words as _fit_words
from commuter.model import ImportOptions


def run(*args: str, columns: int = 80, home: Path | None = None, color: bool = False):
    env = {"COLUMNS": str(columns)}
    if home is not None:
        env["HOME"] = str(home)
    return CliRunner(env=env).invoke(cli, list(args), color=color)


def cells(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _say(path: Path, text: str) -> None:
    entry = {
        "type": "user",
        "uuid": str(uuid.uuid4()),
        "sessionId": DOT_SPACE,
        "message": {"role": "user", "content": text},
        # what B says began first: B's branch keeps the id (the convergence rule)
        "timestamp": f"2099-01-01T00:00:0{int('at A' in text)}Z",
    }
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry, separators=(",", ":")) + "\n")


@pytest.fixture
def machine(home: Path) -> Path:
    install(home)
    # A long prompt, so that the prompt column must be cut (at a word).
    path = transcript(home, home / "projects" / "my.app", TOOLS)
    lines = path.read_text(encoding="utf-8").splitlines()
    first = next(i for i, line in enumerate(lines) if '"type":"user"' in line)
    entry = json.loads(lines[first])
    entry["message"]["content"] = "please refactor the enormous configuration loader " * 3
    lines[first] = json.dumps(entry, separators=(",", ":"))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return home


@pytest.fixture
def two(tmp_path: Path):
    a = install(tmp_path / "A")
    b = tmp_path / "B"
    (b / "code" / "My Project.v2").mkdir(parents=True)
    sa, sb = settings_for(a), settings_for(b)
    for s in (sa, sb):
        config.set_value(s, "path-map", (str(a / "projects"), str(b / "code")))
    return a, b, sa, sb


@pytest.mark.parametrize("columns", [80, 100, 160])
def test_list_fits_the_terminal_with_a_header_and_aligned_columns(
    machine: Path, columns: int
) -> None:
    result = run("list", columns=columns)
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.rstrip("\n").splitlines()
    assert header.startswith("ID ") and "MSGS" in header and "PROJECT" in header
    assert len(rows) == 9
    assert all(cells(line) <= columns for line in [header, *rows])  # nothing wraps
    # Aligned: the agent column starts at the same place on every row.
    start = header.index("AGENT")
    assert {row[start : start + 6] for row in rows} == {"claude"}
    # Message counts, right-aligned under MSGS.
    end = header.index("MSGS") + 4
    counts = [row[:end].split()[-1] for row in rows]
    assert all(c.isdigit() for c in counts)
    data = {d["session_id"]: d for d in json.loads(run("list", "--json").stdout)}
    assert data[TOOLS]["message_count"] == 14
    [tools_row] = [r for r in rows if r.startswith(TOOLS[:7])]
    assert tools_row[:end].split()[-1] == "14"


def test_list_cuts_prompts_and_paths_at_word_boundaries(machine: Path) -> None:
    prompt = "please refactor the enormous configuration loader " * 3
    words = prompt.split()
    rows = run("list", columns=80).stdout.splitlines()[1:]
    [row] = [r for r in rows if r.startswith(TOOLS[:7])]
    shown = row.split("  ")[-1].strip()
    assert shown.endswith("…")
    assert shown[:-1].split() == words[: len(shown[:-1].split())]  # whole words only
    [deep] = [r for r in rows if r.startswith(LONG[:7])]
    assert "…" in deep
    # A deep path keeps its last segment's start, cut after a separator, never mid-word.
    assert "segment_with" in deep


def test_fit_words_never_cuts_inside_a_word() -> None:
    assert _fit_words("alpha beta gamma", 12) == "alpha beta…"
    assert _fit_words("alpha beta gamma", 16) == "alpha beta gamma"
    assert _fit_words("supercalifragilistic", 8) == "superca…"  # one word wider than all


def test_list_here_from_a_subfolder_of_the_project(
    machine: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub = machine / "projects" / "my.app" / "src" / "deep"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)
    rows = run("list", "--here", columns=200).stdout.splitlines()[1:]
    assert len(rows) == 5
    assert all("~/projects/my.app " in r for r in rows)
    every = json.loads(run("list", "--json").stdout)
    here = json.loads(run("list", "--here", "--json").stdout)
    assert {d["session_id"] for d in here} == {
        d["session_id"] for d in every if d["project"].endswith("/my.app")
    }


def test_project_root_walks_up_to_sessions_then_to_the_git_root(
    machine: Path, tmp_path: Path, settings
) -> None:
    project = machine / "projects" / "my.app"
    (project / "a" / "b").mkdir(parents=True)
    assert project_root(settings, project / "a" / "b") == project
    repo = tmp_path / "repo"
    (repo / "pkg" / "mod").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    assert project_root(settings, repo / "pkg" / "mod") == repo
    lone = tmp_path / "lone"
    lone.mkdir()
    assert project_root(settings, lone) == lone


def test_export_from_a_subfolder_takes_the_projects_newest_session(
    machine: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = machine / "projects" / "tui_app"
    (project / "src").mkdir()
    monkeypatch.chdir(project / "src")
    out = tmp_path / "x.bundle"
    result = CliRunner().invoke(cli, ["export", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert f"from {project}" in result.stderr


def _diverge(two, tmp_path: Path) -> tuple[Path, Path]:
    a, b, sa, sb = two
    carry(sa, sb, tmp_path / "s1", session=DOT_SPACE, cwd=a)
    at_a = transcript(a, a / "projects" / "My Project.v2", DOT_SPACE)
    at_b = transcript(b, b / "code" / "My Project.v2", DOT_SPACE)
    _say(at_a, "only at A: add the parser")
    _say(at_b, "only at B: fix the lexer")
    return at_a, at_b


def test_a_fork_is_marked_in_list_and_json(two, tmp_path: Path) -> None:
    a, b, sa, sb = two
    _diverge(two, tmp_path)
    res = carry(sa, sb, tmp_path / "s2", session=DOT_SPACE, cwd=a)
    assert res.action == "forked"
    assert forks.lookup(sb.state_dir, "claude", res.session_id) is not None
    listing = run("list", columns=120, home=b)
    [row] = [r for r in listing.stdout.splitlines() if r.startswith(res.session_id[:7])]
    assert f"[fork of {DOT_SPACE[:7]} from a]" in row
    data = {d["session_id"]: d for d in json.loads(run("list", "--json", home=b).stdout)}
    assert data[res.session_id]["fork_of"] == DOT_SPACE
    assert data[res.session_id]["fork_from"] == "a"
    assert data[DOT_SPACE]["fork_of"] is None and data[DOT_SPACE]["fork_from"] is None
    # On a terminal the mark is in colour; in a pipe it is plain text.
    coloured = run("list", columns=120, home=b, color=True).stdout
    assert "\x1b[36m[fork of" in coloured
    assert "\x1b[" not in listing.stdout


def test_divergence_question_shows_both_sides_and_what_replace_discards(
    two, tmp_path: Path
) -> None:
    a, _b, sa, sb = two
    _at_a, at_b = _diverge(two, tmp_path)
    before = at_b.read_bytes()
    asked: list[str] = []
    options = ImportOptions(
        assume_yes=True,
        interactive=True,
        ask=answering("cancel", asked),
        origin="office (ab12cd34)",
    )
    with pytest.raises(Exception, match="cancelled"):
        carry(sa, sb, tmp_path / "s2", session=DOT_SPACE, cwd=a, options=options)
    assert at_b.read_bytes() == before
    [question] = asked
    assert f"from office (ab12cd34) holds session {DOT_SPACE}" in question
    here = next(line for line in question.splitlines() if line.strip().startswith("here:"))
    bundle = next(line for line in question.splitlines() if line.strip().startswith("bundle:"))
    assert '"only at B: fix the lexer"' in here and '"only at A: add the parser"' in bundle
    local_count = int(here.split("here:")[1].split()[0])
    assert local_count == sum(
        1
        for line in before.decode().splitlines()
        if '"type":"user"' in line or '"type":"assistant"' in line
    )
    assert "replace: the bundle's copy replaces this one (discards the 1 message only here" in (
        question
    )
    replaced: list[str] = []
    done = carry(
        sa,
        sb,
        tmp_path / "s3",
        session=DOT_SPACE,
        cwd=a,
        options=ImportOptions(
            assume_yes=True, interactive=True, ask=answering("replace", replaced)
        ),
    )
    assert done.action == "replaced" and done.backups and len(replaced) == 1
    assert os.path.exists(done.backups[0])
