"""The Codex CLI backend: rollouts under `$CODEX_HOME/sessions/YYYY/MM/DD/` and their rows in
codex's thread database (session-formats.md §2)."""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from commuter.backends import Check, ExportPlan, ImportSource
from commuter.backends.codex import db
from commuter.backends.codex.paths import (
    UUID_RE,
    archived_rollouts,
    codex_home,
    count_messages,
    read_meta,
    rollouts,
    row_path,
)
from commuter.backends.codex.place import place
from commuter.errors import AmbiguousSession, SessionNotFound
from commuter.model import ImportOptions, ImportResult, SessionRef
from commuter.settings import Settings

if TYPE_CHECKING:
    from commuter.acks import Received
    from commuter.bundle.delta import Spec


class CodexBackend:
    name: ClassVar[str] = "codex"
    env_vars: ClassVar[tuple[str, ...]] = ("CODEX_HOME",)

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = codex_home(settings)

    # --- Backend ----------------------------------------------------------------------------

    def is_installed(self) -> bool:
        return self.home.is_dir() or shutil.which("codex") is not None

    def _threads(self) -> Iterator[tuple[str, Path, dict[str, Any], dict[str, Any] | None]]:
        rows = db.read_threads(self.home)
        files = rollouts(self.home)
        for tid, path in files.items():
            row = rows.get(tid)
            path = row_path(row) or path
            meta = read_meta(path)
            if meta is None:
                continue
            yield tid, path, meta, row

    def sessions(self) -> Iterator[SessionRef]:
        refs: list[SessionRef] = []
        for tid, path, meta, row in self._threads():
            if "subagent" in (meta.get("thread_source"), (row or {}).get("thread_source")):
                continue
            try:
                st = path.stat()
            except OSError:
                continue
            ms = (row or {}).get("updated_at_ms")
            when = datetime.fromtimestamp(ms / 1000 if isinstance(ms, int) else st.st_mtime, UTC)
            cwd = (row or {}).get("cwd") or meta.get("cwd")
            prompt = (row or {}).get("first_user_message") or (row or {}).get("title") or None
            refs.append(
                SessionRef(
                    self.name,
                    tid,
                    Path(cwd) if isinstance(cwd, str) else None,
                    when,
                    path,
                    st.st_size,
                    prompt,
                )
            )
        refs.sort(key=lambda r: r.updated_at, reverse=True)
        yield from refs

    def find(self, session: str | None, cwd: Path) -> SessionRef:
        refs = list(self.sessions())
        if session is None:
            here = os.path.realpath(cwd)
            mine = [
                r for r in refs if r.project is not None and os.path.realpath(r.project) == here
            ]
            if not mine:
                raise SessionNotFound(f"no codex session in {cwd}")
            return mine[0]
        exact = [r for r in refs if r.session_id == session]
        if exact:
            return exact[0]
        hits = [r for r in refs if r.session_id.startswith(session)]
        if not hits:
            stowed = [t for t in archived_rollouts(self.home) if t.startswith(session)]
            if len(stowed) == 1:
                raise SessionNotFound(
                    f"codex session {stowed[0]} is archived; `codex unarchive {stowed[0]}` "
                    "first (an archived thread does not resume)"
                )
            raise SessionNotFound(f"codex session {session} not found")
        if len(hits) > 1:
            raise AmbiguousSession(
                f"{session} matches {len(hits)} codex sessions; give more characters"
            )
        return hits[0]

    def collect(self, ref: SessionRef) -> ExportPlan:
        assert ref.path is not None
        rows = db.read_threads(self.home)
        files = rollouts(self.home)
        edges = db.read_edges(self.home)
        threads: dict[str, Any] = {}
        members: list[tuple[str, Path | bytes]] = [(f"session/{ref.session_id}.jsonl", ref.path)]
        names = {ref.session_id: ref.path.name}
        # Subagent threads, and theirs (a spawn tree), each with its own rollout.
        todo, seen, kept = [ref.session_id], {ref.session_id}, []
        while todo:
            parent = todo.pop()
            for p, child, status in edges:
                if p != parent or child in seen or not UUID_RE.fullmatch(child):
                    continue
                seen.add(child)
                row = rows.get(child)
                path = row_path(row) or files.get(child)
                if path is None or not path.is_file():
                    continue
                members.append((f"subagents/{child}.jsonl", path))
                names[child] = path.name
                kept.append([p, child, status])
                todo.append(child)
        for tid in names:
            if tid in rows:
                threads[tid] = {k: v for k, v in rows[tid].items() if k in db.COLUMNS}
        project = str(ref.project) if ref.project else ""
        git = None
        if project and Path(project).is_dir():
            from commuter import gitstate

            git = gitstate.snapshot(Path(project))
        meta: dict[str, Any] = {
            "source_codex_home": str(self.home),
            "source_home": str(self.settings.home),
            "first_prompt": ref.first_prompt,
            "last_activity": ref.updated_at.isoformat(),
            "codex_threads": threads,
            "codex_edges": kept,
            "codex_rollout_names": names,
        }
        return ExportPlan(
            self.name, ref.session_id, project, count_messages(ref.path), git, meta, tuple(members)
        )

    def place(self, source: ImportSource, options: ImportOptions) -> ImportResult:
        return place(self.home, self.settings, source, options)

    def place_delta(
        self, source: ImportSource, spec: Spec, base: Received, options: ImportOptions
    ) -> ImportResult:
        """Place a delta bundle on what the last import from its sender left (codex/delta.py)."""
        from commuter.backends.codex.delta import place_delta

        return place_delta(self.home, self.settings, source, spec, base, options)

    # --- BackendExtras ----------------------------------------------------------------------

    def resume_command(self, result: ImportResult) -> str:
        return f"cd {shlex.quote(str(result.project_dir))} && codex resume {result.session_id}"

    def continue_command(self, result: ImportResult) -> str | None:
        # The interactive `codex resume --last` offers only interactive threads.
        command = (
            "codex exec resume --last"
            if result.extra.get("source") == "exec"
            else "codex resume --last"
        )
        return f"cd {shlex.quote(str(result.project_dir))} && {command}"

    def picks_up(self, result: ImportResult) -> bool:
        return db.newest_in(self.home, str(result.project_dir)) == result.session_id

    def launch_argv(self, result: ImportResult) -> list[str] | None:
        return ["codex", "resume", result.session_id]

    def is_session_id(self, text: str) -> bool:
        return UUID_RE.fullmatch(text) is not None

    def session_busy(self, ref: SessionRef) -> str | None:
        """Which running codex has `ref`'s rollout open, or None (sync waits while one does)."""
        from commuter.backends.codex.procs import busy_pids

        pids = busy_pids([ref.path]) if ref.path is not None else []
        return f"codex (pid {pids[0]}) has it open" if pids else None

    def store_roots(self) -> list[Path]:
        """Where new rollouts appear (the sync watcher polls these)."""
        return [self.home / "sessions"]

    def doctor_checks(self) -> list[Check]:
        binary = shutil.which("codex")
        checks: list[Check] = [("codex CLI", binary is not None, binary or "not on PATH")]
        if self.home.is_dir():
            n = sum(1 for _ in self.sessions())
            dbs = "with" if (self.home / db.STATE_DB).is_file() else "without"
            checks.append(("codex sessions", True, f"{n} in {self.home} ({dbs} thread database)"))
        else:
            checks.append(("codex sessions", False, f"{self.home} not found"))
        return checks
