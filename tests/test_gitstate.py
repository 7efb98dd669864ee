"""Git snapshot on export and warnings on import; no repo or no git means no snapshot."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from commuter import gitstate


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.email=a@b", "-c", "user.name=a", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    _git(path, "init", "-q", "-b", "main")
    (path / "a.txt").write_text("a")
    _git(path, "add", ".")
    _git(path, "commit", "-q", "-m", "one")
    _git(path, "remote", "add", "origin", "https://example.invalid/r.git")
    return path


def test_snapshot_fields(repo: Path) -> None:
    (repo / "a.txt").write_text("changed")
    snap = gitstate.snapshot(repo)
    assert snap is not None
    assert snap["branch"] == "main" and len(snap["commit"]) == 40
    assert snap["dirty"] == ["a.txt"] and snap["remote"] == "https://example.invalid/r.git"
    assert snap["root_commit"] == snap["commit"] and snap["subdir"] == "."


def test_not_a_repo(tmp_path: Path) -> None:
    assert gitstate.snapshot(tmp_path) is None
    assert gitstate.import_warnings({"branch": "x"}, tmp_path) == []


def test_no_git_binary(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    assert gitstate.snapshot(repo) is None


def test_import_warnings(repo: Path) -> None:
    snap: dict[str, object] = {"branch": "feature", "commit": "f" * 40, "dirty": [], "remote": None}
    (repo / "a.txt").write_text("dirty")
    warnings = gitstate.import_warnings(snap, repo)
    assert any("branch feature" in w for w in warnings)
    assert any("not in this repository" in w for w in warnings)
    assert any("uncommitted" in w for w in warnings)
