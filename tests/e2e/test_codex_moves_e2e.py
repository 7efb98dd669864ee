"""A Codex thread made by the real CLI moves between two fake homes and the real CLI resumes it
there: `codex exec resume <id>` and `--last` send the earlier conversation (the codeword) to a
fake Responses API on loopback; the other side continues, and the thread comes back."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import select
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from commuter.cli import cli

from .fake_openai import FakeOpenAI, codewords

CODEX_PINNED = ("0.169.0", "0.171.0")
REPO = Path(__file__).resolve().parents[2]
SESSION_ID = re.compile(r"session id: ([0-9a-f-]{36})")

pytestmark = pytest.mark.e2e


def codex_bin(version: str) -> Path:
    return REPO / ".tools" / f"codex-{version}" / "node_modules" / ".bin" / "codex"


@pytest.fixture(params=CODEX_PINNED, ids=[f"codex-{v}" for v in CODEX_PINNED])
def codex(request: pytest.FixtureRequest) -> Path:
    """Each pinned Codex CLI (scripts/install-codex.sh); fails, never skips, when missing."""
    path = codex_bin(request.param)
    if not path.is_file():
        pytest.fail(
            f"codex {request.param} not installed at {path}: run scripts/install-codex.sh",
            pytrace=False,
        )
    return path


@pytest.fixture(autouse=True)
def codex_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    from commuter import backends

    monkeypatch.setitem(backends.BUILTIN, "codex", "commuter.backends.codex:CodexBackend")


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


def setup_home(home: Path, fake: FakeOpenAI, trusted: tuple[Path, ...] = ()) -> Path:
    """A HOME whose codex talks only to the fake server (no update check, no analytics)."""
    (home / ".codex").mkdir(parents=True)
    (home / ".codex" / "config.toml").write_text(
        'model = "gpt-mock"\nmodel_provider = "mock"\ncheck_for_update_on_startup = false\n'
        "[analytics]\nenabled = false\n"
        f'[model_providers.mock]\nname = "Mock"\nbase_url = "{fake.base_url}"\n'
        'wire_api = "responses"\nenv_key = "MOCK_API_KEY"\n'
        + "".join(f'[projects.{json.dumps(str(p))}]\ntrust_level = "trusted"\n' for p in trusted)
    )
    return home


def codex_env(home: Path) -> dict[str, str]:
    dead = "http://127.0.0.1:9"  # anything not on loopback goes nowhere
    return {
        "HOME": str(home),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "TZ": "UTC",
        "LANG": "C.UTF-8",
        "MOCK_API_KEY": "dummy",
        "HTTPS_PROXY": dead,
        "HTTP_PROXY": dead,
        "ALL_PROXY": dead,
        "NO_PROXY": "127.0.0.1,localhost",
        "TERM": "xterm-256color",
    }


def run_codex(codex: Path, home: Path, cwd: Path, *args: str) -> str:
    """`codex exec ARGS` in `cwd`; returns the thread id it reports."""
    env = codex_env(home)
    proc = subprocess.run(
        [str(codex), "exec", "--skip-git-repo-check", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = SESSION_ID.search(proc.stderr + proc.stdout)
    assert found, proc.stderr[-2000:]
    return found.group(1)


def stop_daemons(home: Path) -> None:
    """End the app-server daemon the interactive UI started for this HOME (by the pids in its
    pid files, and only a process whose executable lies under this HOME)."""
    for pid_file in (home / ".codex" / "app-server-daemon").glob("*.pid"):
        try:
            pid = int(json.loads(pid_file.read_text())["pid"])
            exe = os.readlink(f"/proc/{pid}/exe")
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if exe.startswith(str(home) + "/"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def run_tui(
    codex: Path,
    home: Path,
    cwd: Path,
    fake: FakeOpenAI,
    *args: str,
    prompt: str = "What was the codeword?",
) -> list[str]:
    """The interactive `codex ARGS` on a pseudo-terminal in `cwd`: types `prompt` and
    returns the codewords of the first request it sends."""
    before = len(fake.requests)
    pid, fd = pty.fork()
    if pid == 0:  # the child: becomes codex
        try:
            os.chdir(cwd)
            os.execve(str(codex), [str(codex), *args], codex_env(home))
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

    try:
        # Ready for input once it sets the terminal title to idle (OSC 7501 state=idle).
        pump(90, until=b"state=idle")
        pump(1)
        os.write(fd, prompt.encode())
        pump(1)
        os.write(fd, b"\r")
        end = time.monotonic() + 90
        while len(fake.requests) == before and time.monotonic() < end:
            pump(0.5)
        assert len(fake.requests) > before, "the interactive codex sent no request"
        pump(2)  # let it write the turn out
        return codewords(fake.requests[before])
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(fd)
        stop_daemons(home)


def commuter(monkeypatch: pytest.MonkeyPatch, home: Path, *args: str):
    monkeypatch.setenv("HOME", str(home))
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result


def last_request_text(fake: FakeOpenAI) -> str:
    return json.dumps(fake.requests[-1])


def test_codex_thread_moves_and_resumes_both_ways(
    codex: Path, fake: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = setup_home(tmp_path / "A", fake)
    b = setup_home(tmp_path / "B", fake)
    proj_a = a / "code" / "My Project.v2"
    proj_b = b / "work" / "other place.d"
    proj_a.mkdir(parents=True)
    proj_b.mkdir(parents=True)
    # B's codex has a thread of its own (its databases exist), in the same project dir.
    own = run_codex(codex, b, proj_b, "Remember the codeword OWNB-7.")
    tid = run_codex(codex, a, proj_a, "Remember the codeword KIWI-314.")
    assert tid != own

    bundle = tmp_path / "t1.bundle"
    commuter(monkeypatch, a, "export", tid, "-o", str(bundle))
    out = commuter(
        monkeypatch, b, "import", str(bundle), "--project-dir", str(proj_b), "--no-launch"
    ).stdout
    assert f"codex resume {tid}" in out

    # resume by id at B: the earlier conversation is sent, in B's project
    assert run_codex(codex, b, proj_b, "resume", tid, "What was the codeword?") == tid
    assert codewords(fake.requests[-1]) == ["KIWI-314"]
    sent = last_request_text(fake)
    assert f"<cwd>{proj_b}</cwd>" in sent and str(proj_a) not in sent
    # --last in B's project takes it (newest there), B's own thread is still there
    assert (
        run_codex(codex, b, proj_b, "resume", "--last", "Remember also the codeword MANGO-77.")
        == tid
    )
    assert codewords(fake.requests[-1]) == ["KIWI-314", "MANGO-77"]
    assert run_codex(codex, b, proj_b, "resume", own, "And yours?") == own
    assert codewords(fake.requests[-1]) == ["OWNB-7"]
    # make the moved thread the newest at B again (so the continuation is what A gets)
    assert run_codex(codex, b, proj_b, "resume", tid, "Still there?") == tid

    back = tmp_path / "t2.bundle"
    commuter(monkeypatch, b, "export", tid, "-o", str(back))
    out = commuter(
        monkeypatch, a, "import", str(back), "--project-dir", str(proj_a), "--no-launch"
    ).stdout
    assert "updated" in out or "continued" in out, out
    assert run_codex(codex, a, proj_a, "resume", "--last", "Both codewords?") == tid
    assert codewords(fake.requests[-1]) == ["KIWI-314", "MANGO-77"]
    sent = last_request_text(fake)
    assert f"<cwd>{proj_a}</cwd>" in sent and str(proj_b) not in sent
    # A's database row names A's rollout and project
    conn = sqlite3.connect(f"file:{a / '.codex' / 'state_5.sqlite'}?mode=ro", uri=True)
    try:
        rollout_path, cwd = conn.execute(
            "SELECT rollout_path, cwd FROM threads WHERE id = ?", (tid,)
        ).fetchone()
    finally:
        conn.close()
    assert cwd == str(proj_a) and rollout_path.startswith(str(a / ".codex" / "sessions"))

    # Both go on alone: B's version comes to A as a fork with a new id that codex resumes,
    # A's own thread unchanged.
    assert run_codex(codex, a, proj_a, "resume", tid, "Only here: PEAR-5.") == tid
    assert run_codex(codex, b, proj_b, "resume", tid, "Only there: PLUM-6.") == tid
    third = tmp_path / "t3.bundle"
    commuter(monkeypatch, b, "export", tid, "-o", str(third))
    out = commuter(
        monkeypatch, a, "import", str(third), "--project-dir", str(proj_a), "--no-launch"
    ).stdout
    fork = re.search(r"codex resume ([0-9a-f-]{36})", out)
    assert fork and fork.group(1) != tid, out
    assert run_codex(codex, a, proj_a, "resume", fork.group(1), "Which?") == fork.group(1)
    assert codewords(fake.requests[-1]) == ["KIWI-314", "MANGO-77", "PLUM-6"]
    assert run_codex(codex, a, proj_a, "resume", tid, "And here?") == tid
    assert codewords(fake.requests[-1]) == ["KIWI-314", "MANGO-77", "PEAR-5"]


def test_interactive_codex_resume_finds_the_imported_thread(
    codex: Path, fake: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thread made in the interactive UI (the only kind its `resume --last` offers; `exec`
    threads are left out there) is resumed by the interactive UI at the other home."""
    proj_a = tmp_path / "A" / "code" / "My Project.v2"
    proj_b = tmp_path / "B" / "work" / "other place.d"
    a = setup_home(tmp_path / "A", fake, trusted=(proj_a,))
    b = setup_home(tmp_path / "B", fake, trusted=(proj_b,))
    proj_a.mkdir(parents=True)
    proj_b.mkdir(parents=True)
    run_codex(codex, b, proj_b, "Remember the codeword OWNB-7.")
    assert run_tui(codex, a, proj_a, fake, prompt="Remember the codeword KIWI-314.") == ["KIWI-314"]
    made = list((a / ".codex" / "sessions").rglob("rollout-*.jsonl"))
    assert len(made) == 1
    tid = made[0].name[-len("0000000-0000-0000-0000-000000000000.jsonl") - 1 : -len(".jsonl")]
    bundle = tmp_path / "t.bundle"
    commuter(monkeypatch, a, "export", tid, "-o", str(bundle))
    commuter(monkeypatch, b, "import", str(bundle), "--project-dir", str(proj_b), "--no-launch")
    assert run_tui(codex, b, proj_b, fake, "resume", tid) == ["KIWI-314"]
    assert run_tui(codex, b, proj_b, fake, "resume", "--last") == ["KIWI-314"]


def spawn_tree(home: Path) -> tuple[dict[str, tuple[str, str, str]], list[tuple[str, str]]]:
    """B's/A's threads (id → thread_source, cwd, rollout_path) and spawn edges, read-only."""
    conn = sqlite3.connect(f"file:{home / '.codex' / 'state_5.sqlite'}?mode=ro", uri=True)
    try:
        rows = {
            str(r[0]): (str(r[1]), str(r[2]), str(r[3]))
            for r in conn.execute("SELECT id, thread_source, cwd, rollout_path FROM threads")
        }
        edges = [
            (str(p), str(c))
            for p, c in conn.execute(
                "SELECT parent_thread_id, child_thread_id FROM thread_spawn_edges"
            )
        ]
    finally:
        conn.close()
    return rows, edges


def test_subagent_threads_travel_and_the_parent_resumes(
    codex: Path, fake: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real codex spawns a subagent (spawn_agent + wait_agent, scripted by the fake
    server): its own rollout, its threads row and the spawn edge travel with the parent; at B
    the parent resumes (and the subagent by its id, with its own conversation); a second
    subagent B's resumed parent spawns comes back to A with the continuation."""
    a = setup_home(tmp_path / "A", fake)
    b = setup_home(tmp_path / "B", fake)
    proj_a = a / "code" / "My Project.v2"
    proj_b = b / "work" / "other place.d"
    proj_a.mkdir(parents=True)
    proj_b.mkdir(parents=True)
    own = run_codex(codex, b, proj_b, "Remember the codeword OWNB-7.")
    parent = run_codex(
        codex, a, proj_a, "Remember the codeword PARENT-1.\nSPAWN:Remember the codeword CHILD-2."
    )
    rows_a, edges_a = spawn_tree(a)
    children = [c for p, c in edges_a if p == parent]
    assert len(children) == 1, edges_a
    child = children[0]
    assert rows_a[child][0] == "subagent"
    # what the subagent itself was sent: its task, not the parent's conversation
    assert any(codewords(r) == ["CHILD-2"] for r in fake.requests)

    bundle = tmp_path / "t1.bundle"
    commuter(monkeypatch, a, "export", parent, "-o", str(bundle))
    commuter(monkeypatch, b, "import", str(bundle), "--project-dir", str(proj_b), "--no-launch")
    rows_b, edges_b = spawn_tree(b)
    assert (parent, child) in edges_b and own in rows_b
    assert rows_b[child][:2] == ("subagent", str(proj_b))
    child_rollout = Path(rows_b[child][2])
    assert child_rollout.is_file() and child_rollout.is_relative_to(b / ".codex" / "sessions")
    assert child_rollout.name == Path(rows_a[child][2]).name
    assert str(a) not in child_rollout.read_text()
    # `commuter list` at B shows the parent, never the subagent as a session of its own
    listed = commuter(monkeypatch, b, "list", "--agent", "codex").stdout
    assert len(listed.strip().splitlines()) == 3, listed  # a header, the parent, B's own

    assert run_codex(codex, b, proj_b, "resume", parent, "What was the codeword?") == parent
    assert codewords(fake.requests[-1]) == ["PARENT-1", "CHILD-2"]
    sent = last_request_text(fake)
    assert f"<cwd>{proj_b}</cwd>" in sent and str(proj_a) not in sent
    # a subagent thread resumes by its id too (codex reports its root session's id)
    assert run_codex(codex, b, proj_b, "resume", child, "And yours?") in (child, parent)
    assert codewords(fake.requests[-1]) == ["CHILD-2"]
    assert str(proj_a) not in last_request_text(fake)
    # B's resumed parent spawns a second subagent; the continuation brings it to A.
    assert (
        run_codex(codex, b, proj_b, "resume", parent, "Again.\nSPAWN:Remember the codeword ORCA-3.")
        == parent
    )
    rows_b, edges_b = spawn_tree(b)
    second = [c for p, c in edges_b if p == parent and c != child]
    assert len(second) == 1, edges_b

    back = tmp_path / "t2.bundle"
    commuter(monkeypatch, b, "export", parent, "-o", str(back))
    out = commuter(
        monkeypatch, a, "import", str(back), "--project-dir", str(proj_a), "--no-launch"
    ).stdout
    assert "updated" in out, out
    rows_a, edges_a = spawn_tree(a)
    assert {(parent, child), (parent, second[0])} <= set(edges_a)
    assert rows_a[second[0]][:2] == ("subagent", str(proj_a))
    assert Path(rows_a[second[0]][2]).is_relative_to(a / ".codex" / "sessions")
    assert run_codex(codex, a, proj_a, "resume", "--last", "All of them?") == parent
    assert codewords(fake.requests[-1]) == ["PARENT-1", "CHILD-2", "ORCA-3"]
    assert run_codex(codex, a, proj_a, "resume", second[0], "Yours?") in (second[0], parent)
    assert codewords(fake.requests[-1]) == ["ORCA-3"]


def test_a_thread_archived_at_b_comes_back_unarchived_with_the_continuation(
    codex: Path, fake: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """B archived the thread (`codex archive`: an archived thread does not resume); A goes
    on with it and sends it again: B has it unarchived, as `codex unarchive` would, and the
    real codex resumes it there with both codewords."""
    a = setup_home(tmp_path / "A", fake)
    b = setup_home(tmp_path / "B", fake)
    proj_a = a / "code" / "My Project.v2"
    proj_b = b / "work" / "other place.d"
    proj_a.mkdir(parents=True)
    proj_b.mkdir(parents=True)
    tid = run_codex(codex, a, proj_a, "Remember the codeword KIWI-314.")
    bundle = tmp_path / "t1.bundle"
    commuter(monkeypatch, a, "export", tid, "-o", str(bundle))
    commuter(monkeypatch, b, "import", str(bundle), "--project-dir", str(proj_b), "--no-launch")
    archived = subprocess.run(
        [str(codex), "archive", tid],
        env=codex_env(b),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert archived.returncode == 0, archived.stderr[-2000:]
    assert list((b / ".codex" / "archived_sessions").glob(f"rollout-*-{tid}.jsonl"))

    assert run_codex(codex, a, proj_a, "resume", tid, "Remember also MANGO-77.") == tid
    again = tmp_path / "t2.bundle"
    commuter(monkeypatch, a, "export", tid, "-o", str(again))
    out = commuter(
        monkeypatch, b, "import", str(again), "--project-dir", str(proj_b), "--no-launch"
    ).stdout
    assert "updated" in out, out
    assert not list((b / ".codex" / "archived_sessions").glob(f"rollout-*-{tid}.jsonl"))
    assert run_codex(codex, b, proj_b, "resume", tid, "Both codewords?") == tid
    assert codewords(fake.requests[-1]) == ["KIWI-314", "MANGO-77"]
    assert run_codex(codex, b, proj_b, "resume", "--last", "Still?") == tid
