"""One-pass import of a Claude Code transcript: rewritten as it leaves the decompressor, into a
temp file beside its destination, renamed only after the whole bundle has been verified.

`TranscriptRoute` is what the bundle reader asks, once it has read the manifest, where the
transcript's bytes go. It takes the transcript when the outcome can be known from the bytes
themselves: no local copy (`created`), or a local copy that the rewritten incoming transcript
starts with, byte for byte, at a line boundary (`updated`, or `unchanged` when nothing with a
uuid follows). Anything else (a divergence, a fork, a local copy written with other paths, a
local copy that is longer) is handed back: the import then unpacks the bundle again and takes
the ordinary path (`place.place`). Nothing a route writes is visible before `place_streamed`
commits it, and `close` removes whatever was not committed.

An update found this way needs no copy of the old transcript as its backup: the new one starts
with it, so a small record of the old length and sha256 restores it (see `restore_prefix`).
That sha256, and the new transcript's where a paired peer sent it, are one pass over the temp
file once it is complete (`_TempDigest`), while the reader goes on with the side files: not
during the transcript, when decompressing, rewriting and writing keep both cores busy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import queue
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import orjson

from commuter import fsutil
from commuter.backends import ImportSource
from commuter.backends.claude.lineage import _UUID_RE
from commuter.backends.claude.paths import _ENTRY_RE, ClaudeDirs, is_safe_name, is_session_id
from commuter.backends.claude.rewrite import Rewriter
from commuter.errors import BackendError, CommuterError
from commuter.placing import (
    Backups,
    Pending,
    confirm_git_state,
    resolve_target,
)

if TYPE_CHECKING:
    from commuter.model import ImportOptions, ImportResult, Manifest
    from commuter.settings import Settings

# The backup record of an update that only appended to the transcript.
PREFIX_RECORD = "prefix.json"
_HEAD = 64 * 1024
_SYNC_EVERY = 16 << 20  # the transcript's temp goes to disk while the rest is rewritten


class TranscriptRoute:
    """Where the bundle reader sends the transcript member (see the module's docstring)."""

    def __init__(self, settings: Settings, manifest: Manifest, options: ImportOptions) -> None:
        from commuter.backends.claude.place import _pathmap

        self.usable = False  # set once the whole member went through and the outcome is known
        self.action = ""
        self.sid = manifest.session_id
        self.member = f"session/{self.sid}.jsonl"
        self._pending = Pending()
        self._stack = contextlib.ExitStack()
        self._out: fsutil.BackgroundWriter | None = None
        self._local: BinaryIO | None = None
        self._local_size = 0
        # Where a paired peer sent it, core records (size, sha256) of the transcript as the
        # base of the next delta: known here without reading the file again. A new one is
        # hashed on the way; an update's comes from _TempDigest with the old prefix's.
        self._verified = options.sender_verified
        self._written: _Hasher | None = None
        self._written_size = 0
        self._read_fd = -1  # the temp, open for reading: what _TempDigest hashes
        self._digest: _TempDigest | None = None
        self._compared = 0
        self._tail = b""
        self._head = b""
        self._state = "off"
        self.routed: set[str] = set()  # side members written by the route, not staged
        self._sides: list[_SideFile] = []
        self.replaced: set[Path] = set()  # destinations the commit renames a new file onto
        self._swept: set[Path] = set()
        if not is_session_id(self.sid) or not manifest.project_dir.startswith("/"):
            return
        self.source = ImportSource(
            session_id=self.sid,
            project_dir=manifest.project_dir,
            root=Path("/nonexistent"),
            members=(),
            git=manifest.git,
            meta=dict(manifest.meta or {}),
        )
        self.where = resolve_target(settings, self.source, options)
        self.dirs = ClaudeDirs.of(settings)
        self.folder = self.dirs.project_folder(self.where.project)
        self.dest = self.folder / f"{self.sid}.jsonl"
        self.pathmap = _pathmap(
            self.source, self.sid, self.sid, self.where.project, self.dirs, self.where.path_maps
        )
        self.rewriter = Rewriter(self.pathmap, derive_backups=manifest.project_dir)
        if os.path.lexists(self.dest):
            if not self.dest.is_file() or self.dest.is_symlink():
                return
            self._local = self._stack.enter_context(self.dest.open("rb"))
            self._local_size = os.fstat(self._local.fileno()).st_size
            self._state = "compare"
        else:
            self._state = "create"
            self._written = _Hasher() if self._verified else None

    # --- what the reader calls ------------------------------------------------------------

    def sink(self, name: str, size: int) -> TranscriptRoute | _SideFile | None:
        if name != self.member:
            return self._side(name) if self.action in ("created", "updated") else None
        if self._state not in ("create", "compare"):
            return None
        self._pending.folder(self.folder)
        fsutil.sweep_temps(self.folder)
        temp = self._stack.enter_context(self._pending.writer(self.dest, fsync=True))
        if self._state == "compare":
            # mkstemp opens the temp for reading and writing: its digest is read back from it
            self._read_fd = os.dup(temp.fileno())
        # rewriting the next chunk goes on while this one is written
        self._out = fsutil.BackgroundWriter(temp, sync_every=_SYNC_EVERY)
        self._stack.callback(self._out.close)  # before the temp is closed (LIFO)
        return self

    def _side(self, name: str) -> _SideFile | None:
        """The session's own files that follow the transcript (subagents, tool results,
        file-history backups, tasks) go straight to their temp files too, where
        place._write_side_files would put them; the others are staged as usual."""
        from commuter.backends.claude.place import MAX_SESSION_DEPTH, SESSION_DIRS

        sid = self.sid
        dest: Path | None = None
        rewrite = False
        prefix = f"session/{sid}/"
        if name.startswith(prefix):
            parts = name[len(prefix) :].split("/")
            if (
                parts[0] in SESSION_DIRS
                and 2 <= len(parts) <= MAX_SESSION_DEPTH + 2
                and all(is_safe_name(p) for p in parts)
            ):
                dest = self.dest.parent.joinpath(sid, *parts)
                rewrite = parts[-1].endswith((".jsonl", ".json"))
        elif name.startswith("file-history/"):
            base = name.split("/", 1)[1]
            if is_safe_name(base):
                dest = self.dirs.file_history(sid) / self.rewriter.backup_names.get(base, base)
        elif name.startswith("tasks/"):
            base = name.split("/", 1)[1]
            if is_safe_name(base) and base.endswith(".json"):
                dest = self.dirs.tasks(sid) / base
        if dest is None:
            return None
        if dest.parent not in self._swept:
            self._swept.add(dest.parent)
            fsutil.sweep_temps(dest.parent)
        self.routed.add(name)
        self.replaced.add(dest)
        side = _SideFile(self._pending.writer(dest), self.rewriter if rewrite else None)
        self._sides.append(side)
        return side

    def write(self, data: bytes) -> None:
        if len(self._head) < _HEAD:
            self._head += data[: _HEAD - len(self._head)]
        buf = self._tail + data if self._tail else data
        cut = buf.rfind(b"\n") + 1
        self._tail = buf[cut:]
        if cut:
            self._emit(self.rewriter.block(buf[:cut]))

    def close(self) -> None:
        """The member's end (the reader has not checked the digest yet)."""
        if self._out is None:
            return
        if self._tail:
            self._emit(self.rewriter.block(self._tail))
            self._tail = b""
        self._out = None
        self._stack.close()  # the temp is complete (fsynced); the pending rename is its
        self.action = {
            "create": "created",
            "extra": "updated",
            "extra-quiet": "unchanged",  # only lines without a uuid follow: the same chain
            "compare-equal": "unchanged",
        }.get(self._state, "")
        # "compare": the local copy is longer; "mismatch": it is not a prefix
        self.usable = bool(self.action)
        fd, self._read_fd = self._read_fd, -1
        if fd < 0:
            return
        if self.action == "updated" or self._state == "compare-equal":
            # the old prefix's sha256 for the backup record (or the state of an identical
            # copy); where a paired peer sent it, on to the end for the delta base
            end = self._written_size if self._verified else self._local_size
            self._digest = _TempDigest(fd, self._local_size, end)
        else:
            os.close(fd)

    def _emit(self, out: bytes) -> None:
        state = self._state
        if state == "mismatch":
            return
        assert self._out is not None
        if state == "compare":
            local = self._local
            assert local is not None
            want = local.read(len(out))
            self._compared += len(want)
            if want == out:
                if self._compared == self._local_size:
                    self._state = "compare-equal"
            elif (
                self._compared == self._local_size
                and out.startswith(want)
                and (want.endswith(b"\n") or self._local_size == 0)
            ):
                self._state = "extra" if _UUID_RE.search(out, len(want)) else "extra-quiet"
            else:
                self._state = "mismatch"  # the ordinary path decides (a second unpack)
                return
        elif state == "compare-equal":
            if out:
                self._state = "extra" if _UUID_RE.search(out) else "extra-quiet"
        elif state == "extra-quiet" and _UUID_RE.search(out):
            self._state = "extra"
        self._out.write(out)
        self._written_size += len(out)
        if self._written is not None:
            self._written.put(out)

    def discard(self) -> None:
        """Remove what was written and not committed (idempotent)."""
        for side in self._sides:
            with contextlib.suppress(Exception):
                side.close()
        with contextlib.suppress(Exception):  # a failed write was reported where it happened
            self._stack.close()
        self._pending.__exit__(None, None, None)
        if self._read_fd >= 0:
            os.close(self._read_fd)
            self._read_fd = -1
        if self._digest is not None:  # ends its thread
            with contextlib.suppress(OSError):
                self._digest.whole()
        if self._written is not None:
            self._written.hexdigest()

    @property
    def pending(self) -> Pending:
        return self._pending

    @property
    def local_record(self) -> dict[str, Any]:
        assert self._digest is not None
        return {
            "transcript": str(self.dest),
            "length": self._local_size,
            "sha256": self._digest.prefix(),
        }

    def state(self) -> tuple[int, str] | None:
        """(size, sha256) of the transcript as this import leaves it, if known without
        reading it: what the route wrote, or the local copy it left unchanged."""
        if self.action == "unchanged" and self._digest is not None:
            return self._local_size, self._digest.prefix()
        if self.action == "created" and self._written is not None:
            return self._written_size, self._written.hexdigest()
        if self.action == "updated" and self._verified and self._digest is not None:
            return self._written_size, self._digest.whole()
        return None

    @property
    def print_mode(self) -> bool:
        match = _ENTRY_RE.search(self._head)
        return match is not None and match.group(1) == b"sdk-cli"


class _Hasher:
    """sha256 on a thread of its own (hashlib drops the GIL): a new transcript's digest is
    taken on the other core while the rewrite goes on."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
        self._thread: threading.Thread | None = None
        self._digest: str | None = None

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            self._hash.update(data)

    def put(self, data: bytes) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        self._queue.put(data)

    def hexdigest(self) -> str:
        if self._digest is None:
            if self._thread is not None:
                self._queue.put(None)
                self._thread.join()
            self._digest = self._hash.hexdigest()
        return self._digest


class _TempDigest:
    """sha256 of the temp's first `prefix` bytes, and of its first `end` bytes (>= prefix),
    in one pass on a thread of its own: the old transcript's digest is the running one's
    copy at the prefix's end, since the new transcript starts with the old one's bytes.
    Started once the temp is complete, so that it runs while the reader writes the side
    files on one core (read back from the page cache: about 80 ms for 90 MB)."""

    def __init__(self, fd: int, prefix: int, end: int) -> None:
        self._fd = fd
        self._hexes = ["", ""]
        self._error: OSError | None = None
        self._first = threading.Event()  # the prefix's digest is known (or failed)
        self._thread = threading.Thread(target=self._run, args=(prefix, end), daemon=True)
        self._thread.start()

    def _run(self, prefix: int, end: int) -> None:
        h = hashlib.sha256()
        # one buffer read into again and again: a fresh 1 MiB bytes a read costs page faults
        buf = bytearray(fsutil.CHUNK)
        view = memoryview(buf)
        try:
            at = 0
            for i, stop in enumerate((prefix, end)):
                while at < stop:
                    n = _pread_into(self._fd, view[: min(len(buf), stop - at)], at)
                    if not n:
                        raise OSError(f"the transcript's temp is shorter than {stop} bytes")
                    h.update(view[:n])
                    at += n
                self._hexes[i] = h.copy().hexdigest()
                self._first.set()
        except OSError as exc:
            self._error = exc
        finally:
            self._first.set()
            os.close(self._fd)

    def prefix(self) -> str:
        """The prefix's sha256, once it is known (the thread may go on to the end)."""
        self._first.wait()
        if self._error is not None and not self._hexes[0]:
            raise self._error
        return self._hexes[0]

    def whole(self) -> str:
        """The sha256 of the first `end` bytes, once the thread is done."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._hexes[1]


def _pread_into(fd: int, view: memoryview, at: int) -> int:
    if hasattr(os, "preadv"):  # Linux, macOS 11+
        return os.preadv(fd, [view], at)
    data = os.pread(fd, len(view), at)
    view[: len(data)] = data
    return len(data)


class _SideFile:
    """One side file's bytes into its temp file (rewritten line by line when it is a
    transcript or JSON of the session, as Rewriter.copy does); closed at the member's end,
    so no more than one is open at a time."""

    def __init__(
        self, writer: contextlib.AbstractContextManager[BinaryIO], rewriter: Rewriter | None
    ) -> None:
        self._stack = contextlib.ExitStack()
        self._out: BinaryIO | None = self._stack.enter_context(writer)
        self._rewriter = rewriter
        self._tail = b""

    def write(self, data: bytes) -> None:
        assert self._out is not None
        if self._rewriter is None:
            self._out.write(data)
            return
        buf = self._tail + data if self._tail else data
        cut = buf.rfind(b"\n") + 1
        self._tail = buf[cut:]
        if cut:
            self._out.write(self._rewriter.block(buf[:cut]))

    def close(self) -> None:
        if self._out is None:
            return
        try:
            if self._tail and self._rewriter is not None:
                self._out.write(self._rewriter.block(self._tail))
                self._tail = b""
        finally:
            self._out = None
            self._stack.close()  # complete: the pending commit renames it


def start(settings: Settings, manifest: Manifest, options: ImportOptions) -> TranscriptRoute | None:
    """A route for `manifest`'s transcript, or None when this import takes the ordinary path
    (a dry run, a delta, anything the target cannot be found for before the data)."""
    if options.dry_run or options.replace or getattr(manifest, "delta", None) is not None:
        return None
    try:
        route = TranscriptRoute(settings, manifest, options)
    except CommuterError:
        return None  # the ordinary path reports it, after verifying the bundle
    if route._state == "off":
        route.discard()
        return None
    return route


def place_streamed(
    settings: Settings, source: ImportSource, options: ImportOptions, route: TranscriptRoute
) -> ImportResult:
    """Finish an import whose transcript `route` already wrote (see `place.place`: the same
    steps, less deciding and rewriting the transcript)."""
    from commuter.backends.claude.memory import host_tag, plan_memory
    from commuter.backends.claude.place import (
        _check_busy,
        _history_lines,
        _Plan,
        _when,
        _write_memory,
        _write_side_files,
        finish,
        project_config,
    )

    sid = route.sid
    dirs = route.dirs
    target = route.where.project
    backups = Backups(settings)
    plan = _Plan(sid, target, route.dest, route.action, in_step=True)
    if route.action == "updated":
        _check_busy(dirs, plan, options)
    plan.origin = source.origin
    plan.last_activity = _when(source.meta.get("last_activity"))
    plan.print_mode = route.print_mode
    plan.warnings += confirm_git_state(source, target, options)
    config = project_config(dirs)
    memory = plan_memory(
        source, dirs.memory(route.folder), options, local_tag=host_tag(settings.hostname)
    )
    plan.warnings += memory.warnings
    rewriter = route.rewriter
    if plan.action == "unchanged":
        route.discard()  # the transcript the route wrote is the local one again
        history = _history_lines(source, dirs, rewriter, plan)
        with Pending() as pending:
            _write_memory(memory.writes, pending)
            pending.commit()
    else:
        pending = route.pending
        renames = dict(rewriter.backup_names)
        rest = dataclasses.replace(
            source, members=tuple(m for m in source.members if m not in route.routed)
        )
        _write_side_files(backups, rest, dirs, sid, plan, rewriter, renames, None, pending)
        _write_memory(memory.writes, pending)
        history = _history_lines(source, dirs, rewriter, plan)
        if plan.action == "updated":
            plan.backups.append(_prefix_backup(backups, route))
        pending.commit()
    plan.written = route.state()  # an update's digest to the end is taken meanwhile
    return finish(source, plan, dirs, history, config, options, backups, sid)


def _prefix_backup(backups: Backups, route: TranscriptRoute) -> Path:
    """The backup of a transcript the update only appended to: its old length and sha256
    (the new transcript starts with it), and its side folder as it was."""
    folder = backups.folder(route.sid)
    side = route.dest.parent / route.sid
    if side.is_dir():
        import shutil

        def keep(src: str, dst: str) -> object:
            # A file the commit replaces keeps its old inode only here: a hard link is its
            # copy. Every other file may still change in place later: copied.
            if Path(src) in route.replaced:
                with contextlib.suppress(OSError):
                    os.link(src, dst, follow_symlinks=False)
                    return dst
            return shutil.copy2(src, dst)

        temps = shutil.ignore_patterns(".*.cm*.tmp")  # this import's own, not yet renamed
        shutil.copytree(side, folder / side.name, symlinks=True, copy_function=keep, ignore=temps)
    record = folder / PREFIX_RECORD
    body = {
        **route.local_record,
        "restore": "truncate the transcript to `length` bytes (restore_prefix checks sha256)",
    }
    fsutil.atomic_write_bytes(record, orjson.dumps(body, option=orjson.OPT_INDENT_2), 0o600)
    return record


def restore_prefix(record: Path, transcript: Path | None = None) -> Path:
    """Put back the transcript a prefix backup record describes: cut it to its old length,
    after checking that those bytes are still the ones recorded. Returns the transcript."""
    try:
        body = orjson.loads(record.read_bytes())
        path = Path(transcript or body["transcript"])
        length = int(body["length"])
        want = str(body["sha256"])
    except (OSError, ValueError, KeyError, TypeError, orjson.JSONDecodeError) as exc:
        raise BackendError(f"{record} is not a transcript backup record ({exc})") from None
    h = hashlib.sha256()
    with path.open("rb") as fh:
        left = length
        while left:
            chunk = fh.read(min(fsutil.CHUNK, left))
            if not chunk:
                raise BackendError(f"{path} is shorter than the {length} bytes {record} restores")
            h.update(chunk)
            left -= len(chunk)
    if h.hexdigest() != want:
        raise BackendError(f"{path} no longer starts with the transcript {record} describes")
    with fsutil.atomic_writer(path, 0o600) as out, path.open("rb") as fh:
        left = length
        while left:
            chunk = fh.read(min(fsutil.CHUNK, left))
            out.write(chunk)
            left -= len(chunk)
    return path
