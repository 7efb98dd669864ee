"""Real claude of each pinned version: a session both machines went on with while apart
converges through push/pull (folder drops, sealed, non-interactive): both end with the same
two ids, the branch that began first under the original id and the other as its fork, each
resumable by the real claude with exactly its own conversation."""

from __future__ import annotations

from pathlib import Path

import pytest

from commuter import forks
from commuter.settings import Settings

from .fake_model import FakeModel
from .harness import check, run_claude, session_files
from .test_claude_moves_e2e import _env, _pair, commuter

pytestmark = pytest.mark.e2e


def _ask(claude_bin: Path, home: Path, cwd: Path, sid: str, base_url: str) -> str:
    out = check(run_claude(claude_bin, home, cwd, ["-p", "--resume", sid, "Which?"], base_url))
    return out.stdout.strip()


def test_a_divergence_converges_to_the_same_ids_on_both(
    tmp_path: Path, claude_bin: Path, fake_model: FakeModel
) -> None:
    home, office, shared = tmp_path / "home", tmp_path / "office", tmp_path / "Dropbox"
    proj_h, proj_o = home / "projects" / "my.app", office / "code" / "my.app"
    for d in (proj_h, proj_o, shared):
        d.mkdir(parents=True)
    url = fake_model.base_url
    check(run_claude(claude_bin, home, proj_h, ["-p", "Remember KIWI-1."], url))
    [first] = session_files(home, proj_h)
    sid = first.stem
    _pair(home, "home", office, "office")
    for h in (home, office):
        commuter(h, h, "config", "set", "transfer-dir", str(shared))
        commuter(h, h, "config", "set", "path-map", str(home / "projects"), str(office / "code"))
    commuter(home, proj_h, "push", sid)
    commuter(office, proj_o, "pull")
    # apart: home goes on first, then the office
    check(run_claude(claude_bin, home, proj_h, ["-p", "--resume", sid, "Remember HOME-2."], url))
    check(
        run_claude(claude_bin, office, proj_o, ["-p", "--resume", sid, "Remember OFFICE-3."], url)
    )
    # they meet: each sends what it has, each imports what came (no terminal: the rule)
    commuter(office, proj_o, "push", sid)
    commuter(home, proj_h, "pull")  # home's branch began first: office's becomes the fork
    commuter(home, proj_h, "push", sid)
    commuter(office, proj_o, "pull")  # office moves its own branch to the same fork id
    ids_h = {p.stem for p in session_files(home, proj_h)}
    ids_o = {p.stem for p in session_files(office, proj_o)}
    assert ids_h == ids_o and len(ids_h) == 2 and sid in ids_h
    [fork] = ids_h - {sid}
    for h, cwd in ((home, proj_h), (office, proj_o)):
        record = forks.lookup(Settings.from_env(_env(h)).state_dir, "claude", fork)
        assert record is not None and record.origin_id == sid
        assert _ask(claude_bin, h, cwd, sid, url) == "Codewords seen: KIWI-1, HOME-2."
        assert _ask(claude_bin, h, cwd, fork, url) == "Codewords seen: KIWI-1, OFFICE-3."
