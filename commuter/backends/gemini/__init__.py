"""The Gemini CLI backend: chats under ~/.gemini/tmp/<slug>/chats/ (session-formats.md §3),
exported with their subagent chats and placed where `gemini --resume` in the target project
finds them (see docs/architecture.md, "Gemini CLI")."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from commuter.backends import ExportPlan
from commuter.backends.gemini.chat import (
    ENV_VARS,
    MAX_SUBAGENTS,
    SUB_RE,
    ChatFile,
    GeminiDirs,
    chat_files,
    folders_for,
    is_session_id,
    parse_time,
    project_of,
    read_projects,
)
from commuter.errors import AmbiguousSession, SessionNotFound
from commuter.model import SessionRef

if TYPE_CHECKING:
    from commuter.acks import Received
    from commuter.backends import Check, ImportSource
    from commuter.bundle.delta import Spec
    from commuter.model import ImportOptions, ImportResult
    from commuter.settings import Settings

_PREFIX_RE = re.compile(r"^[0-9a-fA-F-]{1,36}$")
SETTINGS = ".gemini/settings.json"
PROJECT_FILES = ("GEMINI.md", SETTINGS)
PROJECT_DIRS = (".gemini/commands",)
MAX_PROJECT_FILE = 1 << 20
MAX_PROJECT_FILES = 500


class GeminiBackend:
    """Gemini CLI chats of one (possibly fake) home."""

    name: ClassVar[str] = "gemini"
    env_vars: ClassVar[tuple[str, ...]] = ENV_VARS

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dirs = GeminiDirs.of(settings.home, dict(settings.env))

    def is_installed(self) -> bool:
        return self.dirs.root.is_dir() or shutil.which("gemini") is not None

    def is_session_id(self, text: str) -> bool:
        """Gemini CLI names a chat by a UUID."""
        return is_session_id(text)

    def resume_command(self, result: ImportResult) -> str:
        return f"cd {shlex.quote(str(result.project_dir))} && gemini --resume {result.session_id}"

    def continue_command(self, result: ImportResult) -> str:
        return f"cd {shlex.quote(str(result.project_dir))} && gemini --resume latest"

    def picks_up(self, result: ImportResult) -> bool:
        """Whether `--resume latest` takes it: the newest `startTime` of its chats folder."""
        if result.transcript is None:
            return True
        folder = result.transcript.parent.parent
        newest = max(
            (cf for cf in chat_files(self.dirs, folder) if cf.chat.has_messages),
            key=lambda cf: cf.chat.start_time,
            default=None,
        )
        return newest is None or newest.chat.session_id == result.session_id

    def launch_argv(self, result: ImportResult) -> list[str] | None:
        return ["gemini", "--resume", result.session_id] if shutil.which("gemini") else None

    def arrange(self, results: Sequence[ImportResult]) -> None:
        """One pull placed several chats in a project: `--resume latest` takes the one last
        active at its source (see place.arrange)."""
        from commuter.backends.gemini.place import arrange

        arrange(self.dirs, results)

    def session_busy(self, ref: SessionRef) -> str | None:
        """Which running gemini works in `ref`'s project, or None (sync waits while one does)."""
        from commuter.backends.gemini.procs import busy_pids

        pids = busy_pids(os.path.realpath(ref.project)) if ref.project is not None else []
        return f"gemini (pid {pids[0]}) runs in its project" if pids else None

    def store_roots(self) -> list[Path]:
        """Where new chats appear (the sync watcher polls these)."""
        return [self.dirs.tmp]

    def doctor_checks(self) -> list[Check]:
        return [_cli(), self._chats_check()]

    def _chats_check(self) -> Check:
        if not self.dirs.root.is_dir():
            return ("gemini chats", False, f"{self.dirs.root} not found")
        count = len(self._unique(list(chat_files(self.dirs))))
        return ("gemini chats", True, f"{count} in {self.dirs.tmp}")

    def _ref(self, cf: ChatFile, projects: dict[str, str]) -> SessionRef:
        project = project_of(self.dirs, cf, projects)
        when = parse_time(cf.chat.last_updated)
        if when is None:
            when = datetime.fromtimestamp(cf.path.stat().st_mtime, UTC)
        return SessionRef(
            backend=self.name,
            session_id=str(cf.chat.session_id),
            project=Path(project) if project else None,
            updated_at=when,
            path=cf.path,
            size=cf.path.stat().st_size,
            first_prompt=cf.chat.first_prompt(),
            has_messages=cf.chat.has_messages,
        )

    def _unique(self, files: list[ChatFile]) -> list[ChatFile]:
        """One file per session id: the one with messages and the latest update."""
        best: dict[str, ChatFile] = {}
        for cf in files:
            sid = str(cf.chat.session_id)
            old = best.get(sid)
            if old is None or (cf.chat.has_messages, cf.chat.last_updated) > (
                old.chat.has_messages,
                old.chat.last_updated,
            ):
                best[sid] = cf
        return list(best.values())

    def sessions(self) -> Iterator[SessionRef]:
        """Every main chat, newest first (no ~/.gemini: none)."""
        projects = read_projects(self.dirs)
        refs = [self._ref(cf, projects) for cf in self._unique(list(chat_files(self.dirs)))]
        yield from sorted(refs, key=lambda r: r.updated_at, reverse=True)

    def message_count(self, ref: SessionRef) -> int:
        """User and gemini messages of the chat (for `list`; it caches the count)."""
        from commuter.backends.gemini.chat import read_chat

        chat = read_chat(ref.path) if ref.path is not None else None
        return (
            sum(chat.messages[m].get("type") in ("user", "gemini") for m in chat.ids) if chat else 0
        )

    def find(self, session: str | None, cwd: Path) -> SessionRef:
        projects = read_projects(self.dirs)
        if session is None:
            project = os.path.realpath(cwd)
            files = [
                cf
                for folder in folders_for(self.dirs, project)
                for cf in chat_files(self.dirs, folder)
                if cf.chat.has_messages
            ]
            if not files:
                raise SessionNotFound(f"no Gemini CLI chat for {project}")
            return self._ref(max(files, key=lambda cf: cf.chat.last_updated), projects)
        prefix = session.strip().lower()
        if not _PREFIX_RE.match(prefix):
            raise SessionNotFound(f"session {session!r} not found")
        matches = [
            cf
            for cf in self._unique(list(chat_files(self.dirs)))
            if str(cf.chat.session_id).startswith(prefix)
        ]
        if not matches:
            raise SessionNotFound(f"session {session} not found in {self.dirs.tmp}")
        if len(matches) > 1:
            shown = ", ".join(sorted(str(cf.chat.session_id)[:12] for cf in matches)[:5])
            raise AmbiguousSession(
                f"{session} matches {len(matches)} sessions ({shown}); give more characters"
            )
        return self._ref(matches[0], projects)

    def collect(self, ref: SessionRef) -> ExportPlan:
        """The chat file and its subagent chats (chats/<sid>/*.jsonl)."""
        if ref.path is None:
            raise SessionNotFound(f"session {ref.session_id} has no chat file")
        sid = ref.session_id
        path = ref.path
        from commuter.backends.gemini.chat import read_chat

        chat = read_chat(path)
        project = str(ref.project) if ref.project else chat.workspace() or ""
        if not project:
            raise SessionNotFound(f"session {sid}: its project folder is not known here")
        members: list[tuple[str, Path | bytes]] = [(f"session/{sid}{path.suffix}", path)]
        sub_dir = path.parent / sid
        if sub_dir.is_dir() and not sub_dir.is_symlink():
            for name in sorted(os.listdir(sub_dir))[:MAX_SUBAGENTS]:
                sub = sub_dir / name
                if SUB_RE.match(name) and sub.is_file() and not sub.is_symlink():
                    members.append((f"session/{sid}/{name}", sub))
        members += _project_members(Path(project), self.dirs.root)
        folder = path.parent.parent
        meta = {
            "source_gemini_dir": str(self.dirs.root),
            "source_temp_dir": str(folder),
            "source_slug": folder.name,
            "source_home": str(self.settings.home),
            "first_prompt": chat.first_prompt(),
            "last_activity": chat.last_updated,
            "start_time": chat.start_time,
        }
        count = sum(1 for mid in chat.ids if chat.messages[mid].get("type") in ("user", "gemini"))
        from commuter import gitstate

        git = gitstate.snapshot(Path(project)) if Path(project).is_dir() else None
        return ExportPlan(self.name, sid, project, count, git, meta, tuple(members))

    def place(self, source: ImportSource, options: ImportOptions) -> ImportResult:
        from commuter.backends.gemini.place import place

        return place(self.settings, self.dirs, source, options)

    def place_delta(
        self, source: ImportSource, spec: Spec, base: Received, options: ImportOptions
    ) -> ImportResult:
        """A delta bundle on what the last import from its sender left (see delta.py)."""
        from commuter.backends.gemini.delta import place_delta

        return place_delta(self.settings, self.dirs, source, spec, base, options)


def _project_members(project: Path, own: Path) -> list[tuple[str, Path | bytes]]:
    """Project config gemini reads: GEMINI.md, .gemini/settings.json, .gemini/commands/**
    (regular files up to 1 MiB, UTF-8 names, at most 500); none from gemini's own dir (a chat
    of ~ itself: its .gemini/ is the user's settings)."""
    if not project.is_dir() or os.path.realpath(project / ".gemini") == os.path.realpath(own):
        return []
    from commuter.placing import project_members

    return project_members(
        project, PROJECT_FILES, PROJECT_DIRS, max_size=MAX_PROJECT_FILE, max_count=MAX_PROJECT_FILES
    )


def _cli() -> Check:
    found = shutil.which("gemini")
    if found is None:
        return ("gemini cli", False, "gemini not on PATH")
    try:
        out = subprocess.run(
            [found, "--version"], capture_output=True, text=True, timeout=20, check=False
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        out = ""
    return ("gemini cli", True, f"{found} {out}".strip())
