"""Claude Code project-folder naming (every row of session-formats.md §1.2) and listing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from claude_home import DATA, FIXTURE_HOME, LONG_REL, TOOLS, install

from commuter.backends.claude import ClaudeBackend
from commuter.backends.claude.paths import (
    claude_project_folder,
    is_safe_name,
    is_safe_slug,
    is_session_id,
    read_head,
)
from commuter.settings import Settings

ROWS = [
    (f"{FIXTURE_HOME}/projects/my.app", "-tmp-rcfix-claude-home-projects-my-app"),
    (f"{FIXTURE_HOME}/projects/My Project.v2", "-tmp-rcfix-claude-home-projects-My-Project-v2"),
    (f"{FIXTURE_HOME}/projects/tui_app", "-tmp-rcfix-claude-home-projects-tui-app"),
    (f"{FIXTURE_HOME}/projects/café_ünï 日本", "-tmp-rcfix-claude-home-projects-caf---n----"),
    ("/tmp/rc/enc/emoji😀x", "-tmp-rc-enc-emoji--x"),
]


@pytest.mark.parametrize(("path", "folder"), ROWS)
def test_folder_name_matches_claude(path: str, folder: str) -> None:
    assert claude_project_folder(path) == folder


def test_long_path_is_cut_and_hashed_like_the_real_fixture() -> None:
    path = f"{FIXTURE_HOME}/{LONG_REL}"
    assert len(path) > 200
    folder = claude_project_folder(path)
    assert folder.endswith("-nvu2ub")
    assert len(folder) == 207
    assert (DATA / ".claude" / "projects" / folder).is_dir()


def test_every_real_fixture_folder_is_reproduced() -> None:
    real = {p.name for p in (DATA / ".claude" / "projects").iterdir()}
    for path, folder in ROWS[:4]:
        assert folder in real
        assert claude_project_folder(path) == folder


def test_id_and_name_validation_rejects_hostile_values() -> None:
    assert is_session_id(TOOLS)
    for bad in ("../x", "a" * 36, "", f"{TOOLS}/..", TOOLS + "\0"):
        assert not is_session_id(bad)
    assert is_safe_name("7bb64646fdba004a@v1") and is_safe_name("1.json")
    for bad in ("..", ".lock", "a/b", "../../etc", "", "x\\y"):
        assert not is_safe_name(bad)
    assert is_safe_slug("plan-a-small-refactor-transient-snowglobe")
    assert not is_safe_slug("../../evil") and not is_safe_slug("a.b")


def test_sessions_newest_first_with_prompt_and_project(home: Path, settings: Settings) -> None:
    install(home)
    backend = ClaudeBackend(settings)
    files = sorted((home / ".claude" / "projects").rglob("*.jsonl"))
    for i, path in enumerate(p for p in files if "subagents" not in p.parts):
        os.utime(path, (1_000_000 + i, 1_000_000 + i))
    refs = list(backend.sessions())
    assert len(refs) == 9
    assert [r.updated_at for r in refs] == sorted((r.updated_at for r in refs), reverse=True)
    tools = next(r for r in refs if r.session_id == TOOLS)
    assert tools.project == home / "projects" / "my.app"
    assert tools.first_prompt is not None and tools.first_prompt.startswith("Tool tour.")


def test_read_head_reads_only_the_head(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    line = b'{"type":"user","cwd":"/p","message":{"role":"user","content":"hi"},"uuid":"u"}\n'
    with path.open("wb") as fh:
        fh.write(line)
        fh.write(b'{"type":"x","pad":"' + b"a" * 300_000 + b'"}\n')
    head = read_head(path)
    assert head.cwd == "/p" and head.first_prompt == "hi" and head.has_messages


def test_find_by_prefix_and_latest(home: Path, settings: Settings) -> None:
    from commuter.errors import AmbiguousSession, SessionNotFound

    install(home)
    backend = ClaudeBackend(settings)
    assert backend.find(TOOLS[:8], home).session_id == TOOLS
    with pytest.raises(AmbiguousSession):
        backend.find("e", home)
    with pytest.raises(SessionNotFound):
        backend.find("0000000", home)
    with pytest.raises(SessionNotFound):
        backend.find("../etc", home)
    target = (
        home
        / ".claude"
        / "projects"
        / claude_project_folder(str(home / "projects" / "my.app"))
        / f"{TOOLS}.jsonl"
    )
    os.utime(target, (2e9, 2e9))
    assert backend.find(None, home / "projects" / "my.app").session_id == TOOLS
    with pytest.raises(SessionNotFound):
        backend.find(None, home)


def test_claude_config_dir_and_symlinked_cwd(tmp_path: Path, home: Path) -> None:
    custom = tmp_path / "custom-claude"
    real = tmp_path / "real proj"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    folder = custom / "projects" / claude_project_folder(str(real))
    folder.mkdir(parents=True)
    (folder / f"{TOOLS}.jsonl").write_text(
        '{"type":"user","cwd":"' + str(real) + '","message":{"content":"hi"}}\n'
    )
    settings = Settings.from_env({"HOME": str(home), "CLAUDE_CONFIG_DIR": str(custom)})
    backend = ClaudeBackend(settings)
    assert [r.session_id for r in backend.sessions()] == [TOOLS]
    assert backend.find(None, link).session_id == TOOLS
