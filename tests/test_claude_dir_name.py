"""CLAUDE_CODE_PROJECT_DIR_NAME (Claude Code 2.1.234+): one projects/<name>/ folder, honoured
only beside CLAUDE_CONFIG_DIR and for a plain name (as the real 2.1.332 does)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from claude_home import V332, carry, install, transcript

from commuter import config
from commuter.backends.claude import ClaudeBackend
from commuter.backends.claude.paths import ClaudeDirs
from commuter.model import ImportResult
from commuter.settings import Settings


def named(home: Path, name: str = "shared-name") -> Settings:
    return Settings.from_env(
        {
            "HOME": str(home),
            "USER": "tester",
            "CLAUDE_CONFIG_DIR": str(home / ".claude"),
            "CLAUDE_CODE_PROJECT_DIR_NAME": name,
        }
    )


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"CLAUDE_CONFIG_DIR": "/c", "CLAUDE_CODE_PROJECT_DIR_NAME": "team_x-1"}, "team_x-1"),
        ({"CLAUDE_CODE_PROJECT_DIR_NAME": "team"}, None),  # without CLAUDE_CONFIG_DIR: ignored
        ({"CLAUDE_CONFIG_DIR": "/c", "CLAUDE_CODE_PROJECT_DIR_NAME": "bad.name"}, None),
        ({"CLAUDE_CONFIG_DIR": "/c", "CLAUDE_CODE_PROJECT_DIR_NAME": "../up"}, None),
        ({"CLAUDE_CONFIG_DIR": "/c", "CLAUDE_CODE_PROJECT_DIR_NAME": "NUL"}, None),
        ({"CLAUDE_CONFIG_DIR": "/c", "CLAUDE_CODE_PROJECT_DIR_NAME": "x" * 65}, None),
        ({"CLAUDE_CONFIG_DIR": "/c", "CLAUDE_CODE_PROJECT_DIR_NAME": ""}, None),
    ],
)
def test_the_variable_counts_only_as_claude_takes_it(
    env: dict[str, str], expected: str | None
) -> None:
    settings = Settings.from_env({"HOME": "/h", **env})
    assert ClaudeDirs.of(settings).dir_name == expected


def test_sessions_in_the_named_folder_are_found_for_any_project(tmp_path: Path) -> None:
    home = install(tmp_path / "h", V332)
    projects = home / ".claude" / "projects"
    old = transcript(home, home / "projects" / "my.app", V332.sessions["plain"]).parent
    old.rename(projects / "shared-name")
    elsewhere = home / "projects" / "tui_app"
    ref = ClaudeBackend(named(home)).find(None, elsewhere)
    assert ref.path is not None and ref.path.parent == projects / "shared-name"
    with pytest.raises(Exception, match="no Claude Code session"):
        ClaudeBackend(named(home, "other")).find(None, tmp_path)


def test_a_session_is_placed_in_the_named_folder_with_its_paths(tmp_path: Path) -> None:
    a = install(tmp_path / "a", V332)
    b = tmp_path / "b"
    proj_a, proj_b = a / "projects" / "my.app", b / "work" / "my.app"
    proj_b.mkdir(parents=True)
    sb = named(b)
    config.set_value(sb, "path-map", (str(a / "projects"), str(b / "work")))
    sid = V332.sessions["tools"]
    res = carry(
        Settings.from_env({"HOME": str(a), "USER": "t"}),
        sb,
        tmp_path / "stage",
        session=sid,
        cwd=proj_a,
    )
    assert isinstance(res, ImportResult)
    folder = b / ".claude" / "projects" / "shared-name"
    assert res.transcript == folder / f"{sid}.jsonl"
    entries = [json.loads(x) for x in res.transcript.read_text().splitlines()]
    persisted = [
        e["toolUseResult"]["persistedOutputPath"]
        for e in entries
        if isinstance(e.get("toolUseResult"), dict) and "persistedOutputPath" in e["toolUseResult"]
    ]
    assert persisted == [str(folder / sid / "tool-results" / Path(persisted[0]).name)]
    assert Path(persisted[0]).is_file()
    prompts = [
        t
        for e in entries
        if e.get("attachment", {}).get("type") == "prompt_snapshot"
        for t in e["attachment"]["systemPrompt"]
    ]
    assert any(f"memory at `{folder}/memory/`" in t for t in prompts)
    # ...and `commuter export` there finds it again from the project.
    ref = ClaudeBackend(sb).find(None, proj_b)
    assert ref.session_id == sid
