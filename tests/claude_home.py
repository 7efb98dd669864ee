"""Test helper: real Claude Code sessions (tests/data/claude*) placed into a fake home."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from commuter.backends.claude.paths import claude_project_folder

if TYPE_CHECKING:
    from commuter.model import ImportOptions, ImportResult
    from commuter.settings import Settings

DATA = Path(__file__).parent / "data" / "claude" / "home"
FIXTURE_HOME = "/tmp/rcfix/claude/home"

PLAIN = "fcf6708a-b0f9-42e2-b9f0-c72c4c301a99"
TOOLS = "9f4898fa-a375-40c5-b92d-3ec70555dff2"
SUBAGENT = "ffe4c108-48f6-4e30-a20a-77e70d03c4fd"
RESUMED = "ec4142a7-1d15-48da-814c-4f5b8c8c925f"
PLAN = "e50f4a10-2ab8-45b3-b7b1-e40bfce03a79"
DOT_SPACE = "dcf1d337-087d-48a6-b1b7-d6d64b571939"
INTERACTIVE = "a5dd9530-eeb6-4057-a6c1-03372ac353e7"
UNICODE = "e24202a2-58e0-498f-910a-77e7ab7f29ca"
LONG = "e333d12f-c0d1-47d8-8f70-36b270b551ca"


LONG_REL = "projects/" + "/".join(f"segment_with.dots-and_underscores{i:02d}" for i in range(7))
PROJECTS = (
    "projects/my.app",
    "projects/My Project.v2",
    "projects/tui_app",
    "projects/café_ünï 日本",
    LONG_REL,
)
_PROJECT_OF = {
    "dot-space": "projects/My Project.v2",
    "interactive": "projects/tui_app",
    "unicode": "projects/café_ünï 日本",
    "long-path": LONG_REL,
}


@dataclass(frozen=True)
class Fixture:
    """One set of real sessions: the client that wrote them, where, and their ids by name."""

    version: str
    data: Path
    home: str  # the HOME the client ran with; every path inside starts with it
    sessions: dict[str, str]  # MANIFEST.md section name -> session id
    backed_up: tuple[str, ...]  # files (relative to HOME) with file-history backups

    def project(self, name: str) -> str:
        """The project (relative to HOME) of the session `name`."""
        return _PROJECT_OF.get(name, "projects/my.app")


V197 = Fixture(
    "2.1.197",
    DATA,
    FIXTURE_HOME,
    {
        "plain": PLAIN,
        "tools": TOOLS,
        "subagent": SUBAGENT,
        "resumed": RESUMED,
        "plan": PLAN,
        "dot-space": DOT_SPACE,
        "interactive": INTERACTIVE,
        "unicode": UNICODE,
        "long-path": LONG,
    },
    ("projects/my.app/a.txt",),
)
V332 = Fixture(
    "2.1.332",
    Path(__file__).parent / "data" / "claude-2.1.332" / "home",
    "/tmp/rcfix332/claude/home",
    {
        "plain": "068f6110-501d-443d-aac7-33214e923d6b",
        "tools": "4ddad64f-3589-41bd-b655-e6ac6737249e",
        "subagent": "2774dc16-710c-4b25-b9fa-6af356585479",
        "resumed": "c36a5525-3cae-4f17-a05e-5d3e3470b946",
        "plan": "c0d4c97d-7cf6-432b-bc51-ecabaacfab77",
        "dot-space": "db184e77-007a-4e1d-b567-4a16f49bf382",
        "interactive": "9f5fdef2-7242-446a-aa1a-818b60fa871e",
        "unicode": "44ffd83d-2934-476f-a35b-c701d2001de9",
        "long-path": "81be7c3e-4d37-463f-b719-0ba161925246",
    },
    ("projects/my.app/a.txt",),
)
FIXTURES = (V197, V332)


def backup_name(path: str, version: int = 1) -> str:
    return f"{hashlib.sha256(path.encode()).hexdigest()[:16]}@v{version}"


def install(home: Path, fixture: Fixture = V197) -> Path:
    """Copy the fixture home into `home`, rebasing every path from the fixture's HOME to it.

    Rewrites paths in all text files, renames project folders and file-history backups the way
    Claude would have named them had it run there. Returns `home`.
    """
    home.mkdir(parents=True, exist_ok=True)
    shutil.copytree(fixture.data, home, dirs_exist_ok=True)
    for rel in PROJECTS:
        (home / rel).mkdir(parents=True, exist_ok=True)
    new = str(home)
    renames = {
        backup_name(f"{fixture.home}/{rel}"): backup_name(f"{new}/{rel}")
        for rel in fixture.backed_up
    }
    projects = home / ".claude" / "projects"
    for path in sorted(home.rglob("*")):
        if path.is_file() and path.suffix in (".jsonl", ".json", ".md"):
            text = path.read_text(encoding="utf-8").replace(fixture.home, new)
            for old, repl in renames.items():
                text = text.replace(old, repl)
            path.write_text(text, encoding="utf-8")
    for folder in list(projects.iterdir()):
        old_project = _project_of_folder(folder.name, fixture.home)
        if old_project is None:
            continue
        target = projects / claude_project_folder(old_project.replace(fixture.home, new, 1))
        if target != folder:
            folder.rename(target)
    # Paths into a project folder (persisted output, memory) name the old folder: fix them.
    folders = [
        (claude_project_folder(f"{fixture.home}/{rel}"), claude_project_folder(f"{new}/{rel}"))
        for rel in PROJECTS
    ]
    for path in projects.rglob("*.jsonl"):
        text = path.read_text(encoding="utf-8")
        for old_folder, new_folder in folders:
            text = text.replace(
                f"{new}/.claude/projects/{old_folder}/", f"{new}/.claude/projects/{new_folder}/"
            )
        path.write_text(text, encoding="utf-8")
    for old, repl in renames.items():
        for backup in (home / ".claude" / "file-history").rglob(old):
            backup.rename(backup.with_name(repl))
    for path in home.rglob("*"):
        if path.is_file() and path.suffix == ".jsonl":
            os.chmod(path, 0o600)
    return home


def _project_of_folder(folder: str, fixture_home: str = FIXTURE_HOME) -> str | None:
    for rel in PROJECTS:
        if claude_project_folder(f"{fixture_home}/{rel}") == folder:
            return f"{fixture_home}/{rel}"
    return None


def transcript(home: Path, project: Path | str, sid: str) -> Path:
    return home / ".claude" / "projects" / claude_project_folder(str(project)) / f"{sid}.jsonl"


class DirSink:
    """A MemberSink that writes members into a folder (stands in for a bundle round trip)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.names: list[str] = []

    def add_file(self, name: str, path: Path, *, observe: Any = None) -> None:
        data = path.read_bytes()
        if observe is not None:
            observe(data)
        self.add_bytes(name, data)

    def add_bytes(self, name: str, data: bytes) -> None:
        dest = self.root / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        self.names.append(name)


def carry(
    settings_a: Settings,
    settings_b: Settings,
    staging: Path,
    *,
    session: str | None,
    cwd: Path,
    options: ImportOptions | None = None,
) -> ImportResult:
    """Export a session at A into a folder and place it at B (no bundle file involved)."""
    from commuter.backends import ImportSource
    from commuter.backends.claude import ClaudeBackend
    from commuter.model import ImportOptions

    a = ClaudeBackend(settings_a)
    plan = a.collect(a.find(session, cwd))
    if staging.exists():
        shutil.rmtree(staging)
    sink = DirSink(staging)
    plan.write_members(sink)
    source = ImportSource(
        session_id=plan.session_id,
        project_dir=plan.project_dir,
        root=staging,
        members=tuple(sink.names),
        git=plan.git,
        meta=plan.meta,
        origin="tester@a",
    )
    b = ClaudeBackend(settings_b)
    return b.place(source, options or ImportOptions(assume_yes=True))


def deep_line(project: Path, depth: int) -> str:
    """A tool-result line in a key order that makes the rewriter parse it, nested `depth` deep."""
    block = {
        "content": f"File created successfully at: {project}/x.txt",
        "tool_use_id": "t1",
        "type": "tool_result",
    }
    entry = {
        "type": "user",
        "message": {"role": "user", "content": [block]},
        "sessionId": TOOLS,
        "uuid": "00000000-0000-4000-8000-00000000dee9",
    }
    text = json.dumps(entry, separators=(",", ":"))
    return text[:-1] + ',"deep":' + "[" * depth + "]" * depth + "}"
