"""A Codex thread made by the real CLI moves between two fake homes and the real CLI resumes it
there: `codex exec resume <id>` and `--last` send the earlier conversation (the codeword) to a
fake Responses API on loopback; the other side continues, and the thread comes back."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
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
        pytest.fail(f"codex {request.param} not installed at {path}: run "
                    "scripts/install-codex.sh", pytrace=False)
    return path


@pytest.fixture(autouse=True)
def codex_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    from commuter import backends

    monkeypatch.setitem(backends.BUILTIN, "codex", "commuter.backends.codex:CodexBackend")


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


def setup_home(home: Path, fake: FakeOpenAI) -> Path:
    """A HOME whose codex talks only to the fake server (no update check, no analytics)."""
    (home / ".codex").mkdir(parents=True)
    (home / ".codex" / "config.toml").write_text(
        'model = "gpt-mock"\nmodel_provider = "mock"\ncheck_for_update_on_startup = false\n'
        "[analytics]\nenabled = false\n"
        f'[model_providers.mock]\nname = "Mock"\nbase_url = "{fake.base_url}"\n'
        'wire_api = "responses"\nenv_key = "MOCK_API_KEY"\n')
    return home


def run_codex(codex: Path, home: Path, cwd: Path, *args: str) -> str:
    """`codex exec ARGS` in `cwd`; returns the thread id it reports."""
    dead = "http://127.0.0.1:9"  # anything not on loopback goes nowhere
    env = {"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TZ": "UTC",
           "LANG": "C.UTF-8", "MOCK_API_KEY": "dummy", "HTTPS_PROXY": dead,
           "HTTP_PROXY": dead, "ALL_PROXY": dead, "NO_PROXY": "127.0.0.1,localhost"}
    proc = subprocess.run([str(codex), "exec", "--skip-git-repo-check", *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=180,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = SESSION_ID.search(proc.stderr + proc.stdout)
    assert found, proc.stderr[-2000:]
    return found.group(1)


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
    out = commuter(monkeypatch, b, "import", str(bundle), "--project-dir", str(proj_b),
                   "--no-launch").stdout
    assert f"codex resume {tid}" in out

    # resume by id at B: the earlier conversation is sent, in B's project
    assert run_codex(codex, b, proj_b, "resume", tid, "What was the codeword?") == tid
    assert codewords(fake.requests[-1]) == ["KIWI-314"]
    sent = last_request_text(fake)
    assert f"<cwd>{proj_b}</cwd>" in sent and str(proj_a) not in sent
    # --last in B's project takes it (newest there), B's own thread is still there
    assert run_codex(codex, b, proj_b, "resume", "--last",
                     "Remember also the codeword MANGO-77.") == tid
    assert codewords(fake.requests[-1]) == ["KIWI-314", "MANGO-77"]
    assert run_codex(codex, b, proj_b, "resume", own, "And yours?") == own
    assert codewords(fake.requests[-1]) == ["OWNB-7"]
    # make the moved thread the newest at B again (so the continuation is what A gets)
    assert run_codex(codex, b, proj_b, "resume", tid, "Still there?") == tid

    back = tmp_path / "t2.bundle"
    commuter(monkeypatch, b, "export", tid, "-o", str(back))
    out = commuter(monkeypatch, a, "import", str(back), "--project-dir", str(proj_a),
                   "--no-launch").stdout
    assert "updated" in out or "continued" in out, out
    assert run_codex(codex, a, proj_a, "resume", "--last", "Both codewords?") == tid
    assert codewords(fake.requests[-1]) == ["KIWI-314", "MANGO-77"]
    sent = last_request_text(fake)
    assert f"<cwd>{proj_a}</cwd>" in sent and str(proj_b) not in sent
    # A's database row names A's rollout and project
    conn = sqlite3.connect(f"file:{a / '.codex' / 'state_5.sqlite'}?mode=ro", uri=True)
    try:
        rollout_path, cwd = conn.execute(
            "SELECT rollout_path, cwd FROM threads WHERE id = ?", (tid,)).fetchone()
    finally:
        conn.close()
    assert cwd == str(proj_a) and rollout_path.startswith(str(a / ".codex" / "sessions"))
