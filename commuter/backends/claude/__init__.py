"""The Claude Code backend: find sessions under ~/.claude and gather everything one consists of,
and what the CLI needs to know about claude (resume/continue lines, doctor checks, ids)."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shlex
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from commuter.backends import ExportPlan, ImportSource
from commuter.backends.claude import heads
from commuter.backends.claude.heads import HEADS_FILE, HeadCache
from commuter.backends.claude.paths import (
    CWD_RE,
    ENV_VARS,
    ClaudeDirs,
    TranscriptFile,
    TranscriptHead,
    claude_project_folder,
    is_safe_name,
    is_safe_slug,
    is_session_id,
    iter_transcripts,
    project_folders_for,
    read_entrypoint,
    read_head,
    real_project_path,
)
from commuter.errors import AmbiguousSession, SessionNotFound
from commuter.model import SessionRef

if TYPE_CHECKING:
    from commuter.acks import Received
    from commuter.backends import Check
    from commuter.backends.claude.stream import TranscriptRoute
    from commuter.bundle.delta import Spec
    from commuter.model import ImportOptions, ImportResult, Manifest
    from commuter.settings import Settings

PROJECT_FILES = (".claude/settings.json", "CLAUDE.md")
PROJECT_DIRS = (".claude/commands",)
MAX_PROJECT_FILE = 1 << 20
MAX_PROJECT_FILES = 500
# A session's own folders beside its transcript (workflows/ and remote-agents/ are 2.1.332's;
# subagents/ may nest: subagents/workflows/<run>/agent-<id>.jsonl).
SESSION_DIRS = ("subagents", "tool-results", "workflows", "remote-agents")
MAX_SESSION_DEPTH = 6
MAX_SESSION_FILES = 5000
MAX_MEMORY_DEPTH = 3
_SLUG_RE = re.compile(rb'"slug":"([A-Za-z0-9_-]{1,200})"')
_PREFIX_RE = re.compile(r"^[0-9a-fA-F-]{1,36}$")


# Imports that wrote a transcript `claude --continue` may pick (the newest mtime of a folder).
_WRITTEN = ("created", "updated", "forked", "replaced")


class ClaudeBackend:
    """Claude Code sessions of one (possibly fake) home."""

    name: ClassVar[str] = "claude"
    env_vars: ClassVar[tuple[str, ...]] = ENV_VARS

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dirs = ClaudeDirs.of(settings)

    def is_installed(self) -> bool:
        """True if ~/.claude exists or `claude` is on PATH."""
        return self.dirs.root.is_dir() or shutil.which("claude") is not None

    def is_session_id(self, text: str) -> bool:
        """Claude Code names a session by a UUID."""
        return is_session_id(text)

    def resume_command(self, result: ImportResult) -> str:
        """`cd DIR && claude --resume ID`."""
        return f"cd {shlex.quote(str(result.project_dir))} && claude --resume {result.session_id}"

    def continue_command(self, result: ImportResult) -> str:
        """`claude --continue`; for a session made by `claude -p`, the form that finds it."""
        where = f"cd {shlex.quote(str(result.project_dir))} && "
        if result.extra.get("print_mode"):
            return where + "claude -p --continue   (made by claude -p: plain --continue skips it)"
        return where + "claude --continue"

    def picks_up(self, result: ImportResult) -> bool:
        """Whether `claude --continue` in the project takes this transcript (the newest there).
        False for an older session of a pull that brought several: only `resume` finds it."""
        transcript = result.transcript
        if transcript is None:
            return True
        try:
            mine = transcript.stat().st_mtime_ns
            return all(p.stat().st_mtime_ns <= mine for p in transcript.parent.glob("*.jsonl"))
        except OSError:
            return True

    def launch_argv(self, result: ImportResult) -> list[str] | None:
        """`claude --resume ID` when claude is on PATH."""
        return ["claude", "--resume", result.session_id] if shutil.which("claude") else None

    def session_busy(self, ref: SessionRef) -> str | None:
        """Which running claude holds `ref`, or None (sync waits while one does)."""
        from commuter.backends.claude.procs import session_busy

        if ref.path is None:
            return None
        return session_busy(ref.path, ref.session_id, self.dirs.sessions_dir)

    def store_roots(self) -> list[Path]:
        """Where new sessions appear (the sync watcher polls these)."""
        return [self.dirs.projects]

    def doctor_checks(self) -> list[Check]:
        """The claude CLI (and its version), and the transcripts under the projects dir."""
        return [_claude_cli(), _transcripts(self.dirs)]

    def arrange(self, results: Sequence[ImportResult]) -> None:
        """`claude --continue` takes the newest transcript mtime of a project folder: where one
        pull wrote several, their mtimes are set a millisecond apart in the order they were last
        active at their source, the newest now."""
        groups: dict[Path, list[tuple[float, Path]]] = {}
        for res in results:
            if res.action in _WRITTEN and res.transcript is not None:
                entry = (res.last_activity or 0.0, res.transcript)
                groups.setdefault(res.transcript.parent, []).append(entry)
        now = time.time()
        for entries in groups.values():
            if len(entries) < 2:
                continue
            entries.sort(key=lambda entry: entry[0])  # stable: equal times keep import order
            for age, (_when, transcript) in enumerate(reversed(entries)):
                with contextlib.suppress(OSError):
                    os.utime(transcript, (now - age / 1000, now - age / 1000))

    def _ref(self, tf: TranscriptFile, head: TranscriptHead | None = None) -> SessionRef:
        head = head or read_head(tf.path)
        return SessionRef(
            backend=self.name,
            session_id=tf.session_id,
            project=_project_path(head.cwd) if head.cwd else None,
            updated_at=tf.updated_at,
            path=tf.path,
            size=tf.size,
            first_prompt=head.first_prompt,
            has_messages=head.has_messages and tf.size > 0,
        )

    def message_count(self, ref: SessionRef) -> int:
        """User and assistant entries of the transcript (for `list`; it caches the count)."""
        return _scan(ref.path)["messages"] if ref.path is not None else 0

    def sessions(self) -> Iterator[SessionRef]:
        """Every session, newest first (reads only the head of each transcript, and only of
        those whose size or mtime changed since the heads cache was written)."""
        cache = HeadCache(self.settings.cache_dir / HEADS_FILE, str(self.dirs.projects))
        found: list[tuple[float, SessionRef]] = []
        projects: dict[str, Path] = {}
        try:
            folders = [e for e in os.scandir(self.dirs.projects) if e.is_dir(follow_symlinks=False)]
        except OSError:
            folders = []
        for folder in folders:  # a loop for 10,000 sessions: kept free of calls it can spare
            old, new = cache.folder(folder.name)
            try:
                entries = list(os.scandir(folder.path))
            except OSError:
                continue
            child = _child_maker(Path(folder.path))
            for entry in entries:
                name = entry.name
                if not name.endswith(".jsonl") or not is_session_id(name[:-6]):
                    continue
                try:
                    st = entry.stat()
                except OSError:
                    continue
                size, mtime = st.st_size, st.st_mtime
                path = child(name)
                known = heads.hit(old.get(name), size, mtime)
                if known is None:
                    head = read_head(path)
                    known = (size, mtime, head.cwd, head.first_prompt, head.has_messages)
                    cache.changed = True
                new[name] = known
                cwd = known[2]
                project = None
                if cwd:
                    project = projects.get(cwd)
                    if project is None:
                        project = projects[cwd] = Path(cwd)
                ref = SessionRef(
                    self.name,
                    name[:-6],
                    project,
                    datetime.fromtimestamp(mtime, UTC),
                    path,
                    size,
                    known[3],
                    known[4] and size > 0,
                )
                found.append((mtime, ref))
        cache.save()
        found.sort(key=lambda item: item[0], reverse=True)
        for _mtime, ref in found:
            yield ref

    def find(self, session: str | None, cwd: Path) -> SessionRef:
        """A session by id or unique prefix; None = newest non-empty one of `cwd`'s project."""
        if session is None:
            project = real_project_path(cwd)
            files = [
                tf
                for folder in project_folders_for(self.dirs, project)
                for tf in iter_transcripts(self.dirs, folder)
                if tf.size > 0
            ]
            if not files:
                raise SessionNotFound(f"no Claude Code session for {project}")
            return self._ref(max(files, key=lambda t: t.mtime))
        prefix = session.strip().lower()
        if not _PREFIX_RE.match(prefix):
            raise SessionNotFound(f"session {session!r} not found")
        matches: dict[str, TranscriptFile] = {}
        for tf in iter_transcripts(self.dirs):
            if tf.session_id.lower().startswith(prefix):
                old = matches.get(tf.session_id)
                if old is None or tf.mtime > old.mtime:
                    matches[tf.session_id] = tf
        if not matches:
            raise SessionNotFound(f"session {session} not found in {self.dirs.projects}")
        if len(matches) > 1:
            shown = ", ".join(sorted(s[:12] for s in matches)[:5])
            raise AmbiguousSession(
                f"{session} matches {len(matches)} sessions ({shown}); give more characters"
            )
        return self._ref(next(iter(matches.values())))

    def collect(self, ref: SessionRef) -> ExportPlan:
        """The transcript, its side files, file history, tasks, plan, history lines, config."""
        if ref.path is None:
            raise SessionNotFound(f"session {ref.session_id} has no transcript")
        sid = ref.session_id
        transcript = ref.path
        head = read_head(transcript)
        cwds = [c for c in (head.cwd, _tail_cwd(transcript)) if c]
        project = _project_of(cwds, transcript.parent.name) or (
            str(ref.project) if ref.project else str(transcript.parent)
        )
        member = f"session/{sid}.jsonl"
        members: list[tuple[str, Path | bytes]] = [(member, transcript)]
        session_dir = transcript.parent / sid
        for sub in SESSION_DIRS:
            for rel, path in _tree(session_dir / sub, MAX_SESSION_DEPTH, MAX_SESSION_FILES):
                members.append((f"session/{sid}/{sub}/{rel}", path))
        backups = _files(self.dirs.file_history(sid))
        members += [(f"file-history/{path.name}", path) for path in backups]
        for path in _files(self.dirs.tasks(sid)):
            if path.suffix == ".json":
                members.append((f"tasks/{path.name}", path))
        history = _history_lines(self.dirs.history, sid)
        if history:
            members.append(("history.jsonl", history))
        members += _project_members(Path(project))
        # The project's auto-memory (Claude Code 2.1.x): shared by every session of the folder.
        memory = [
            (rel, path)
            for rel, path in _tree(
                self.dirs.memory(transcript.parent), MAX_MEMORY_DEPTH, MAX_PROJECT_FILES
            )
            if rel.endswith(".md") and path.stat().st_size <= MAX_PROJECT_FILE
        ]
        members += [(f"memory/{rel}", path) for rel, path in memory]
        git = None
        if Path(project).is_dir():
            from commuter import gitstate

            git = gitstate.snapshot(Path(project))
        meta: dict[str, Any] = {
            "source_claude_dir": str(self.dirs.root),
            "source_home": str(self.settings.home),
            "source_project_folder": transcript.parent.name,
            "first_prompt": (head.first_prompt or "")[:200] or None,
            "last_activity": datetime.fromtimestamp(transcript.stat().st_mtime, UTC).isoformat(),
            "entrypoint": read_entrypoint(transcript),
        }
        # Message count, plan slug and file-history sources come from the pass that packs the
        # transcript (TranscriptScan): the file is read once; they travel in the digest.
        return ExportPlan(
            backend=self.name,
            session_id=sid,
            project_dir=project,
            message_count=0,
            git=git,
            meta=meta,
            members=tuple(members),
            scan=TranscriptScan(member, project, [p.name for p in backups], self.dirs),
        )

    def stream_route(self, manifest: Manifest, options: ImportOptions) -> TranscriptRoute | None:
        """Where the transcript goes while the bundle is read (one pass), or None."""
        from commuter.backends.claude.stream import start

        return start(self.settings, manifest, options)

    def place(self, source: ImportSource, options: ImportOptions) -> ImportResult:
        """Write an unpacked session where `claude --continue` in the target project finds it."""
        from commuter.backends.claude.stream import TranscriptRoute, place_streamed

        if isinstance(source.streamed, TranscriptRoute):
            return place_streamed(self.settings, source, options, source.streamed)
        from commuter.backends.claude.place import place

        return place(self.settings, source, options)

    def place_delta(
        self, source: ImportSource, spec: Spec, base: Received, options: ImportOptions
    ) -> ImportResult:
        """Place a delta bundle on what the last import from its sender left (claude/delta.py)."""
        from commuter.backends.claude.delta import place_delta

        return place_delta(self.settings, source, spec, base, options)


@functools.lru_cache(maxsize=1024)
def _project_path(cwd: str) -> Path:
    """One Path per project dir (a listing of 10,000 sessions names a few dozen)."""
    return Path(cwd)


def _child_maker(folder: Path) -> Callable[[str], Path]:
    """A fast `folder / name` for names from os.scandir (pathlib's own, where it has one:
    Python 3.11 parses every part of a joined path again, 10,000 times for a listing)."""
    make = getattr(folder, "_make_child_relpath", None)
    return make if callable(make) else folder.joinpath


def _claude_cli() -> Check:
    import subprocess

    path = shutil.which("claude")
    if path is None:
        return ("claude", False, "claude CLI not on PATH (import works; launching does not)")
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=20, check=False
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        out = "version unknown"
    return ("claude", True, f"{path} ({out or 'version unknown'})")


def _transcripts(dirs: ClaudeDirs) -> Check:
    projects = dirs.projects
    if not projects.is_dir():
        return ("sessions", False, f"no {projects} yet")
    count = sum(1 for _ in projects.glob("*/*.jsonl"))
    return ("sessions", True, f"{count} transcripts under {projects}")


def _scan(transcript: Path) -> dict[str, Any]:
    """Counts and fields from chunks without splitting lines: messages, slug, cwds."""
    from commuter.fsutil import CHUNK

    messages = 0
    slug: str | None = None
    with transcript.open("rb") as fh:
        # A pattern split across two chunks is missed: the count is for display only.
        while chunk := fh.read(CHUNK):
            messages += chunk.count(b'"type":"user"') + chunk.count(b'"type":"assistant"')
            if slug is None and b'"slug":"' in chunk:
                match = _SLUG_RE.search(chunk)
                slug = match.group(1).decode() if match else None
    head = read_head(transcript)
    tail_cwd = _tail_cwd(transcript)
    cwds = [c for c in (head.cwd, tail_cwd) if c]
    entry = read_entrypoint(transcript)
    return {"messages": messages, "slug": slug, "cwds": cwds, "entrypoint": entry}


class TranscriptScan:
    """What export learns from the transcript while it packs it: the message count (user and
    assistant entries), the plan slug (its file is packed after the transcript) and the path
    each file-history backup keeps (`meta.file_history`)."""

    def __init__(self, member: str, project: str, backups: list[str], dirs: ClaudeDirs) -> None:
        from commuter.backends.claude.rewrite import BackupSources

        self.member = member
        self.messages = 0
        self.slug: str | None = None
        self._backups = backups
        self._sources = BackupSources(project)
        self._dirs = dirs
        self._edge = b""

    def feed(self, chunk: bytes) -> None:
        # One search of the chunk for all three (each pass of bytes.count or `in` over 100 MB
        # costs ~0.05-0.08 s, and four of them were the export's slowest thread).
        records: list[int] = []
        for at in _hits(chunk):
            kind = chunk[at + 1]
            if kind == 0x74:  # "type":"user or "type":"assistant
                self.messages += 1
            elif kind == 0x73:  # "slug
                if self.slug is None and (match := _SLUG_RE.match(chunk, at)):
                    self.slug = match.group(1).decode()
            else:  # "file-history-
                records.append(at)
        if self._edge:  # a pattern split across two chunks: in the joint, in neither part
            head = chunk[:32]
            self.messages += _messages(self._edge + head) - _messages(self._edge) - _messages(head)
        self._edge = chunk[-32:]
        if self._sources is not None:
            self._sources.feed(chunk, records)

    def _plan(self) -> Path | None:
        slug = self.slug
        if slug and is_safe_slug(slug) and self._dirs.plan(slug).is_file():
            return self._dirs.plan(slug)
        return None

    def more(self) -> list[tuple[str, Path | bytes]]:
        plan = self._plan()
        return [(f"plans/{self.slug}.md", plan)] if plan is not None else []

    def late(self) -> dict[str, Any]:
        sources = self._sources.finish() if self._sources is not None else {}
        # every backup the transcript names, packed or not: an import renames them all alike
        file_history = {f"file-history/{name}": path for name, path in sources.items()}
        slug = self.slug if self.slug and is_safe_slug(self.slug) else None
        return {
            "message_count": self.messages,
            "meta": {"file_history": file_history, "plan_slug": slug},
        }


# What the export's scan looks for: a user or assistant record's type, a plan slug, a
# file-history record's type (the trailing quotes are looked at, not taken, so that no hit
# can hide the start of another: every occurrence is a hit).
_SCAN_RE = re.compile(rb'"(?:type":"(?:user|assistant)(?=")|slug(?=":")|file-history-)')
_LONGEST = len(b'"type":"assistant"')
_WINDOW = 64 * 1024  # a search holds the GIL: in windows, the other threads get it between


def _hits(data: bytes) -> Iterator[int]:
    """Where `data` has a _SCAN_RE hit, in order, searched in windows; a hit belongs to the
    window it starts in."""
    end = len(data)
    for at in range(0, end, _WINDOW):
        stop = at + _WINDOW
        for match in _SCAN_RE.finditer(data, at, min(end, stop + _LONGEST)):
            if match.start() >= stop:
                break
            yield match.start()


def _messages(data: bytes) -> int:
    """The user and assistant records in `data` (its lines' "type" fields)."""
    return sum(1 for at in _hits(data) if data[at + 1] == 0x74)


def _tail_cwd(transcript: Path, size: int = 256 * 1024) -> str | None:
    with transcript.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        end = fh.tell()
        fh.seek(max(0, end - size))
        data = fh.read()
    matches = list(CWD_RE.finditer(data))
    if not matches:
        return None
    try:
        value = orjson.loads(b'"' + matches[-1].group(1) + b'"')
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, str) else None


def _project_of(cwds: list[str], folder: str) -> str | None:
    """The recorded cwd whose project folder is the transcript's (Claude finds it from there)."""
    for cwd in reversed(cwds):
        if claude_project_folder(cwd) == folder or (
            len(folder) > 200 and claude_project_folder(cwd)[:200] == folder[:200]
        ):
            return cwd
    return cwds[0] if cwds else None


def _files(folder: Path) -> list[Path]:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return []
    return [
        Path(e.path)
        for e in entries
        if e.is_file(follow_symlinks=False)
        and is_safe_name(e.name)
        and not e.name.endswith(".lock")
    ]


def _tree(folder: Path, depth: int, limit: int) -> list[tuple[str, Path]]:
    """(relative name, path) of the regular files under `folder`, sorted, at most `depth`
    folders down and `limit` files; symlinks, `.lock` files and unsafe names stay home."""
    found: list[tuple[str, Path]] = []

    def walk(at: Path, prefix: str, level: int) -> None:
        for entry in _entries(at):
            if len(found) >= limit or not is_safe_name(entry.name):
                continue
            if entry.is_dir(follow_symlinks=False):
                if level < depth:
                    walk(Path(entry.path), f"{prefix}{entry.name}/", level + 1)
            elif entry.is_file(follow_symlinks=False) and not entry.name.endswith(".lock"):
                found.append((prefix + entry.name, Path(entry.path)))

    walk(folder, "", 0)
    return found


def _entries(folder: Path) -> list[os.DirEntry[str]]:
    try:
        return sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return []


def _history_lines(history: Path, sid: str) -> bytes:
    needle = f'"sessionId":"{sid}"'.encode()
    try:
        with history.open("rb") as fh:
            lines = [ln if ln.endswith(b"\n") else ln + b"\n" for ln in fh if needle in ln]
    except OSError:
        return b""
    return b"".join(lines)


def _project_members(project: Path) -> list[tuple[str, Path | bytes]]:
    """Project config Claude reads: .claude/settings.json, CLAUDE.md, .claude/commands/**."""
    from commuter.placing import project_members

    return project_members(
        project, PROJECT_FILES, PROJECT_DIRS, max_size=MAX_PROJECT_FILE, max_count=MAX_PROJECT_FILES
    )
