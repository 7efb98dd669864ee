"""A Codex thread that went on at two homes converges with the real codex CLI: the bundles cross
(imports without a terminal, as the sync daemon makes them), both homes end with the same two
thread ids, the branch that began first under the original id and the other as its fork (the
same derived id at both, recorded as a fork at both), and the real codex resumes each with
exactly its own conversation at both homes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from commuter import forks
from commuter.backends.codex import CodexBackend
from commuter.settings import Settings

from .fake_openai import FakeOpenAI, codewords
from .test_codex_moves_e2e import (  # noqa: F401  (fixtures)
    codex,
    codex_registered,
    commuter,
    fake,
    run_codex,
    setup_home,
)

pytestmark = pytest.mark.e2e


def _settings(home: Path) -> Settings:
    return Settings.from_env({"HOME": str(home), "USER": "tester"})


def _threads(home: Path, project: Path) -> set[str]:
    return {r.session_id for r in CodexBackend(_settings(home)).sessions() if r.project == project}


def test_a_diverged_codex_thread_converges_and_each_branch_resumes(
    codex: Path,  # noqa: F811
    fake: FakeOpenAI,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a = setup_home(tmp_path / "A", fake)
    b = setup_home(tmp_path / "B", fake)
    proj_a = a / "code" / "My Project.v2"
    proj_b = b / "work" / "other place.d"
    proj_a.mkdir(parents=True)
    proj_b.mkdir(parents=True)
    tid = run_codex(codex, a, proj_a, "Remember the codeword KIWI-314.")
    first = tmp_path / "t1.bundle"
    commuter(monkeypatch, a, "export", tid, "-o", str(first))
    commuter(monkeypatch, b, "import", str(first), "--project-dir", str(proj_b), "--no-launch")

    # apart: B goes on first, then A
    assert run_codex(codex, b, proj_b, "resume", tid, "Only there: PLUM-6.") == tid
    assert run_codex(codex, a, proj_a, "resume", tid, "Only here: PEAR-5.") == tid
    xa, xb = tmp_path / "xa.bundle", tmp_path / "xb.bundle"
    commuter(monkeypatch, a, "export", tid, "-o", str(xa))
    commuter(monkeypatch, b, "export", tid, "-o", str(xb))
    # the bundles cross: A's own branch moves to the fork, B makes the same fork of A's
    out_a = commuter(
        monkeypatch, a, "import", str(xb), "--project-dir", str(proj_a), "--no-launch"
    ).stdout
    out_b = commuter(
        monkeypatch, b, "import", str(xa), "--project-dir", str(proj_b), "--no-launch"
    ).stdout
    found = re.search(r"codex resume ([0-9a-f-]{36})", out_b)
    assert found and found.group(1) != tid, out_b
    fork = found.group(1)
    assert _threads(a, proj_a) == _threads(b, proj_b) == {tid, fork}, out_a
    # everything each has goes to the other once more: nothing new anywhere
    for src, dst, proj, n in ((a, b, proj_b, 1), (b, a, proj_a, 2)):
        for thread in (tid, fork):
            again = tmp_path / f"again-{n}-{thread}.bundle"
            commuter(monkeypatch, src, "export", thread, "-o", str(again))
            commuter(
                monkeypatch, dst, "import", str(again), "--project-dir", str(proj), "--no-launch"
            )
    assert _threads(a, proj_a) == _threads(b, proj_b) == {tid, fork}
    for home in (a, b):
        record = forks.lookup(_settings(home).state_dir, "codex", fork)
        assert record is not None and record.origin_id == tid, home

    # the real codex resumes each branch with exactly its own conversation, at both homes
    for home, proj in ((a, proj_a), (b, proj_b)):
        assert run_codex(codex, home, proj, "resume", tid, "Which codewords?") == tid
        assert codewords(fake.requests[-1]) == ["KIWI-314", "PLUM-6"], home
        assert run_codex(codex, home, proj, "resume", fork, "And here?") == fork
        assert codewords(fake.requests[-1]) == ["KIWI-314", "PEAR-5"], home
        assert f"<cwd>{proj}</cwd>" in str(fake.requests[-1])
