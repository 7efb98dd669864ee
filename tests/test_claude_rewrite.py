"""The transcript rewriter: known path fields only, bytes kept where nothing changes."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from claude_home import DATA, PLAN, TOOLS

from commuter.backends.claude.rewrite import Rewriter, backup_hash, backup_sources
from commuter.pathmap import PathMap

SRC, DST = "/home/me/my proj", "/Users/me/code/my proj"
SID, NEW = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"


def _line(obj: Mapping[str, object]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def _rw(**kw: object) -> Rewriter:
    return Rewriter(PathMap.of([(SRC, DST)]), **kw)  # type: ignore[arg-type]


def test_line_without_prefix_is_copied_verbatim() -> None:
    raw = b'{"type":"user","message":{"content":"caf\\u00e9 hi"},"uuid":"x"}\n'
    assert _rw().line(raw) is not None and _rw().line(raw) == raw


def test_cwd_only_line_is_spliced_and_key_order_kept() -> None:
    raw = _line({"parentUuid": None, "cwd": SRC + "/sub", "sessionId": SID, "z": 1})
    out = json.loads(_rw().line(raw))
    assert list(out) == ["parentUuid", "cwd", "sessionId", "z"]
    assert out["cwd"] == DST + "/sub"


def test_path_fields_rewritten_prose_untouched() -> None:
    entry = {
        "type": "assistant",
        "cwd": SRC,
        "message": {
            "content": [
                {"type": "text", "text": f"I will edit {SRC}/a.txt"},
                {
                    "type": "tool_use",
                    "input": {"file_path": f"{SRC}/a.txt", "command": f"cat {SRC}/a"},
                },
            ]
        },
        "toolUseResult": {
            "filePath": f"{SRC}/a.txt",
            "stdout": f"{SRC}/a.txt",
            "file": {"filePath": f"{SRC}/b"},
        },
    }
    out = json.loads(_rw().line(_line(entry)))
    blocks = out["message"]["content"]
    assert blocks[0]["text"] == f"I will edit {SRC}/a.txt"
    assert blocks[1]["input"] == {"file_path": f"{DST}/a.txt", "command": f"cat {SRC}/a"}
    assert out["toolUseResult"]["filePath"] == f"{DST}/a.txt"
    assert out["toolUseResult"]["stdout"] == f"{SRC}/a.txt"
    assert out["toolUseResult"]["file"]["filePath"] == f"{DST}/b"


def test_prefix_only_in_prose_keeps_original_bytes() -> None:
    raw = b'{"type":"user","message":{"content":"see \\u00e9 ' + SRC.encode() + b'/x"}}\n'
    assert _rw().line(raw) == raw


def test_not_a_segment_boundary() -> None:
    raw = _line({"cwd": SRC + "ect/x"})
    assert _rw().line(raw) == raw


def test_session_id_and_backup_names() -> None:
    snap = {
        "type": "file-history-snapshot",
        "snapshot": {
            "trackedFileBackups": {
                "a.txt": {"backupFileName": "aaaa@v1", "version": 1},
                f"{SRC}/abs.txt": {"backupFileName": None},
            }
        },
        "sessionId": SID,
    }
    out = json.loads(
        _rw(old_sid=SID, new_sid=NEW, backup_names={"aaaa@v1": "bbbb@v1"}).line(_line(snap))
    )
    tracked = out["snapshot"]["trackedFileBackups"]
    assert tracked["a.txt"]["backupFileName"] == "bbbb@v1"
    assert f"{DST}/abs.txt" in tracked and out["sessionId"] == NEW


def test_backup_sources_resolves_relative_keys(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(
        _line({"type": "user", "cwd": SRC})
        + _line(
            {
                "type": "file-history-snapshot",
                "snapshot": {"trackedFileBackups": {"a.txt": {"backupFileName": "h@v1"}}},
            }
        )
    )
    assert backup_sources(path, SRC) == {"h@v1": f"{SRC}/a.txt"}
    assert len(backup_hash("/x")) == 16


def test_copy_identity_is_byte_exact(tmp_path: Path) -> None:
    src = tmp_path / "t.jsonl"
    src.write_bytes(b'{"a":1}\n{"b":2}')
    out = io.BytesIO()
    Rewriter(PathMap.of([])).copy(src, out)
    assert out.getvalue() == src.read_bytes()


# Fixed-format tool_result texts Claude Code writes (lines from tests/data/claude, a real run).

FIX_HOME = "/tmp/rcfix/claude/home"
FIX_PROJ = f"{FIX_HOME}/projects/my.app"
FIX_FOLDER = "-tmp-rcfix-claude-home-projects-my-app"
B_CLAUDE, B_PROJ, B_FOLDER = "/srv/b/.claude", "/srv/b/code/my.app", "-srv-b-code-my-app"
CREATED = "File created successfully at: "
TOO_LARGE = "Output too large (59.5KB). Full output saved to: "


def _fixture_line(sid: str, needle: str) -> bytes:
    path = DATA / ".claude" / "projects" / FIX_FOLDER / f"{sid}.jsonl"
    return next(x for x in path.read_bytes().splitlines(True) if needle.encode() in x)


def _import_rw(old_sid: str, new_sid: str) -> Rewriter:
    """The map claude_import builds for a session moving from the fixture's home to B."""
    folder = f"{FIX_HOME}/.claude/projects/{FIX_FOLDER}"
    return Rewriter(
        PathMap.of(
            [
                (f"{folder}/{old_sid}", f"{B_CLAUDE}/projects/{B_FOLDER}/{new_sid}"),
                (folder, f"{B_CLAUDE}/projects/{B_FOLDER}"),
                (f"{FIX_HOME}/.claude", B_CLAUDE),
                (FIX_PROJ, B_PROJ),
            ]
        ),
        old_sid=old_sid,
        new_sid=new_sid,
    )


def _result_text(entry: dict[str, Any]) -> str:
    blocks = entry["message"]["content"]
    return next(b["content"] for b in blocks if b["type"] == "tool_result")


def _same_but(raw: bytes, out: bytes, old: str, new: str) -> None:
    """`out` is `raw` with the result text changed from `old` to `new` (and nothing else)."""
    before, after = json.loads(raw), json.loads(out)
    assert _result_text(before) == old and _result_text(after) == new
    before["message"] = after["message"] = None
    before.pop("cwd"), after.pop("cwd")
    if "toolUseResult" in before:
        before["toolUseResult"].pop("filePath", None), after["toolUseResult"].pop("filePath", None)
    assert before == after


def test_edit_and_write_confirmations_are_translated() -> None:
    rw = _import_rw(SID, SID)
    tail = " (file state is current in your context \u2014 no need to Read it back)"
    edit = _fixture_line(TOOLS, "has been updated successfully")
    out = rw.line(edit)
    _same_but(
        edit,
        out,
        f"The file {FIX_PROJ}/a.txt has been updated successfully.{tail}",
        f"The file {B_PROJ}/a.txt has been updated successfully.{tail}",
    )
    assert json.loads(out)["toolUseResult"]["filePath"] == f"{B_PROJ}/a.txt"
    write = _fixture_line(TOOLS, "File created successfully")
    _same_but(
        write,
        rw.line(write),
        f"{CREATED}{FIX_PROJ}/notes/new.txt{tail}",
        f"{CREATED}{B_PROJ}/notes/new.txt{tail}",
    )
    # The plan file lives in the claude dir: it goes to B's claude dir, where plans/ lands.
    plan = _fixture_line(PLAN, "File created successfully")
    assert _result_text(json.loads(rw.line(plan))).startswith(
        f"{CREATED}{B_CLAUDE}/plans/plan-a-small-refactor-transient-snowglobe.md ("
    )


def test_persisted_output_pointer_follows_the_file_to_the_new_session() -> None:
    old = TOOLS
    raw = _fixture_line(old, "Full output saved to: ")
    for new_sid in (old, NEW):  # kept id, and a fork
        out = _import_rw(old, new_sid).line(raw)
        entry = json.loads(out)
        want = f"{B_CLAUDE}/projects/{B_FOLDER}/{new_sid}/tool-results/bnn70ygf6.txt"
        text = _result_text(entry)
        assert text.startswith(f"<persisted-output>\n{TOO_LARGE}{want}\n\nPreview")
        assert text.split("\n", 3)[3] == _result_text(json.loads(raw)).split("\n", 3)[3]
        assert entry["toolUseResult"]["persistedOutputPath"] == want
        assert out.endswith(b"\n") and out.count(b"\n") == 1
        # Byte-exact elsewhere: only the two paths, the cwd and the session id changed.
        assert len(out) - len(raw) == 2 * (
            len(want)
            - len(f"{FIX_HOME}/.claude/projects/{FIX_FOLDER}/{old}/tool-results/bnn70ygf6.txt")
        ) + len(B_PROJ) - len(FIX_PROJ)


def test_fixed_texts_in_prose_or_output_are_untouched() -> None:
    rw = _rw()
    lines = [
        # a prompt, a queue-operation and the model's text that merely read like the formats
        _line(
            {
                "type": "user",
                "message": {
                    "role": "user",
                    "content": f"The file {SRC}/a.txt has been updated successfully.",
                },
            }
        ),
        _line({"type": "queue-operation", "content": f"File created successfully at: {SRC}/b"}),
        _line(
            {
                "type": "assistant",
                "message": {
                    "content": [{"type": "text", "text": f"File created successfully at: {SRC}/b"}]
                },
            }
        ),
        # command output naming the path mid-text, or a result not at the format's start
        _line(
            {
                "type": "user",
                "message": {
                    "content": [
                        {
                            "tool_use_id": "t",
                            "type": "tool_result",
                            "content": f"log: Full output saved to: {SRC}/x\nThe file {SRC}/y",
                        }
                    ]
                },
            }
        ),
        _line(
            {
                "type": "user",
                "message": {
                    "content": [
                        {
                            "tool_use_id": "t",
                            "type": "tool_result",
                            "content": f"ok. The file {SRC}/a.txt has been updated successfully.",
                        }
                    ]
                },
            }
        ),
        # the format, but a path outside the map or not at a segment boundary
        _line(
            {
                "type": "user",
                "message": {
                    "content": [
                        {
                            "tool_use_id": "t",
                            "type": "tool_result",
                            "content": f"File created successfully at: {SRC}ect/a",
                        }
                    ]
                },
            }
        ),
        _line(
            {
                "type": "user",
                "message": {
                    "content": [
                        {
                            "tool_use_id": "t",
                            "type": "tool_result",
                            "content": "The file /etc/hosts has been updated successfully.",
                        }
                    ]
                },
            }
        ),
    ]
    for raw in lines:
        assert rw.line(raw) == raw
    assert rw.block(b"".join(lines)) == b"".join(lines)


def test_fixed_texts_in_other_layouts_are_parsed() -> None:
    rw = _rw()
    pointer = f"<persisted-output>\nOutput too large (61KB). Full output saved to: {SRC}/o.txt\n\n"
    preview = 'Preview (first 2KB):\n"q"\n</persisted-output>'
    entry = {
        "type": "user",
        "cwd": SRC,
        "message": {
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "t",
                    "content": [{"type": "text", "text": pointer + preview}],
                },
                {
                    "content": f"The file {SRC}/a.txt has been updated.",
                    "type": "tool_result",
                    "is_error": False,
                },
                {
                    "tool_use_id": "u",
                    "type": "tool_result",
                    "content": f"File created successfully at: {SRC}/n.txt",
                },
            ]
        },
    }
    blocks = json.loads(_rw().line(_line(entry)))["message"]["content"]
    assert blocks[0]["content"][0]["text"].startswith(
        f"<persisted-output>\nOutput too large (61KB). Full output saved to: {DST}/o.txt\n\n"
    )
    assert blocks[1]["content"] == f"The file {DST}/a.txt has been updated."
    assert blocks[2]["content"] == f"File created successfully at: {DST}/n.txt"
    assert json.loads(rw.line(_line(entry)))["cwd"] == DST


def test_block_of_many_lines_matches_line_by_line() -> None:
    rw = _rw(old_sid=SID, new_sid=NEW)
    lines = [
        _line({"cwd": SRC, "sessionId": SID}),
        _line(
            {
                "type": "user",
                "message": {
                    "content": [
                        {
                            "tool_use_id": "t",
                            "type": "tool_result",
                            "content": f'{CREATED}{SRC}/\u00e9 "q".txt (file state is current '
                            "in your context)",
                        }
                    ]
                },
                "toolUseResult": {"filePath": f"{SRC}/x"},
            }
        ),
        _line({"type": "user", "message": {"content": f"The file {SRC}/a has been updated."}}),
        _line(
            {
                "type": "user",
                "message": {
                    "content": [
                        {
                            "tool_use_id": "t",
                            "type": "tool_result",
                            "content": f"The file {SRC}/a has been updated successfully.",
                        }
                    ]
                },
            }
        ),
    ]
    joined = b"".join(lines)
    assert rw.block(joined) == b"".join(rw.line(x) for x in lines)
    out = [json.loads(x) for x in rw.block(joined).splitlines()]
    assert _result_text(out[1]) == (
        f'File created successfully at: {DST}/\u00e9 "q".txt'
        " (file state is current in your context)"
    )
    assert out[2]["message"]["content"] == f"The file {SRC}/a has been updated."
    assert _result_text(out[3]) == f"The file {DST}/a has been updated successfully."


def test_claude_code_layout_is_spliced_without_parsing_the_line(monkeypatch) -> None:
    def no_parse(self: Rewriter, body: bytes) -> bytes:
        raise AssertionError("parsed")

    monkeypatch.setattr(Rewriter, "_parsed", no_parse)
    rw = _import_rw(SID, SID)
    for needle in ("Full output saved to: ", "File created successfully", "has been updated"):
        raw = _fixture_line(TOOLS, needle)
        assert FIX_PROJ.encode() not in rw.line(raw).split(b'"toolUseResult"')[0]


# Claude Code 2.1.332 records and the texts it renders itself (resent on a resume).
def test_environment_snapshot_and_its_rendered_text() -> None:
    entry = {
        "type": "attachment",
        "attachment": {
            "type": "environment",
            "snapshot": {
                "workingDirectory": SRC,
                "additionalWorkingDirectories": [SRC + "/lib", "/opt/x"],
                "isGitRepo": True,
            },
        },
        "rendered": [
            {
                "content": (
                    "<system-reminder>\n# Environment\nYou have been invoked in the following "
                    f"environment: \n - Primary working directory: {SRC}\n - Platform: linux\n"
                    f"</system-reminder>"
                )
            },
            {
                "content": (
                    f"# Environment update\n - Primary working directory: {SRC}/sub (was /opt/x)"
                )
            },
        ],
        "cwd": SRC,
    }
    out = json.loads(_rw().line(_line(entry)))
    snap = out["attachment"]["snapshot"]
    assert snap["workingDirectory"] == DST
    assert snap["additionalWorkingDirectories"] == [DST + "/lib", "/opt/x"]
    assert f" - Primary working directory: {DST}\n - Platform" in out["rendered"][0]["content"]
    assert out["rendered"][1]["content"].endswith(f"directory: {DST}/sub (was /opt/x)")


def test_the_recorded_system_prompt_names_the_new_memory_folder() -> None:
    mem = SRC + "/.claude/projects/-x/memory/"
    prompt = f"# Memory\n\nYou have a persistent file-based memory at `{mem}`. This directory"
    entry = {
        "type": "attachment",
        "attachment": {"type": "prompt_snapshot", "systemPrompt": ["intro", prompt]},
    }
    out = json.loads(_rw().line(_line(entry)))
    assert out["attachment"]["systemPrompt"] == ["intro", prompt.replace(SRC, DST)]


def test_the_same_words_elsewhere_are_prose() -> None:
    text = (
        f" - Primary working directory: {SRC}\nYou have a persistent file-based memory at "
        f"`{SRC}/m/`.\nContents of {SRC}/CLAUDE.md (project instructions)"
    )
    prompt = _line({"type": "user", "message": {"role": "user", "content": text}})
    blob = _line(
        {
            "type": "api-request-blob",
            "hash": "ab",
            "message": {"role": "system", "content": [{"type": "text", "text": text}]},
        }
    )
    said = _line({"type": "assistant", "message": {"content": [{"type": "text", "text": text}]}})
    for raw in (prompt, blob, said):
        assert _rw().line(raw) == raw


def test_loaded_instructions_and_plan_file_texts() -> None:
    entry = {
        "type": "attachment",
        "attachment": {
            "type": "instructions",
            "files": [{"path": f"{SRC}/CLAUDE.md", "content": "be brief"}],
        },
        "rendered": [
            {
                "content": (
                    f"Codebase instructions.\n\nContents of {SRC}/CLAUDE.md (project instructions, "
                    "checked in):\n\nbe brief"
                )
            }
        ],
    }
    out = json.loads(_rw().line(_line(entry)))
    assert out["attachment"]["files"][0]["path"] == f"{DST}/CLAUDE.md"
    assert f"Contents of {DST}/CLAUDE.md (project" in out["rendered"][0]["content"]
    plan = {
        "type": "attachment",
        "attachment": {"type": "plan_mode", "planFilePath": f"{SRC}/plans/p.md"},
        "rendered": [
            {
                "content": f"No plan file exists yet. You should create your plan "
                f"at {SRC}/plans/p.md using the Write tool."
            }
        ],
    }
    out = json.loads(_rw().line(_line(plan)))
    assert out["attachment"]["planFilePath"] == f"{DST}/plans/p.md"
    assert f"create your plan at {DST}/plans/p.md using" in out["rendered"][0]["content"]


def test_file_history_delta_backup_renamed_and_its_folder_translated(tmp_path: Path) -> None:
    old, new = backup_hash(f"{SRC}/a.txt") + "@v1", backup_hash(f"{DST}/a.txt") + "@v1"
    delta = {
        "type": "file-history-delta",
        "messageId": "m2",
        "snapshotMessageId": "m1",
        "trackingPath": "a.txt",
        "backup": {"backupFileName": old, "version": 1, "realParentDir": SRC},
    }
    created = {
        **delta,
        "trackingPath": f"{SRC}/notes/n.txt",
        "backup": {"backupFileName": None, "version": 1, "realParentDir": SRC + "/notes"},
    }
    out = [
        json.loads(x)
        for x in _rw(backup_names={old: new}).block(_line(delta) + _line(created)).splitlines()
    ]
    assert out[0]["backup"] == {"backupFileName": new, "version": 1, "realParentDir": DST}
    assert out[0]["trackingPath"] == "a.txt"
    assert out[1]["trackingPath"] == f"{DST}/notes/n.txt"
    assert out[1]["backup"]["realParentDir"] == DST + "/notes"
    # ...and export finds what the delta's backup is a copy of.
    path = tmp_path / "t.jsonl"
    path.write_bytes(_line(delta))
    assert backup_sources(path, SRC) == {old: f"{SRC}/a.txt"}
