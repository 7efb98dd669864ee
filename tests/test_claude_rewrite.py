"""The transcript rewriter: known path fields only, bytes kept where nothing changes."""

from __future__ import annotations

import io
import json
from pathlib import Path

from commuter.backends.claude_rewrite import Rewriter, backup_hash, backup_sources
from commuter.pathmap import PathMap

SRC, DST = "/home/me/my proj", "/Users/me/code/my proj"
SID, NEW = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"


def _line(obj: dict[str, object]) -> bytes:
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
        "type": "assistant", "cwd": SRC,
        "message": {"content": [
            {"type": "text", "text": f"I will edit {SRC}/a.txt"},
            {"type": "tool_use", "input": {"file_path": f"{SRC}/a.txt", "command": f"cat {SRC}/a"}},
        ]},
        "toolUseResult": {"filePath": f"{SRC}/a.txt", "stdout": f"{SRC}/a.txt",
                          "file": {"filePath": f"{SRC}/b"}},
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
    snap = {"type": "file-history-snapshot", "snapshot": {"trackedFileBackups": {
        "a.txt": {"backupFileName": "aaaa@v1", "version": 1},
        f"{SRC}/abs.txt": {"backupFileName": None}}}, "sessionId": SID}
    out = json.loads(_rw(old_sid=SID, new_sid=NEW, backup_names={"aaaa@v1": "bbbb@v1"})
                     .line(_line(snap)))
    tracked = out["snapshot"]["trackedFileBackups"]
    assert tracked["a.txt"]["backupFileName"] == "bbbb@v1"
    assert f"{DST}/abs.txt" in tracked and out["sessionId"] == NEW


def test_backup_sources_resolves_relative_keys(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(_line({"type": "user", "cwd": SRC}) + _line(
        {"type": "file-history-snapshot",
         "snapshot": {"trackedFileBackups": {"a.txt": {"backupFileName": "h@v1"}}}}))
    assert backup_sources(path, SRC) == {"h@v1": f"{SRC}/a.txt"}
    assert len(backup_hash("/x")) == 16


def test_copy_identity_is_byte_exact(tmp_path: Path) -> None:
    src = tmp_path / "t.jsonl"
    src.write_bytes(b'{"a":1}\n{"b":2}')
    out = io.BytesIO()
    Rewriter(PathMap.of([])).copy(src, out)
    assert out.getvalue() == src.read_bytes()
