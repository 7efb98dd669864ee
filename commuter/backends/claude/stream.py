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
That sha256, and the new transcript's where a paired peer sent it, are taken on a thread of
their own as the rewritten bytes go to the temp (`_Hasher`, the old prefix's end marked in the
running hash). Side files an update finds there with the bytes it brings are left as they are.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import os
import queue
import stat
import threading
from collections.abc import Callable
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
        self._open = False  # the transcript's bytes are coming (sink took it)
        self._local: io.BufferedReader | None = None
        self._local_size = 0
        # Where a paired peer sent it, core records (size, sha256) of the transcript as the
        # base of the next delta: known here without reading the file again. A new one is
        # hashed on the way, as is an update's old prefix (its end marked in the hash).
        self._verified = options.sender_verified
        self._written: _Hasher | None = None
        self._written_size = 0
        self._mark_at = -1  # where the old transcript ends in the new one, until marked
        self._compared = 0
        self._cmp = bytearray()  # the local copy's next bytes, compared with what goes out
        self._tail = b""
        self._head = b""
        self._state = "off"
        self.routed: set[str] = set()  # side members written by the route, not staged
        self._sides: list[_SideFile] = []
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
            self._written = _Hasher()
            self._mark_at = self._local_size
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
        self._open = True
        if self._state == "create":
            self._writer()
        return self

    def _writer(self) -> fsutil.BackgroundWriter:
        """Where the new bytes go: a new transcript's temp, or for an update the temp of what
        follows the local copy, which the commit appends to it (the local bytes are neither
        written again nor freed: 90 MB of a 100 MB update)."""
        if self._out is None:
            new = self._state == "create"  # else an appender's: never renamed, not fsynced
            cm = (
                self._pending.writer(self.dest, fsync=True)
                if new
                else self._pending.appender(self.dest, self._local_size)
            )
            temp = self._stack.enter_context(cm)
            # rewriting the next chunk goes on while this one is written
            self._out = fsutil.BackgroundWriter(temp, sync_every=_SYNC_EVERY if new else 0)
            self._stack.callback(self._out.close)  # before the temp is closed (LIFO)
        return self._out

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
        side = _SideFile(
            dest, self._pending.writer, self.rewriter if rewrite else None, _small_file(dest)
        )
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
        if not self._open:
            return
        if self._tail:
            self._emit(self.rewriter.block(self._tail))
            self._tail = b""
        self._open = False
        self._out = None
        self._stack.close()  # the temp is complete; the pending rename (or append) is its
        self.action = {
            "create": "created",
            "extra": "updated",
            "extra-quiet": "unchanged",  # only lines without a uuid follow: the same chain
            "compare-equal": "unchanged",
        }.get(self._state, "")
        # "compare": the local copy is longer; "mismatch": it is not a prefix
        self.usable = bool(self.action)

    def _emit(self, out: bytes) -> None:
        state = self._state
        if state == "mismatch":
            return
        new = 0  # where the bytes the local copy does not have begin in `out`
        if state == "compare":
            compared = self._compare(out)
            if compared is None:
                return
            new = compared
        elif state == "compare-equal":
            if out:
                self._state = "extra" if _UUID_RE.search(out) else "extra-quiet"
        elif state == "extra-quiet" and _UUID_RE.search(out):
            self._state = "extra"
        if new < len(out):
            self._writer().write(out[new:] if new else out)
        at = self._written_size
        self._written_size += len(out)
        if self._written is not None:
            self._hash(out, at)

    def _compare(self, out: bytes) -> int | None:
        """Compare `out` with the local copy's next bytes: how many of them it starts with
        (the state moves on), or None when the local copy is not a prefix (`mismatch`)."""
        local = self._local
        assert local is not None
        n = _read_into(local, self._cmp, len(out))
        self._compared += n
        if n == len(out) and self._cmp == out:
            if self._compared == self._local_size:
                self._state = "compare-equal"
            return n
        want = bytes(self._cmp[:n])
        if (
            self._compared == self._local_size
            and out.startswith(want)
            and (want.endswith(b"\n") or self._local_size == 0)
        ):
            self._state = "extra" if _UUID_RE.search(out, n) else "extra-quiet"
            return n
        self._state = "mismatch"  # the ordinary path decides (a second unpack)
        return None

    def _hash(self, out: bytes, at: int) -> None:
        """`out` (the new transcript's bytes from `at`) to the hash: up to the old prefix's
        end, marked there, for the backup record (or the state of an identical copy); where
        a paired peer sent it, on to the end for the delta base."""
        written = self._written
        assert written is not None
        if 0 <= self._mark_at - at <= len(out):
            cut = self._mark_at - at
            view = memoryview(out)
            written.put(view[:cut])
            written.mark()
            self._mark_at = -1
            if self._verified:
                written.put(view[cut:])
        elif self._mark_at >= 0 or self._verified:
            written.put(out)

    def discard(self) -> None:
        """Remove what was written and not committed (idempotent)."""
        for side in self._sides:
            with contextlib.suppress(Exception):
                side.close()
        with contextlib.suppress(Exception):  # a failed write was reported where it happened
            self._stack.close()
        self._pending.__exit__(None, None, None)
        if self._written is not None:  # ends its thread
            self._written.hexdigest()

    @property
    def pending(self) -> Pending:
        return self._pending

    @property
    def replaced(self) -> set[Path]:
        """The side files' destinations the commit renames a new file onto (not those the
        import found there with the same bytes)."""
        return {side.dest for side in self._sides if not side.same}

    @property
    def local_record(self) -> dict[str, Any]:
        assert self._written is not None
        return {
            "transcript": str(self.dest),
            "length": self._local_size,
            "sha256": self._written.marked(),
        }

    def state(self) -> tuple[int, str] | None:
        """(size, sha256) of the transcript as this import leaves it, if known without
        reading it: what the route wrote, or the local copy it left unchanged."""
        written = self._written
        if written is None:
            return None
        if self.action == "unchanged":
            return self._local_size, written.marked()
        if self.action == "created" or (self.action == "updated" and self._verified):
            return self._written_size, written.hexdigest()
        return None

    @property
    def print_mode(self) -> bool:
        match = _ENTRY_RE.search(self._head)
        return match is not None and match.group(1) == b"sdk-cli"


def _read_into(src: io.BufferedReader, buf: bytearray, size: int) -> int:
    """Read up to `size` bytes of `src` into `buf`, resized to `size` (one buffer read into
    again and again: a fresh 1 MiB bytes per read costs page faults, 0.07 against 0.02 s for
    90 MB); the number read, less only at the end of `src`."""
    if len(buf) > size:
        del buf[size:]
    elif len(buf) < size:
        buf.extend(bytes(size - len(buf)))
    n = 0
    with memoryview(buf) as view:
        while n < size:
            got = src.readinto(view[n:])
            if not got:
                break
            n += got
    return n


class _Hasher:
    """sha256 on a thread of its own (hashlib drops the GIL): a transcript's digest is taken
    on the other core while the rewrite goes on. `mark` notes the digest of what was put so
    far (an update's old prefix) without stopping."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._queue: queue.Queue[bytes | memoryview | None] = queue.Queue(maxsize=8)
        self._thread: threading.Thread | None = None
        self._digest: str | None = None
        self._marks: list[str] = []
        self._marked = threading.Event()

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            if data is _MARK:
                self._marks.append(self._hash.copy().hexdigest())
                self._marked.set()
            else:
                self._hash.update(data)

    def put(self, data: bytes | memoryview) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        self._queue.put(data)

    def mark(self) -> None:
        self.put(_MARK)

    def marked(self) -> str:
        """The digest at the first mark, once the thread got there."""
        if self._thread is not None:
            self._marked.wait()
        if not self._marks:
            raise BackendError("the transcript's old prefix was not hashed")
        return self._marks[0]

    def hexdigest(self) -> str:
        if self._digest is None:
            if self._thread is not None:
                self._queue.put(None)
                self._thread.join()
                self._marked.set()
            self._digest = self._hash.hexdigest()
        return self._digest


_MARK = memoryview(b"")  # the queue's marker: compared by identity


SAME_MAX = 1 << 20  # a side file up to this size already there is compared, not rewritten


def _small_file(path: Path) -> bytes | None:
    """The bytes of the regular file (no symlink) at `path` if it is at most SAME_MAX."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > SAME_MAX:
            return None
        data = fh.read(SAME_MAX + 1)
    return data if len(data) <= SAME_MAX else None


class _SideFile:
    """One side file's bytes into its temp file (rewritten line by line when it is a
    transcript or JSON of the session, as Rewriter.copy does); closed at the member's end,
    so no more than one is open at a time.

    `existing`: the bytes at `dest` now (small files). What arrives is compared with them
    first; a file an update would write again unchanged gets no temp and no rename (`same`
    once closed: 140 side files of a session cost an update 0.09 s to replace). At the first
    difference the temp is opened and takes the part that matched."""

    def __init__(
        self,
        dest: Path,
        writer: Callable[[Path], contextlib.AbstractContextManager[BinaryIO]],
        rewriter: Rewriter | None,
        existing: bytes | None = None,
    ) -> None:
        self.dest = dest
        self.same = False
        self._writer = writer
        self._stack = contextlib.ExitStack()
        self._existing = existing
        self._matched = 0
        self._out: BinaryIO | None = None
        if existing is None:
            self._out = self._stack.enter_context(writer(dest))
        self._rewriter = rewriter
        self._tail = b""
        self._closed = False

    def _put(self, data: bytes) -> None:
        if self._out is None:
            assert self._existing is not None
            end = self._matched + len(data)
            if self._existing[self._matched : end] == data:
                self._matched = end
                return
            self._diverge()
            assert self._out is not None
        self._out.write(data)

    def _diverge(self) -> None:
        assert self._existing is not None
        self._out = self._stack.enter_context(self._writer(self.dest))
        self._out.write(self._existing[: self._matched])
        self._existing = None

    def write(self, data: bytes) -> None:
        if self._rewriter is None:
            self._put(data)
            return
        buf = self._tail + data if self._tail else data
        cut = buf.rfind(b"\n") + 1
        self._tail = buf[cut:]
        if cut:
            self._put(self._rewriter.block(buf[:cut]))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._tail and self._rewriter is not None:
                self._put(self._rewriter.block(self._tail))
                self._tail = b""
            if self._out is None:
                assert self._existing is not None
                if self._matched == len(self._existing):
                    self.same = True
                else:  # the file there is longer
                    self._diverge()
        finally:
            self._out = None
            self._existing = None
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
