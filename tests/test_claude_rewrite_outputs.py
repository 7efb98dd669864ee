"""Claude Code's own tool-result texts (persisted-output pointer, Write/Edit lines) after a move."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest
from claude_home import PLAN, TOOLS, carry, install, transcript
from conftest import settings_for

from commuter import config
from commuter.model import ImportResult
from commuter.settings import Settings

POINTER = re.compile(r"\A<persisted-output>\n[^\n]*Full output saved to: (/[^\n]+)")
WRITTEN = re.compile(r"\AFile created successfully at: (/.+?) \(file state is current")
EDITED = re.compile(r"\AThe file (/.+?) has been updated successfully\.")


@pytest.fixture
def two(tmp_path: Path) -> tuple[Path, Path, Settings, Settings]:
    a = install(tmp_path / "A home")
    b = tmp_path / "B"
    (b / "code" / "my.app").mkdir(parents=True)
    sa, sb = settings_for(a), settings_for(b)
    config.set_value(sb, "path-map", (str(a / "projects"), str(b / "code")))
    return a, b, sa, sb


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def _known_paths(path: Path) -> dict[str, list[str]]:
    """The path named by each fixed-format tool_result text in a transcript, by format."""
    found: dict[str, list[str]] = {"pointer": [], "written": [], "edited": []}
    for entry in _lines(path):
        message = entry.get("message")
        blocks = message.get("content") if isinstance(message, dict) else None
        for block in blocks if isinstance(blocks, list) else []:
            text = block.get("content") if block.get("type") == "tool_result" else None
            for name, pattern in (("pointer", POINTER), ("written", WRITTEN), ("edited", EDITED)):
                m = pattern.match(text) if isinstance(text, str) else None
                if m:
                    found[name].append(m[1])
    return found


def _check_moved(found: dict[str, list[str]], a: Path, b: Path) -> None:
    paths = [p for ps in found.values() for p in ps]
    assert paths and not [p for p in paths if p.startswith(f"{a}/")]
    assert all(p.startswith(f"{b}/") for p in paths)


def test_pointer_names_the_carried_file_at_b(two, tmp_path: Path) -> None:
    a, b, sa, sb = two
    proj_a, proj_b = a / "projects" / "my.app", b / "code" / "my.app"
    at_a = _known_paths(transcript(a, proj_a, TOOLS))
    assert len(at_a["pointer"]) == 1 and at_a["written"] and at_a["edited"]
    res = carry(sa, sb, tmp_path / "stage", session=TOOLS, cwd=proj_a)
    assert isinstance(res, ImportResult) and res.action == "created"
    assert res.transcript is not None
    found = _known_paths(res.transcript)
    _check_moved(found, a, b)
    pointer = Path(found["pointer"][0])
    assert pointer.is_file() and pointer.parent == res.transcript.parent / TOOLS / "tool-results"
    assert pointer.read_bytes() == Path(at_a["pointer"][0]).read_bytes()
    assert found["written"] == [str(proj_b / "notes" / "new.txt")]
    assert found["edited"] == [str(proj_b / "a.txt")]
    # Prose keeps A's paths: the prompt that asked for the edit still names them.
    assert str(proj_a / "a.txt") in res.transcript.read_text(encoding="utf-8")


def test_pointer_of_a_fork_names_the_forks_own_file(two, tmp_path: Path) -> None:
    a, b, sa, sb = two
    proj_a, proj_b = a / "projects" / "my.app", b / "code" / "my.app"
    carry(sa, sb, tmp_path / "s1", session=TOOLS, cwd=proj_a)
    for path, text in (
        (transcript(a, proj_a, TOOLS), "only at A"),
        (transcript(b, proj_b, TOOLS), "only at B"),
    ):
        with path.open("a", encoding="utf-8") as fh:
            entry = {
                "type": "user",
                "uuid": str(uuid.uuid4()),
                "sessionId": TOOLS,
                "message": {"role": "user", "content": text},
                "timestamp": f"2099-01-01T00:00:0{int(text.endswith('A'))}Z",  # B's began first
            }
            fh.write(json.dumps(entry, separators=(",", ":")) + "\n")
    res = carry(sa, sb, tmp_path / "s2", session=TOOLS, cwd=proj_a)
    assert isinstance(res, ImportResult) and res.action == "forked"
    assert res.transcript is not None
    found = _known_paths(res.transcript)
    _check_moved(found, a, b)
    pointer = Path(found["pointer"][0])
    assert pointer.parent == res.transcript.parent / res.session_id / "tool-results"
    assert pointer.is_file()


def test_plan_write_names_the_plan_at_b(two, tmp_path: Path) -> None:
    a, b, sa, sb = two
    res = carry(sa, sb, tmp_path / "stage", session=PLAN, cwd=a / "projects" / "my.app")
    assert isinstance(res, ImportResult) and res.transcript is not None
    found = _known_paths(res.transcript)
    _check_moved(found, a, b)
    assert [Path(p).is_file() for p in found["written"]] == [True]
    assert Path(found["written"][0]).parent == b / ".claude" / "plans"
