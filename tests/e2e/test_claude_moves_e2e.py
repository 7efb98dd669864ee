"""Real claude of each pinned version: a rewind after a move restores files in the target's
project; the project memory written at home is in the office's project folder after a pull."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from claude_home import V197, V332, install, transcript

from commuter.peer.identity import Identity
from commuter.peer.peers import Peer, Peers
from commuter.settings import Settings

from .fake_model import FakeModel, message_texts
from .harness import (
    check,
    claude_env,
    claude_version,
    project_folder,
    run_claude,
    seed_claude_json,
    session_files,
    version_tuple,
)

pytestmark = pytest.mark.e2e


def _env(home: Path) -> dict[str, str]:
    return {
        "HOME": str(home),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "COMMUTER_MDNS_INTERFACES": "127.0.0.1",
    }


def commuter(home: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "commuter", *args],
        cwd=cwd,
        env=_env(home),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"{proc.args}\n{proc.stdout}\n{proc.stderr}"
    return proc


def rewind(
    claude_bin: Path, home: Path, cwd: Path, sid: str, message_id: str, base_url: str
) -> dict[str, object]:
    """Ask `claude -p --resume sid` (stream-json, as the Agent SDK does) to rewind the files
    to their state before `message_id`; return its control response."""
    seed_claude_json(home, trusted=[cwd])
    env = claude_env(home, base_url, {"CLAUDE_CODE_ENABLE_SDK_FILE_CHECKPOINTING": "1"})
    request = {
        "type": "control_request",
        "request_id": "rw1",
        "request": {"subtype": "rewind_files", "user_message_id": message_id},
    }
    proc = subprocess.Popen(
        [
            str(claude_bin),
            "-p",
            "--resume",
            sid,
            "--input-format",
            "stream-json",
            "--output-format",
            "stream-json",
            "--verbose",
        ],
        cwd=cwd,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        proc.stdin.write(json.dumps(request) + "\n")
        proc.stdin.flush()
        deadline = time.monotonic() + 60
        for line in proc.stdout:
            message = json.loads(line) if line.startswith("{") else {}
            if message.get("type") == "control_response":
                answer = message["response"]
                assert answer["subtype"] == "success", answer
                response = answer["response"]
                assert isinstance(response, dict)
                return response
            assert time.monotonic() < deadline, "no control response within 60 s"
        raise AssertionError(f"claude ended without answering: {proc.stderr.read()}")
    finally:
        proc.stdin.close()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_rewind_after_a_move_restores_the_targets_files(
    tmp_path: Path, claude_bin: Path, fake_model: FakeModel
) -> None:
    # The real tool-tour session of this very version: it edited a.txt, created notes/new.txt.
    fixture = V332 if version_tuple(claude_version(claude_bin)) >= (2, 1, 332) else V197
    home_a = install(tmp_path / "a", fixture)
    home_b = tmp_path / "b"
    proj_a, proj_b = home_a / "projects" / "my.app", home_b / "code" / "my.app"
    proj_b.mkdir(parents=True)
    sid = fixture.sessions["tools"]
    bundle = tmp_path / "s.bundle"
    commuter(home_a, proj_a, "export", sid, "-o", str(bundle))
    commuter(
        home_b, proj_b, "config", "set", "path-map", str(home_a / "projects"), str(home_b / "code")
    )
    commuter(home_b, proj_b, "import", str(bundle), "--no-launch")
    for rel in ("a.txt", "notes/new.txt"):  # the project as the session left it, at B
        (proj_b / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(proj_a / rel, proj_b / rel)
    entries = [json.loads(x) for x in transcript(home_b, proj_b, sid).read_text().splitlines()]
    first = next(e["messageId"] for e in entries if e["type"] == "file-history-snapshot")

    response = rewind(claude_bin, home_b, proj_b, sid, first, fake_model.base_url)

    assert response["canRewind"] is True and not response.get("skippedLinks"), response
    assert (proj_b / "a.txt").read_text() == "hello\n"  # the backup taken before the Edit
    assert not (proj_b / "notes" / "new.txt").exists()  # created by the session: removed
    assert (proj_a / "a.txt").read_text() == "goodbye\n"  # the source project is untouched
    assert (proj_a / "notes" / "new.txt").is_file()


def _pair(home_a: Path, name_a: str, home_b: Path, name_b: str) -> None:
    """Each machine trusts the other's key (what `commuter pair` leaves behind)."""
    sa, sb = Settings.from_env(_env(home_a)), Settings.from_env(_env(home_b))
    key_a = Identity.load_or_create(sa).public_key
    key_b = Identity.load_or_create(sb).public_key
    for settings, name, key in ((sa, name_b, key_b), (sb, name_a, key_a)):
        peers = Peers.load(settings)
        peers.add(Peer.new(name, key))
        peers.save()


def test_memory_written_at_home_is_in_the_office_after_a_pull(
    tmp_path: Path, claude_bin: Path, fake_model: FakeModel
) -> None:
    home_a, home_b, shared = tmp_path / "home", tmp_path / "office", tmp_path / "Dropbox"
    proj_a, proj_b = home_a / "projects" / "my.app", home_b / "code" / "my.app"
    for d in (proj_a, proj_b, shared):
        d.mkdir(parents=True)
    check(run_claude(claude_bin, home_a, proj_a, ["-p", "Remember KIWI-314."], fake_model.base_url))
    [transcript_a] = session_files(home_a, proj_a)
    sid = transcript_a.stem
    # What the agent would have saved at home (the fake model does not call tools).
    memory_a = project_folder(home_a, proj_a) / "memory"
    memory_a.mkdir(exist_ok=True)
    index = "- [Deploy](deploy.md) — how this project is deployed\n"
    (memory_a / "MEMORY.md").write_text(index, encoding="utf-8")
    (memory_a / "deploy.md").write_text(
        "---\nname: deploy\ndescription: deploys\nmetadata:\n  type: project\n---\n\n"
        "Deploy with `make ship`; codeword MEMO-55.\n",
        encoding="utf-8",
    )

    _pair(home_a, "home", home_b, "office")
    for home in (home_a, home_b):
        commuter(home, home, "config", "set", "transfer-dir", str(shared))
    commuter(
        home_b, proj_b, "config", "set", "path-map", str(home_a / "projects"), str(home_b / "code")
    )
    commuter(home_a, proj_a, "push")
    pulled = commuter(home_b, proj_b, "pull")
    assert f"claude --resume {sid}" in pulled.stdout

    memory_b = project_folder(home_b, proj_b) / "memory"
    got = {p.name: p.read_bytes() for p in memory_b.iterdir()}
    assert got == {p.name: p.read_bytes() for p in memory_a.iterdir()}

    fake_model.clear()
    out = check(
        run_claude(
            claude_bin, home_b, proj_b, ["-p", "--continue", "Which codeword?"], fake_model.base_url
        )
    )
    assert out.stdout.strip().startswith("Codewords seen: KIWI-314")
    [request] = fake_model.snapshot()
    if version_tuple(claude_version(claude_bin)) >= (2, 1, 332):
        # 2.1.332 loads the project's MEMORY.md into the conversation, from the office's folder,
        # and nothing it sends names a path of the home machine.
        texts = list(message_texts(request))
        assert any(f"Contents of {memory_b}/MEMORY.md" in t and index.strip() in t for t in texts)
        assert str(home_a) not in json.dumps(request)
