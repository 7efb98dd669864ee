"""The e2e harness: the fake model server, and the real claude writing and resuming sessions."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from . import harness
from .fake_model import FakeModel, codewords
from .harness import (
    ClaudeNotFound,
    check,
    claude_project_folder,
    claude_version,
    find_claude,
    make_newest,
    project_folder,
    read_transcript,
    run_claude,
    session_files,
    version_tuple,
)


def _post(url: str, body: dict[str, Any]) -> tuple[str, bytes]:
    """POST JSON to the fake server; return the content type and the raw body."""
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers["content-type"], response.read()


def _project(home: Path, name: str) -> Path:
    """Create and return a project directory under home/projects."""
    path = home / "projects" / name
    path.mkdir(parents=True)
    return path


def _user_texts(body: dict[str, Any]) -> list[str]:
    """Return the user prompts (plain strings or text blocks) of a recorded request."""
    texts: list[str] = []
    for message in body["messages"]:
        if message["role"] != "user":
            continue
        content = message["content"]
        if isinstance(content, str):
            texts.append(content)
        else:
            texts.extend(b["text"] for b in content if b.get("type") == "text")
    return texts


def test_fake_model_answers_and_records(fake_model: FakeModel) -> None:
    body = {
        "model": "m",
        "max_tokens": 10,
        "messages": [
            {"role": "user", "content": "<system-reminder>UTF-8</system-reminder>Take FIG-1."},
            {"role": "assistant", "content": [{"type": "text", "text": "OK"}]},
            {"role": "user", "content": [{"type": "text", "text": "And PLUM-22, FIG-1."}]},
        ],
    }
    kind, raw = _post(fake_model.base_url + "/v1/messages", body)
    assert kind.startswith("application/json")
    answer = json.loads(raw)["content"]
    assert answer == [{"type": "text", "text": "Codewords seen: FIG-1, PLUM-22."}]

    kind, raw = _post(fake_model.base_url + "/v1/messages", {**body, "stream": True})
    assert kind.startswith("text/event-stream")
    events = [line[7:] for line in raw.decode().splitlines() if line.startswith("event: ")]
    assert events[0] == "message_start"
    assert events[-1] == "message_stop"
    assert "Codewords seen: FIG-1, PLUM-22." in raw.decode()

    _post(fake_model.base_url + "/v1/messages", {"messages": [{"role": "user", "content": "hi"}]})
    assert len(fake_model.requests) == 3
    assert codewords(fake_model.requests[2]) == []
    assert len(fake_model.requests_containing("PLUM-22")) == 2
    assert ("POST", "/v1/messages") in fake_model.calls


def test_fake_model_servers_are_independent() -> None:
    with FakeModel() as one, FakeModel() as two:
        assert one.port != two.port
        _post(one.base_url + "/v1/messages", {"messages": []})
        assert len(one.requests) == 1
        assert two.requests == []


@pytest.mark.parametrize(
    ("path", "folder"),
    [
        ("/tmp/rcfix/claude/home/projects/my.app", "-tmp-rcfix-claude-home-projects-my-app"),
        (
            "/tmp/rcfix/claude/home/projects/My Project.v2",
            "-tmp-rcfix-claude-home-projects-My-Project-v2",
        ),
        (
            "/tmp/rcfix/claude/home/projects/café_ünï 日本",
            "-tmp-rcfix-claude-home-projects-caf---n----",
        ),
        ("/tmp/rc/enc/emoji\U0001f600x", "-tmp-rc-enc-emoji--x"),
    ],
)
def test_project_folder_names(path: str, folder: str) -> None:
    assert claude_project_folder(path) == folder


def test_project_folder_name_of_a_long_path() -> None:
    parts = [f"segment_with.dots-and_underscores{i:02d}" for i in range(7)]
    path = "/tmp/rcfix/claude/home/projects/" + "/".join(parts)
    assert claude_project_folder(path).endswith("-nvu2ub")
    assert len(claude_project_folder(path)) == 207


def test_missing_binary_fails_with_install_hint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("COMMUTER_CLAUDE_BIN", str(tmp_path / "nope"))
    with pytest.raises(ClaudeNotFound, match="not an executable"):
        find_claude()
    monkeypatch.delenv("COMMUTER_CLAUDE_BIN")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(harness, "TOOLS", tmp_path / "tools")
    for version in harness.CLAUDE_VERSIONS:
        with pytest.raises(ClaudeNotFound, match=rf"{version} not found.*install-claude\.sh"):
            find_claude(version)


@pytest.mark.e2e
def test_print_then_continue(claude_bin: Path, fake_model: FakeModel, claude_home: Path) -> None:
    project = _project(claude_home, "My Project.v2")

    first = check(
        run_claude(
            claude_bin,
            claude_home,
            project,
            ["-p", "Remember the codeword KIWI-314."],
            fake_model.base_url,
        )
    )
    assert "KIWI-314" in first.stdout
    folder = project_folder(claude_home, project)
    assert folder.name.endswith("-home-projects-My-Project-v2")
    assert list(folder.parent.iterdir()) == [folder]
    files = session_files(claude_home, project)
    assert [f.parent for f in files] == [folder]
    sid = files[0].stem
    assert fake_model.session_ids() == [sid]
    entries = read_transcript(files[0])
    assert {e["sessionId"] for e in entries} == {sid}
    assert {e["cwd"] for e in entries if "cwd" in e} == {os.path.realpath(project)}

    fake_model.clear()
    second = check(
        run_claude(
            claude_bin,
            claude_home,
            project,
            ["-p", "--continue", "What was the codeword?"],
            fake_model.base_url,
        )
    )
    assert "KIWI-314" in second.stdout
    asked = fake_model.requests_containing("What was the codeword?")
    assert asked, fake_model.calls
    assert any("Remember the codeword KIWI-314." in t for t in _user_texts(asked[-1]))
    assert session_files(claude_home, project) == files
    assert fake_model.session_ids() == [sid]


@pytest.mark.e2e
def test_resume_by_id_and_continue_newest(
    claude_bin: Path, fake_model: FakeModel, claude_home: Path
) -> None:
    project = _project(claude_home, "My Project.v2")
    for prompt in ("Remember the codeword KIWI-314.", "Remember the codeword PEAR-9."):
        check(run_claude(claude_bin, claude_home, project, ["-p", prompt], fake_model.base_url))
    by_word = {
        word: f
        for f in session_files(claude_home, project)
        for word in ("KIWI-314", "PEAR-9")
        if word in f.read_text(encoding="utf-8")
    }
    assert len(by_word) == 2 and by_word["KIWI-314"] != by_word["PEAR-9"]

    fake_model.clear()
    kiwi = by_word["KIWI-314"].stem
    out = check(
        run_claude(
            claude_bin,
            claude_home,
            project,
            ["-p", "--resume", kiwi, "What was the codeword?"],
            fake_model.base_url,
        )
    )
    assert out.stdout.strip() == "Codewords seen: KIWI-314."
    assert fake_model.requests_containing("KIWI-314")
    assert not fake_model.requests_containing("PEAR-9")
    assert fake_model.session_ids() == [kiwi]

    fake_model.clear()
    make_newest(by_word["PEAR-9"])
    out = check(
        run_claude(
            claude_bin, claude_home, project, ["-p", "--continue", "And now?"], fake_model.base_url
        )
    )
    assert out.stdout.strip() == "Codewords seen: PEAR-9."
    assert fake_model.session_ids() == [by_word["PEAR-9"].stem]


@pytest.mark.e2e
def test_resume_from_another_folder(
    claude_bin: Path, fake_model: FakeModel, claude_home: Path
) -> None:
    project = _project(claude_home, "a")
    other = _project(claude_home, "b")
    check(
        run_claude(claude_bin, claude_home, project, ["-p", "Remember FIG-1."], fake_model.base_url)
    )
    [transcript] = session_files(claude_home, project)
    sid = transcript.stem
    fake_model.clear()
    out = run_claude(
        claude_bin,
        claude_home,
        other,
        ["-p", "--resume", sid, "Hi"],
        fake_model.base_url,
        timeout=60,
    )
    if version_tuple(claude_version(claude_bin)) < (2, 1, 332):
        # 2.1.197 looks only in the current directory's project folder.
        assert out.returncode == 1
        assert f"No conversation found with session ID: {sid}" in out.stderr
        assert fake_model.requests == []
        return
    # 2.1.332 finds a session id in any project folder and goes on in the file it found.
    assert check(out).stdout.strip() == "Codewords seen: FIG-1."
    assert session_files(claude_home, other) == []
    assert read_transcript(transcript)[-1]["sessionId"] == sid
