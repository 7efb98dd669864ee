"""The real Gemini CLI (pinned below, installed by scripts/install-gemini.sh) against the fake
Gemini API of fake_gemini.py: a chat made at home A in a project whose path has a dot and a
space travels to home B under another path (where gemini already has chats and another
project of the same folder name), B's `gemini --resume latest` sends the earlier
conversation, B continues, and A's `--resume <id>` carries both codewords. Its subagent
chat travels; the imported chat survives gemini's start-up cleanup."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from commuter.backends.gemini import GeminiBackend
from commuter.backends.gemini.chat import read_chat
from commuter.cli import cli
from commuter.settings import Settings

from .fake_gemini import FakeGemini, Request, codewords, texts

GEMINI_VERSION = "0.61.0"
REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def find_gemini() -> Path:
    """The pinned gemini; the test fails (never skips) without it."""
    binary = REPO / ".tools" / f"gemini-{GEMINI_VERSION}" / "node_modules" / ".bin" / "gemini"
    if not binary.is_file():
        pytest.fail(
            f"gemini {GEMINI_VERSION} is not installed at {binary}; run scripts/install-gemini.sh",
            pytrace=False,
        )
    return binary


@pytest.fixture
def gemini_bin() -> Path:
    return find_gemini()


@pytest.fixture
def api() -> Iterator[FakeGemini]:
    with FakeGemini() as server:
        yield server


def seed(home: Path) -> None:
    """API-key auth (with the base URL alone gemini picks `gateway` and refuses `-p`), no
    telemetry or usage statistics."""
    (home / ".gemini").mkdir(parents=True, exist_ok=True)
    (home / ".gemini" / "settings.json").write_text(
        json.dumps(
            {
                "security": {"auth": {"selectedType": "gemini-api-key"}},
                "privacy": {"usageStatisticsEnabled": False},
                "telemetry": {"enabled": False},
            }
        )
    )


def gemini(binary: Path, home: Path, cwd: Path, api: FakeGemini, *args: str) -> str:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "TZ": "UTC",
        "LANG": "C.UTF-8",
        "GEMINI_API_KEY": "dummy",
        "GOOGLE_GEMINI_BASE_URL": api.url,
        "GEMINI_CLI_TRUST_WORKSPACE": "true",
        "NO_COLOR": "1",
        "CI": "1",
    }
    proc = subprocess.run(
        [str(binary), "--skip-trust", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, f"gemini {args} exited {proc.returncode}: {proc.stderr[-2000:]}"
    return proc.stdout


def commuter(home: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> str:
    monkeypatch.setenv("HOME", str(home))
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    print(result.stderr, file=sys.stderr, end="")  # its warnings, shown if the test fails
    return result.stdout


def backend(home: Path) -> GeminiBackend:
    return GeminiBackend(Settings.from_env({"HOME": str(home), "USER": "tester"}))


def _conversations(api: FakeGemini, since: int) -> list[Request]:
    """The conversation requests since the `since`-th chat request (the main agent's, which
    offers its subagents as a tool; not a summary or a subagent's own)."""
    return [r for r in api.chats()[since:] if "invoke_agent" in json.dumps(r.body.get("tools"))]


def last_chat_words(api: FakeGemini, since: int) -> list[str]:
    sent = _conversations(api, since)
    assert sent, "gemini sent no conversation request"
    return codewords(sent[-1].body)


def wait_for_a_new_minute(start_time: str) -> None:
    """gemini's resume names a file after the current minute and, in the chat's own start
    minute, appends to it instead: the e2e resumes in a later minute, as a person would."""
    started = datetime.fromisoformat(start_time.replace("Z", "+00:00"))
    while datetime.now(UTC).strftime("%H%M") == started.strftime("%H%M"):
        time.sleep(1)


@pytest.mark.timeout(400)  # it waits for a new minute
def test_a_chat_moves_and_comes_back(
    gemini_bin: Path, api: FakeGemini, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home_a, home_b = tmp_path / "A", tmp_path / "B"
    project_a = home_a / "work" / "My App.v2"
    project_a.mkdir(parents=True)
    (project_a / "README.md").write_text("# my app\n")
    seed(home_a)
    gemini(
        gemini_bin,
        home_a,
        project_a,
        api,
        "--yolo",
        "-p",
        "Remember the codeword PLUM-9. TOOL:Task:Read the README for me.",
    )
    [ref] = list(backend(home_a).sessions())
    sid = ref.session_id
    assert ref.project == project_a
    bundle = tmp_path / "a.commuter"
    commuter(home_a, monkeypatch, "export", sid, "-o", str(bundle))

    # B: gemini has a chat of its own in another project of the same folder name
    seed(home_b)
    other_b = home_b / "elsewhere" / "My App.v2"
    other_b.mkdir(parents=True)
    gemini(gemini_bin, home_b, other_b, api, "-p", "Remember the codeword FIG-1.")
    project_b = home_b / "code" / "My App.v2"
    project_b.mkdir(parents=True)
    out = commuter(
        home_b, monkeypatch, "import", str(bundle), "--project-dir", str(project_b), "--no-launch"
    )
    assert f"gemini --resume {sid}" in out
    projects = json.loads((home_b / ".gemini" / "projects.json").read_text())["projects"]
    assert projects == {str(other_b): "my-app-v2", str(project_b): "my-app-v2-1"}
    chats_b = home_b / ".gemini" / "tmp" / "my-app-v2-1" / "chats"
    [sub] = list((chats_b / sid).glob("*.jsonl"))  # the subagent chat travelled
    assert json.loads(sub.read_text().splitlines()[0])["directories"] == [str(project_b)]

    # a gemini start in that project (its cleanup runs) leaves the chat; the resume sends it
    assert ref.path is not None
    wait_for_a_new_minute(read_chat(ref.path).start_time)
    listed = gemini(gemini_bin, home_b, project_b, api, "--list-sessions")
    assert sid in listed or "PLUM-9" in listed
    seen = len(api.chats())
    gemini(
        gemini_bin,
        home_b,
        project_b,
        api,
        "--resume",
        "latest",
        "-p",
        "Also remember the codeword MELON-5.",
    )
    words = last_chat_words(api, seen)
    assert "PLUM-9" in words and "MELON-5" in words and "FIG-1" not in words
    back = tmp_path / "b.commuter"
    commuter(home_b, monkeypatch, "export", sid, "-o", str(back))

    # A: the continuation updates A's chat; A's resume carries both codewords
    out = commuter(
        home_a, monkeypatch, "import", str(back), "--project-dir", str(project_a), "--no-launch"
    )
    assert "updated" in out.lower() or sid in out
    seen = len(api.chats())
    gemini(gemini_bin, home_a, project_a, api, "--resume", sid, "-p", "Which codewords?")
    words = last_chat_words(api, seen)
    assert "PLUM-9" in words and "MELON-5" in words
    chats_a = home_a / ".gemini" / "tmp" / "my-app-v2" / "chats"
    assert str(home_b) not in "".join(p.read_text() for p in chats_a.glob("*.jsonl"))


def _age(chat: Path, days: int) -> None:
    """Move every time in a chat `days` into the past (as if last used then)."""
    past = (datetime.now(UTC) - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    lines = []
    for line in chat.read_text().splitlines():
        record = json.loads(line)
        for key in ("startTime", "lastUpdated", "timestamp"):
            if key in record:
                record[key] = past
        if isinstance(record.get("$set"), dict) and "lastUpdated" in record["$set"]:
            record["$set"]["lastUpdated"] = past
        lines.append(json.dumps(record))
    chat.write_text("\n".join(lines) + "\n")


def test_an_old_imported_chat_survives_the_next_gemini_start(
    gemini_bin: Path, api: FakeGemini, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home_a, home_b = tmp_path / "A", tmp_path / "B"
    project_a = home_a / "work" / "old.app"
    project_a.mkdir(parents=True)
    seed(home_a)
    gemini(gemini_bin, home_a, project_a, api, "-p", "Remember the codeword OLIVE-31.")
    [ref] = list(backend(home_a).sessions())
    assert ref.path is not None
    _age(ref.path, 45)  # last used 45 days ago: past gemini's 30-day retention
    bundle = tmp_path / "old.commuter"
    commuter(home_a, monkeypatch, "export", ref.session_id, "-o", str(bundle))

    seed(home_b)
    project_b = home_b / "code" / "old.app"
    project_b.mkdir(parents=True)
    commuter(
        home_b, monkeypatch, "import", str(bundle), "--project-dir", str(project_b), "--no-launch"
    )
    chats = home_b / ".gemini" / "tmp" / "old-app" / "chats"
    [placed] = list(chats.glob("session-*.jsonl"))
    # the same aged chat copied in as it is: gemini's next start deletes it (the rule is real)
    raw = chats / f"session-2020-01-01T00-00-{'f' * 8}.jsonl"
    raw.write_text(
        ref.path.read_text()
        .replace(ref.session_id[:8], "f" * 8, 1)
        .replace(ref.session_id, "ffffffff" + ref.session_id[8:])
    )
    gemini(gemini_bin, home_b, project_b, api, "-p", "Something else, FIG-2.")
    assert not raw.exists()
    assert placed.is_file()  # the imported one survived that start
    seen = len(api.chats())
    gemini(gemini_bin, home_b, project_b, api, "--resume", ref.session_id, "-p", "Codeword?")
    assert "OLIVE-31" in codewords(api.chats()[seen:][-1].body)


def test_a_recorded_tool_chat_resumes_with_its_paths_translated(
    gemini_bin: Path, api: FakeGemini, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_gemini_backend import TOOLS, install  # real 0.61.0 chats, rebased to home A

    home_a, home_b = tmp_path / "A", tmp_path / "B"
    install(home_a)
    bundle = tmp_path / "tools.commuter"
    commuter(home_a, monkeypatch, "export", TOOLS, "-o", str(bundle))
    seed(home_b)
    project_b = home_b / "code" / "tool box.app"
    project_b.mkdir(parents=True)
    commuter(
        home_b, monkeypatch, "import", str(bundle), "--project-dir", str(project_b), "--no-launch"
    )
    seen = len(api.chats())
    gemini(gemini_bin, home_b, project_b, api, "--resume", TOOLS, "-p", "What did you do?")
    body = [r for r in api.chats()[seen:] if r.body.get("tools")][-1].body
    sent = json.dumps(body["contents"])
    assert f"{project_b}/a.txt" in sent and f"{project_b}/notes/new.txt" in sent
    for content in body["contents"]:
        for part in content.get("parts", []):
            if str(part.get("text", "")).startswith("Tool tour."):
                continue  # the prompt as typed: prose, left as it was
            assert str(home_a) not in json.dumps(part), part


@pytest.mark.timeout(400)
def test_latest_takes_the_import_and_a_fork_resumes_beside_its_origin(
    gemini_bin: Path, api: FakeGemini, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """B's own chat of the project started after the incoming one: B's `--resume latest`
    still takes the import. Both sides go on, B first; B's version comes back to A and keeps
    the id (its turn began first), with both subagent chats; A's own turn moves to a fork
    beside it (its own short id); A's `--resume latest` and `--resume <id>` take B's version,
    `--resume <fork>` A's turn, and so does B's once the fork got there."""
    home_a, home_b = tmp_path / "A", tmp_path / "B"
    project_a = home_a / "work" / "two chats.app"
    project_b = home_b / "code" / "two chats.app"
    for home, project in ((home_a, project_a), (home_b, project_b)):
        project.mkdir(parents=True)
        (project / "README.md").write_text("# two chats\n")
        seed(home)
    gemini(
        gemini_bin,
        home_a,
        project_a,
        api,
        "--yolo",
        "-p",
        "Remember the codeword KIWI-1. TOOL:Task:Read the README for me.",
    )
    [ref] = list(backend(home_a).sessions())
    sid = ref.session_id
    gemini(gemini_bin, home_b, project_b, api, "-p", "Remember the codeword FIG-2.")
    bundle = tmp_path / "a.commuter"
    commuter(home_a, monkeypatch, "export", sid, "-o", str(bundle))
    commuter(
        home_b, monkeypatch, "import", str(bundle), "--project-dir", str(project_b), "--no-launch"
    )
    seen = len(api.chats())
    gemini(
        gemini_bin,
        home_b,
        project_b,
        api,
        "--yolo",
        "--resume",
        "latest",
        "-p",
        "Only there: PLUM-6. TOOL:Task:Read it again.",
    )
    words = last_chat_words(api, seen)
    assert "KIWI-1" in words and "PLUM-6" in words and "FIG-2" not in words
    # A goes on in a later minute: gemini leaves a message-less session-<that minute>-<short
    # id> file, with which its next start not resuming this chat would delete it; the import
    # (after which `latest` is the fork) moves that file into the backups
    assert ref.path is not None
    wait_for_a_new_minute(read_chat(ref.path).start_time)
    gemini(gemini_bin, home_a, project_a, api, "--resume", sid, "-p", "Only here: PEAR-5.")

    back = tmp_path / "b.commuter"
    commuter(home_b, monkeypatch, "export", sid, "-o", str(back))
    out = commuter(
        home_a, monkeypatch, "import", str(back), "--project-dir", str(project_a), "--no-launch"
    )
    assert f"replaced: session {sid}" in out, out
    # B's turn began first: B's branch keeps the id, A's own moves to the fork (the id B
    # gives it too), with A's subagent chat
    chats = home_a / ".gemini" / "tmp" / "two-chats-app" / "chats"
    forks = [r for r in backend(home_a).sessions() if r.session_id != sid]
    assert len(forks) == 1, forks
    fork = forks[0].session_id
    assert fork[:8] != sid[:8]
    names = sorted(p.name for p in chats.glob("session-*.jsonl"))
    [fork_file] = [n for n in names if n.endswith(f"-{fork[:8]}.jsonl")]
    [origin_file] = [n for n in names if n.endswith(f"-{sid[:8]}.jsonl")][:1]
    assert fork_file != origin_file
    assert len(list((chats / sid).glob("*.jsonl"))) == 2  # both subagent chats came along
    assert len(list((chats / fork).glob("*.jsonl"))) == 1  # A's own one, moved along

    # (a chat resumed here in a later minute than its file's is deleted by the next gemini
    # start that resumes another one: gemini's own rule, whatever commuter does; so each chat
    # is resumed last by the runs that check it)
    seen = len(api.chats())
    gemini(gemini_bin, home_a, project_a, api, "--resume", "latest", "-p", "Which codewords?")
    words = last_chat_words(api, seen)
    assert "KIWI-1" in words and "PLUM-6" in words and "PEAR-5" not in words
    seen = len(api.chats())
    gemini(gemini_bin, home_a, project_a, api, "--resume", sid, "-p", "And here?")
    words = last_chat_words(api, seen)
    assert "KIWI-1" in words and "PLUM-6" in words and "PEAR-5" not in words
    seen = len(api.chats())
    gemini(gemini_bin, home_a, project_a, api, "--resume", fork, "-p", "The fork again?")
    words = last_chat_words(api, seen)
    assert "KIWI-1" in words and "PEAR-5" in words and "PLUM-6" not in words

    # the fork goes to B: the same id there, a fork of the origin; B resumes A's turn by it
    there = tmp_path / "fork.commuter"
    commuter(home_a, monkeypatch, "export", fork, "-o", str(there))
    commuter(
        home_b, monkeypatch, "import", str(there), "--project-dir", str(project_b), "--no-launch"
    )
    listed = commuter(home_b, monkeypatch, "list", "--json")
    [row] = [r for r in json.loads(listed) if r["session_id"] == fork]
    assert row["fork_of"] == sid
    seen = len(api.chats())
    gemini(gemini_bin, home_b, project_b, api, "--resume", fork, "-p", "Yours, B?")
    words = last_chat_words(api, seen)
    assert "KIWI-1" in words and "PEAR-5" in words and "PLUM-6" not in words


def gemini_tui(
    binary: Path, home: Path, cwd: Path, api: FakeGemini, *args: str, prompt: str
) -> list[str]:
    """The interactive `gemini ARGS` on a pseudo-terminal in `cwd`: once it reports itself
    ready (terminal title "◇  Ready"), types `prompt` and returns the codewords of the
    conversation request it sends."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "TZ": "UTC",
        "LANG": "C.UTF-8",
        "GEMINI_API_KEY": "dummy",
        "GOOGLE_GEMINI_BASE_URL": api.url,
        "GEMINI_CLI_TRUST_WORKSPACE": "true",
        "TERM": "xterm-256color",
    }
    before = len(api.chats())
    pid, fd = pty.fork()
    if pid == 0:  # the child: becomes gemini
        try:
            os.chdir(cwd)
            os.execve(str(binary), [str(binary), "--skip-trust", *args], env)
        finally:
            os._exit(127)
    seen = bytearray()

    def pump(seconds: float, until: bytes | None = None) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and not (until and until in seen):
            ready, _, _ = select.select([fd], [], [], 0.1)
            if not ready:
                continue
            try:
                data = os.read(fd, 65536)
            except OSError:
                return
            seen.extend(data)
            if b"\x1b[6n" in data:  # where is the cursor? (a terminal answers)
                os.write(fd, b"\x1b[1;1R")

    def shows(text: str) -> bool:
        return text in _screen(seen, limit=None)

    try:
        pump(90, until=b"Ready (")
        assert b"Ready (" in seen, bytes(seen[-2000:])
        end = time.monotonic() + 20
        while time.monotonic() < end:  # until the start-up drawing is done (1.5 s quiet)
            drawn = len(seen)
            pump(1.5)
            if len(seen) == drawn:
                break
        # keys typed while a resumed chat is still being drawn can be lost: typed again until
        # the prompt is on the screen
        for _ in range(4):
            os.write(fd, prompt.encode())
            end = time.monotonic() + 10
            while not shows(prompt.rstrip("?.!")) and time.monotonic() < end:
                pump(0.2)
            if shows(prompt.rstrip("?.!")):
                break
        # gemini takes an Enter that comes within 30 ms of a typed key for a newline (a paste,
        # bufferFastReturn): the Enter goes once the prompt is on the screen, and again while
        # nothing was sent (a busy gemini may have read both at once).
        end = time.monotonic() + 90
        for _ in range(3):
            pump(0.5)
            os.write(fd, b"\r")
            wait = time.monotonic() + 20
            while not _conversations(api, before) and time.monotonic() < min(wait, end):
                pump(0.5)
            if _conversations(api, before):
                break
        sent = [(r.path.rsplit("/", 1)[-1], texts(r.body)[-1:]) for r in api.chats()[before:]]
        if not _conversations(api, before):
            raw = home.parent / f"tui-{pid}.raw"
            raw.write_bytes(bytes(seen))
            pytest.fail(f"nothing sent ({sent}; all output in {raw})\n{_screen(seen)}")
        return last_chat_words(api, before)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(fd)


def _screen(seen: bytes | bytearray, limit: int | None = 3000) -> str:
    """What gemini showed (the last `limit` characters), without terminal escapes."""
    escapes = rb"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[()][0-9A-Z]"
    text = re.sub(escapes, b"", bytes(seen)).decode(errors="replace")
    return text[-limit:] if limit else text


@pytest.mark.timeout(400)
def test_interactive_gemini_resume_latest_takes_the_import(
    gemini_bin: Path, api: FakeGemini, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The interactive UI on a pseudo-terminal at B: `gemini --resume latest` (B has a newer
    chat of its own in the project) and `gemini --resume <id>` send the imported chat."""
    home_a, home_b = tmp_path / "A", tmp_path / "B"
    project_a = home_a / "work" / "My App.v2"
    project_b = home_b / "code" / "other place.d"
    for home, project in ((home_a, project_a), (home_b, project_b)):
        project.mkdir(parents=True)
        seed(home)
    gemini(gemini_bin, home_a, project_a, api, "-p", "Remember the codeword KIWI-7.")
    [ref] = list(backend(home_a).sessions())
    gemini(gemini_bin, home_b, project_b, api, "-p", "Remember the codeword FIG-2.")
    bundle = tmp_path / "a.commuter"
    commuter(home_a, monkeypatch, "export", ref.session_id, "-o", str(bundle))
    commuter(
        home_b, monkeypatch, "import", str(bundle), "--project-dir", str(project_b), "--no-launch"
    )
    words = gemini_tui(
        gemini_bin, home_b, project_b, api, "--resume", "latest", prompt="What was the codeword?"
    )
    assert words == ["KIWI-7"]
    words = gemini_tui(
        gemini_bin, home_b, project_b, api, "--resume", ref.session_id, prompt="Once more?"
    )
    assert words == ["KIWI-7"]
