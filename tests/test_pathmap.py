"""Path maps: longest prefix, segment boundaries, both directions, target resolution."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from commuter.errors import BackendError
from commuter.pathmap import PathMap, resolve_target_project, under


def test_segment_boundary() -> None:
    assert under("/home/me/proj", "/home/me/proj")
    assert under("/home/me/proj/a", "/home/me/proj/")
    assert not under("/home/me/projects", "/home/me/proj")
    m = PathMap.of([("/home/me/proj", "/x")])
    assert m.translate("/home/me/projects/a") is None
    assert m.translate("/home/me/proj/a/b") == "/x/a/b"
    assert m.translate("/home/me/proj") == "/x"


def test_longest_prefix_wins_and_both_directions() -> None:
    m = PathMap.from_config([("/home/me", "/Users/me"), ("/home/me/code", "/Users/me/src")])
    assert m.translate("/home/me/code/app") == "/Users/me/src/app"
    assert m.translate("/home/me/notes") == "/Users/me/notes"
    assert m.translate("/Users/me/src/app") == "/home/me/code/app"
    assert m.apply("/etc/passwd") == "/etc/passwd"


def test_resolution_order(tmp_path: Path) -> None:
    local = tmp_path / "local"
    local.mkdir()
    got = resolve_target_project(
        "/nowhere/app", override=local, config_maps=[], cwd=tmp_path, git=None
    )
    assert got == local
    with pytest.raises(BackendError, match="not a directory"):
        resolve_target_project(
            "/nowhere", override=tmp_path / "x", config_maps=[], cwd=tmp_path, git=None
        )
    (local / "app").mkdir()
    got = resolve_target_project(
        "/nowhere/app",
        override=None,
        config_maps=[("/nowhere", str(local))],
        cwd=tmp_path,
        git=None,
    )
    assert got == local / "app"
    with pytest.raises(BackendError, match="does not exist here"):
        resolve_target_project(
            "/nowhere/zzz",
            override=None,
            config_maps=[("/nowhere", str(local))],
            cwd=tmp_path,
            git=None,
        )
    assert (
        resolve_target_project(str(local), override=None, config_maps=[], cwd=tmp_path, git=None)
        == local
    )
    with pytest.raises(BackendError, match="path-map"):
        resolve_target_project(
            "/nowhere/app", override=None, config_maps=[], cwd=tmp_path, git=None
        )


def test_symlinked_project_dir_is_resolved(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    got = resolve_target_project(
        "/x", override=tmp_path / "link", config_maps=[], cwd=tmp_path, git=None
    )
    assert got == real


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def test_same_repo_guess_uses_cwd_repo_root_and_subdir(tmp_path: Path) -> None:
    from commuter import gitstate

    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    _git(src, "init", "-q", "-b", "main")
    (src / "sub" / "f").write_text("x")
    _git(src, "add", ".")
    _git(src, "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q", "-m", "one")
    snap = gitstate.snapshot(src / "sub")
    assert snap is not None and snap["subdir"] == "sub" and snap["branch"] == "main"
    clone = tmp_path / "clone"
    _git(tmp_path, "clone", "-q", str(src), str(clone))
    got = resolve_target_project(
        "/elsewhere/src/sub", override=None, config_maps=[], cwd=clone, git=snap
    )
    assert got == clone / "sub"


def test_a_source_that_exists_here_wins_over_a_map_to_nowhere(tmp_path: Path) -> None:
    # A bundle this machine made, imported back (a restore): the map points at the other side.
    local = tmp_path / "projects" / "app"
    local.mkdir(parents=True)
    got = resolve_target_project(
        str(local),
        override=None,
        config_maps=[(str(tmp_path / "projects"), "/elsewhere/code")],
        cwd=tmp_path,
        git=None,
    )
    assert got == local
