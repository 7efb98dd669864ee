"""A cheap git snapshot of a project (branch, commit, dirty files, remote, root commit)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

_TIMEOUT = 5.0


def _git(cwd: Path, *args: str) -> str | None:
    exe = shutil.which("git")
    if exe is None:
        return None
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env["GIT_OPTIONAL_LOCKS"] = "0"
    try:
        proc = subprocess.run(
            [exe, *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=_TIMEOUT,
            env=env,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.rstrip() if proc.returncode == 0 else None


def repo_root(path: Path) -> Path | None:
    """The top of the git work tree holding `path`, or None."""
    if not path.is_dir():
        return None
    out = _git(path, "rev-parse", "--show-toplevel")
    return Path(os.path.realpath(out)) if out else None


def snapshot(project: Path) -> dict[str, Any] | None:
    """Branch, commit, dirty files, remote URL, root commit and subdir; None if not a repo."""
    root = repo_root(project)
    if root is None:
        return None
    commit = _git(root, "rev-parse", "HEAD")
    branch = _git(root, "rev-parse", "--abbrev-ref", "HEAD")
    status = _git(root, "status", "--porcelain", "--untracked-files=no") or ""
    remote = _git(root, "config", "--get", "remote.origin.url")
    roots = _git(root, "rev-list", "--max-parents=0", "HEAD") or ""
    try:
        subdir = Path(os.path.realpath(project)).relative_to(root).as_posix()
    except ValueError:
        subdir = "."
    return {
        "branch": branch,
        "commit": commit,
        "dirty": [line[3:] for line in status.splitlines() if len(line) > 3][:200],
        "remote": remote or None,
        "root_commit": roots.splitlines()[0] if roots else None,
        "subdir": subdir,
    }


def same_repo_target(git: dict[str, Any], cwd: Path) -> Path | None:
    """If `cwd` is in the same repository as the snapshot, the matching local project dir."""
    root = repo_root(cwd)
    if root is None:
        return None
    local = snapshot(root) or {}
    same_remote = bool(git.get("remote")) and git.get("remote") == local.get("remote")
    same_root = bool(git.get("root_commit")) and git.get("root_commit") == local.get("root_commit")
    if not (same_remote or same_root):
        return None
    subdir = str(git.get("subdir") or ".")
    if subdir.startswith("/") or ".." in Path(subdir).parts:
        subdir = "."
    target = root / subdir
    return target if target.is_dir() else root


def import_warnings(git: dict[str, Any] | None, project: Path) -> list[str]:
    """Differences between the source's git state and the local one, as warning lines."""
    if not git:
        return []
    local = snapshot(project)
    if local is None:
        return []
    warnings: list[str] = []
    if git.get("branch") and local.get("branch") and git["branch"] != local["branch"]:
        warnings.append(f"source was on branch {git['branch']}, here it is {local['branch']}")
    commit = git.get("commit")
    if (
        isinstance(commit, str)
        and commit != local.get("commit")
        and _git(project, "cat-file", "-e", f"{commit}^{{commit}}") is None
    ):
        warnings.append(f"source commit {commit[:12]} is not in this repository (git pull?)")
    if local.get("dirty"):
        warnings.append(f"local work tree has {len(local['dirty'])} uncommitted change(s)")
    return warnings
