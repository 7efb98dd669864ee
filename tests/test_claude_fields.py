"""Every session of both real fixture sets (Claude Code 2.1.197 and 2.1.332), moved to another
machine, keeps no source path in any JSON field whose value is a path; prose is kept as is."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from claude_home import FIXTURES, V332, Fixture, backup_name, carry, install, transcript
from conftest import settings_for

from commuter import config
from commuter.backends.claude.paths import claude_project_folder
from commuter.model import ImportResult


def fields(obj: object, where: str = "") -> Iterator[tuple[str, str]]:
    """(field path, string) for every string in a JSON value, dict keys included."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield f"{where}.{{key}}", key
            yield from fields(value, f"{where}.{key}")
    elif isinstance(obj, list):
        for item in obj:
            yield from fields(item, f"{where}[]")
    elif isinstance(obj, str):
        yield where, obj


def kind(entry: dict[str, object]) -> str:
    attachment = entry.get("attachment")
    if entry.get("type") == "attachment" and isinstance(attachment, dict):
        return f"attachment:{attachment.get('type')}"
    return str(entry.get("type"))


def path_fields_left(path: Path, source: str) -> list[str]:
    """Fields whose whole value is a path under `source` (a path field left untranslated)."""
    left = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)
        for where, value in fields(entry):
            if value == source or value.startswith(source + "/"):
                left.append(f"{kind(entry)} {where} = {value[:80]}")
    return left


# Texts Claude renders itself and sends again on a resume (measured with the real 2.1.332: the
# recorded system prompt and each attachment's `rendered` text reach the model; api-request
# copies do not). In the fixtures every source path in them is in a fixed format.
def client_texts_left(path: Path, source: str) -> list[str]:
    left = []
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line) if line.strip() else {}
        attachment = entry.get("attachment") if isinstance(entry, dict) else None
        texts = [r.get("content", "") for r in entry.get("rendered") or [] if isinstance(r, dict)]
        if isinstance(attachment, dict) and isinstance(attachment.get("systemPrompt"), list):
            texts += attachment["systemPrompt"]
        left += [
            f"{kind(entry)}: …{t[t.find(source) - 60 : t.find(source)]}"
            for t in texts
            if isinstance(t, str) and source in t
        ]
    return left


@pytest.fixture(params=FIXTURES, ids=[f.version for f in FIXTURES])
def fixture(request: pytest.FixtureRequest) -> Fixture:
    return request.param


@pytest.mark.parametrize("name", sorted(FIXTURES[0].sessions))
def test_no_source_path_left_in_any_path_field(fixture: Fixture, name: str, tmp_path: Path) -> None:
    a = install(tmp_path / "home-a", fixture)
    b = tmp_path / "office"
    rel = fixture.project(name)
    proj_a = a / rel
    proj_b = b / "work" / Path(rel).relative_to("projects")
    proj_b.mkdir(parents=True)
    sa, sb = settings_for(a), settings_for(b)
    config.set_value(sb, "path-map", (str(a / "projects"), str(b / "work")))
    sid = fixture.sessions[name]
    res = carry(sa, sb, tmp_path / "stage", session=sid, cwd=proj_a)
    assert isinstance(res, ImportResult) and res.action == "created"
    dest = transcript(b, proj_b, sid)
    moved = [dest, *sorted((dest.parent / sid).rglob("*.json*"))]
    source = str(a)
    assert source in transcript(a, proj_a, sid).read_text(encoding="utf-8")
    for path in moved:
        assert path_fields_left(path, source) == [], path.name
        assert client_texts_left(path, source) == [], path.name
    # The prompts still name the source paths (prose is not rewritten).
    if name == "tools":
        assert str(proj_a / "a.txt") in dest.read_text(encoding="utf-8")


def test_332_paths_and_texts_name_the_target(tmp_path: Path) -> None:
    a = install(tmp_path / "home-a", V332)
    b = tmp_path / "office"
    proj_a, proj_b = a / "projects" / "my.app", b / "work" / "my.app"
    proj_b.mkdir(parents=True)
    sa, sb = settings_for(a), settings_for(b)
    config.set_value(sb, "path-map", (str(a / "projects"), str(b / "work")))
    sid = V332.sessions["tools"]
    carry(sa, sb, tmp_path / "stage", session=sid, cwd=proj_a)
    entries = [json.loads(x) for x in transcript(b, proj_b, sid).read_text().splitlines()]
    [env] = [e for e in entries if kind(e) == "attachment:environment"]
    assert env["attachment"]["snapshot"]["workingDirectory"] == str(proj_b)
    assert f" - Primary working directory: {proj_b}\n" in env["rendered"][0]["content"]
    folder_b = b / ".claude" / "projects" / claude_project_folder(str(proj_b))
    prompts = [
        t
        for e in entries
        if kind(e) == "attachment:prompt_snapshot"
        for t in e["attachment"]["systemPrompt"]
    ]
    assert any(f"file-based memory at `{folder_b}/memory/`" in t for t in prompts)
    deltas = [e for e in entries if e["type"] == "file-history-delta"]
    assert {d["backup"]["realParentDir"] for d in deltas} == {str(proj_b), str(proj_b / "notes")}
    assert {d["trackingPath"] for d in deltas} == {"a.txt", "notes/new.txt"}
    # The backup is renamed after the file's path here, and the delta names the new file.
    new_name = backup_name(str(proj_b / "a.txt"))
    assert {d["backup"]["backupFileName"] for d in deltas} == {new_name, None}
    assert (b / ".claude" / "file-history" / sid / new_name).is_file()
    # The request copies (never sent again) keep their text and hash.
    blob_a = [
        x for x in transcript(a, proj_a, sid).read_text().splitlines() if '"api-request-blob"' in x
    ]
    blob_b = [
        x for x in transcript(b, proj_b, sid).read_text().splitlines() if '"api-request-blob"' in x
    ]
    assert blob_a == blob_b


def test_the_newer_clients_session_folders_travel_translated(tmp_path: Path) -> None:
    a = install(tmp_path / "home-a", V332)
    b = tmp_path / "office"
    proj_a, proj_b = a / "projects" / "my.app", b / "work" / "my.app"
    proj_b.mkdir(parents=True)
    sa, sb = settings_for(a), settings_for(b)
    config.set_value(sb, "path-map", (str(a / "projects"), str(b / "work")))
    sid = V332.sessions["subagent"]
    side_a = transcript(a, proj_a, sid).parent / sid
    [agent] = (side_a / "subagents").glob("agent-*.jsonl")
    nested = side_a / "subagents" / "workflows" / "run-1" / "agent-b0b.jsonl"
    nested.parent.mkdir(parents=True)
    shutil.copy(agent, nested)
    (side_a / "workflows").mkdir()
    (side_a / "workflows" / "run-1.json").write_text(
        json.dumps({"cwd": str(proj_a), "transcript_path": str(nested)}, separators=(",", ":"))
    )
    (side_a / "remote-agents").mkdir()
    (side_a / "remote-agents" / "remote-agent-r1.meta.json").write_text(
        json.dumps({"cwd": str(proj_a), "title": "review"}, separators=(",", ":"))
    )
    (side_a / "workflows" / "link.json").symlink_to(tmp_path / "elsewhere.json")
    carry(sa, sb, tmp_path / "stage", session=sid, cwd=proj_a)
    side_b = transcript(b, proj_b, sid).parent / sid
    got = sorted(p.relative_to(side_b).as_posix() for p in side_b.rglob("*") if p.is_file())
    assert got == sorted(
        [
            f"subagents/{agent.name}",
            f"subagents/{agent.stem}.meta.json",
            "subagents/workflows/run-1/agent-b0b.jsonl",
            "workflows/run-1.json",
            "remote-agents/remote-agent-r1.meta.json",
        ]
    )
    for path in side_b.rglob("*.json*"):
        assert path_fields_left(path, str(a)) == [], path
        assert client_texts_left(path, str(a)) == [], path
    run = json.loads((side_b / "workflows" / "run-1.json").read_text())
    assert run == {
        "cwd": str(proj_b),
        "transcript_path": str(side_b / "subagents/workflows/run-1/agent-b0b.jsonl"),
    }
    nested_b = side_b / "subagents" / "workflows" / "run-1" / "agent-b0b.jsonl"
    assert {json.loads(x).get("cwd") for x in nested_b.read_text().splitlines()} - {None} == {
        str(proj_b)
    }
