"""Reading bundles: stream, bound, verify and (optionally) unpack every member."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import queue
import re
import shutil
import tarfile
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Protocol, cast

from commuter import progress
from commuter.bundle.model import (
    _TAR_KINDS,
    BLOCK,
    DEFAULT_LIMITS,
    DIGEST_NAME,
    MAGIC_PREFIX,
    MANIFEST_NAME,
    Limits,
    MemberNames,
    Unpacked,
    _loads,
    _padding,
    check_format,
    check_member_name,
    check_size,
    manifest_from_dict,
    root_digest,
)
from commuter.bundle.write import with_late
from commuter.errors import BundleError
from commuter.fsutil import CHUNK, quick_handoffs, sha256_file
from commuter.growing import open_read
from commuter.model import Manifest, Member

_MAX_PAX = 64 << 10
_MAX_TRAILER = 64 << 10
_OVERHEAD = 64 << 20
_ZERO_BLOCK = bytes(BLOCK)
_THREAD_MIN = 8 << 20
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# a tar size field can hold up to 2**95 (and, base-256, negative numbers); nothing real is
# near 2**48 bytes, and the Limits then apply
_MAX_SIZE = 1 << 48
_PAX_SIZE_RE = re.compile(r"[0-9]{1,15}")


class FileHash(Protocol):
    """What takes a bundle file's bytes as they are read (a hashlib object)."""

    def update(self, data: bytes, /) -> None: ...


class ChunkSink(Protocol):
    """Where a routed member's bytes go as they leave the decompressor (unverified yet)."""

    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...


class MemberRoute(Protocol):
    """Chosen once the manifest is read: the members whose bytes go to a sink of the caller's
    instead of a staging file (None: staging). Nothing a sink gets is verified until the
    reader returns; a sink must keep it invisible until then (a temp file, renamed after)."""

    def sink(self, name: str, size: int) -> ChunkSink | None: ...


# Called with the manifest (members not known yet) before any member is read.
Router = Callable[[Manifest], MemberRoute | None]


def sniff(path: Path) -> str | None:
    """ "plain", "legacy" or "legacy-gzip" from the first bytes of `path`; None otherwise."""
    try:
        with open_read(path) as fh:
            head = fh.read(len(MAGIC_PREFIX))
            if not head.startswith(MAGIC_PREFIX):
                head += fh.read(4096 - len(head))
    except OSError:
        return None
    if head.startswith(MAGIC_PREFIX):
        return "plain"
    from commuter.bundle.legacy import sniff_head

    return sniff_head(head)


def read_any(
    path: Path,
    root: Path | None,
    limits: Limits,
    router: Router | None = None,
    file_hash: FileHash | None = None,
) -> Manifest:
    """Verify the bundle at `path`; unpack its members under `root` unless root is None.

    `file_hash` (a hashlib object), if given, is fed every byte of the file: for a plain
    bundle in the same pass that verifies it."""
    kind = sniff(path)
    if kind is None:
        if not path.is_file():
            raise BundleError(f"{path}: no such file")
        if path.stat().st_size == 0:
            raise BundleError("bundle is empty")
        raise BundleError("not a commuter bundle (no COMMUTER-BUNDLE header)")
    try:
        if kind != "plain":
            from commuter.bundle.legacy import read_legacy

            if file_hash is not None:
                with path.open("rb") as fh:
                    while chunk := fh.read(CHUNK):
                        file_hash.update(chunk)
            return read_legacy(path, root, limits, gzipped=kind == "legacy-gzip")
        with open_read(path) as fh, quick_handoffs():
            return read_plain(fh, root, limits, router, file_hash)
    except OSError as exc:
        raise BundleError(f"cannot read or unpack the bundle: {exc.strerror or exc}") from None


def _read_magic(fh: BinaryIO) -> bytes:
    line = fh.readline(64)
    if not line.startswith(MAGIC_PREFIX) or not line.endswith(b"\n"):
        raise BundleError("not a commuter bundle (no COMMUTER-BUNDLE header)")
    version = line[len(MAGIC_PREFIX) : -1]
    if not version.isdigit() or len(version) > 6:
        raise BundleError("not a commuter bundle (bad COMMUTER-BUNDLE header)")
    check_format(int(version))
    return line


class _Counted:
    """The bundle file as the decompressor reads it, each read counted for the progress bar
    (and hashed, when the caller wants the file's digest)."""

    def __init__(self, fh: BinaryIO, file_hash: FileHash | None = None) -> None:
        self._fh = fh
        self._hash = file_hash

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(n)
        if self._hash is not None:
            self._hash.update(data)
        progress.advance(len(data))
        return data


class _Source:
    """The decompressed tar stream, with every byte counted against a cap."""

    def __init__(self, fh: BinaryIO, limits: Limits, file_hash: FileHash | None = None) -> None:
        import zstandard  # here, so `commuter list` never loads it

        self._error = zstandard.ZstdError
        dctx = zstandard.ZstdDecompressor(max_window_size=limits.max_window)
        self._reader = dctx.stream_reader(
            cast("BinaryIO", _Counted(fh, file_hash)), read_size=CHUNK, read_across_frames=True
        )
        self._cap = limits.max_total + limits.max_manifest + limits.max_digest + _OVERHEAD
        self.count = 0

    def read(self, n: int) -> bytes:
        """Up to `n` bytes (n >= 1); b"" only at the end of the stream."""
        if not 0 < n <= CHUNK:  # a negative n would mean "read everything", unbounded
            raise BundleError(f"bundle is corrupt (bad read size {n})")
        try:
            data = self._reader.read(n)
        except self._error as exc:
            raise BundleError(f"bundle is corrupt ({exc})") from None
        self.count += len(data)
        if self.count > self._cap:
            raise BundleError(f"bundle expands beyond {self._cap} bytes; refusing it")
        return data

    def exact(self, n: int) -> bytes:
        """Exactly `n` bytes, or BundleError if the stream ends first."""
        if not 0 <= n <= _MAX_SIZE:
            raise BundleError(f"bundle is corrupt (bad size {n})")
        parts: list[bytes] = []
        left = n
        while left:
            data = self.read(min(left, CHUNK))
            if not data:
                raise BundleError("bundle is truncated")
            parts.append(data)
            left -= len(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def expect_end(self) -> None:
        """Only tar padding (zeros) may follow the end-of-archive block."""
        seen = 0
        while data := self.read(CHUNK):
            seen += len(data)
            if seen > _MAX_TRAILER or data.count(0) != len(data):
                raise BundleError("bundle has unexpected data after its end")


def _parse_pax(data: bytes) -> dict[str, str]:
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos, pos + 12)
        length = data[pos:space]
        if space < 0 or not length.isdigit():
            raise BundleError("bundle has a malformed pax header")
        end = pos + int(length)
        if end > len(data) or end <= space + 1 or data[end - 1 : end] != b"\n":
            raise BundleError("bundle has a malformed pax header")
        key, sep, value = data[space + 1 : end - 1].partition(b"=")
        if not sep:
            raise BundleError("bundle has a malformed pax header")
        records[key.decode("utf-8", "replace")] = value.decode("utf-8", "surrogateescape")
        pos = end
    return records


def _next_header(src: _Source) -> tuple[str, int] | None:
    """(name, size) of the next regular member; None at the end-of-archive block."""
    pax: dict[str, str] | None = None
    while True:
        block = src.exact(BLOCK)
        if block == _ZERO_BLOCK:
            if pax is not None:
                raise BundleError("bundle ends inside a pax header")
            return None
        try:
            info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        except tarfile.HeaderError as exc:
            raise BundleError(f"bundle is corrupt (bad tar header: {exc})") from None
        if not 0 <= info.size <= _MAX_SIZE:
            raise BundleError(f"bundle is corrupt (tar header with size {info.size})")
        if info.type == tarfile.XHDTYPE:
            if pax is not None or info.size > _MAX_PAX:
                raise BundleError("bundle has an oversized or repeated pax header")
            pax = _parse_pax(src.exact(info.size + _padding(info.size))[: info.size])
            continue
        pax = pax or {}
        name = pax.get("path", info.name)
        if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
            kind = _TAR_KINDS.get(info.type, f"entry of type {info.type!r}")
            raise BundleError(
                f"bundle member {name[:200]!r} is a {kind}; only regular files are allowed"
            )
        link = pax.get("linkpath", info.linkname)
        if link:
            raise BundleError(f"bundle member {name[:200]!r} has a link target {link[:200]!r}")
        size = info.size
        if "size" in pax:
            if not _PAX_SIZE_RE.fullmatch(pax["size"]) or int(pax["size"]) > _MAX_SIZE:
                raise BundleError(f"bundle member {name[:200]!r} has a bad size")
            size = int(pax["size"])
        return name, size


class _Sink:
    """Hashes a member's chunks and writes them (to its staging file, or to the caller's sink
    for a routed member); for big members the writing runs on a worker thread while this one
    decompresses and hashes the next chunk."""

    def __init__(self, fd: int, threaded: bool, target: ChunkSink | None = None) -> None:
        self.fd = fd
        self.target = target
        self.hash = hashlib.sha256()
        self.error: BaseException | None = None
        self._queue: queue.Queue[bytes | None] | None = None
        self._thread: threading.Thread | None = None
        if threaded:
            self._queue = queue.Queue(maxsize=4)
            self._thread = threading.Thread(target=self._drain, args=(self._queue,), daemon=True)
            self._thread.start()

    def _consume(self, data: bytes) -> None:
        if self.target is not None:
            self.target.write(data)
            return
        if self.fd >= 0:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view) :]

    def _drain(self, chunks: queue.Queue[bytes | None]) -> None:
        while (data := chunks.get()) is not None:
            if self.error is None:  # after an error keep draining so put() never blocks
                try:
                    self._consume(data)
                except BaseException as exc:
                    self.error = exc

    def put(self, data: bytes) -> None:
        self.hash.update(data)
        if self._queue is None:
            self._consume(data)
        elif self.error is None:
            self._queue.put(data)

    def finish(self) -> str:
        if self._queue is not None and self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._queue = None
        try:
            if self.error is not None:
                raise self.error
        finally:
            if self.target is not None:
                self.target.close()  # also after an error: the caller's temp is let go
        return self.hash.hexdigest()


def _copy(src: _Source, size: int, dest: Path | None, target: ChunkSink | None = None) -> str:
    """Stream `size` bytes through sha256 (into `dest` or `target` if given); the hex digest."""
    fd = -1
    if dest is not None and target is None:
        try:
            dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except (FileExistsError, NotADirectoryError, IsADirectoryError):
            raise BundleError(f"bundle member {dest.name!r} collides with another member") from None
    # decompressing overlaps hashing and writing: zstd, sha256 and write() all drop the GIL
    sink = _Sink(fd, threaded=size >= _THREAD_MIN, target=target)
    try:
        left = size
        while left:
            data = src.read(min(CHUNK, left))
            if not data:
                raise BundleError("bundle is truncated")
            sink.put(data)
            left -= len(data)
        pad = _padding(size)
        if pad and src.exact(pad).count(0) != pad:
            raise BundleError("bundle is corrupt (non-zero tar padding)")
    finally:
        try:
            digest = sink.finish()
        finally:
            if fd >= 0:
                os.close(fd)
    return digest


def check_frame(fh: BinaryIO) -> None:
    """Walk the zstd frame's block headers: it must be complete and end exactly at EOF.

    The decoder alone treats a cut-off frame as a short stream, so a bundle missing only
    its last bytes would go unnoticed; this costs one small read per 128 KiB block.
    """
    start = fh.tell()
    head = fh.read(6)
    if len(head) < 5:
        raise BundleError("bundle is truncated")
    if head[:4] != _ZSTD_MAGIC:
        raise BundleError("bundle is corrupt (no zstd frame after the header)")
    fhd = head[4]
    if fhd & 0x08:
        raise BundleError("bundle is corrupt (bad zstd frame header)")
    single = bool(fhd & 0x20)
    fcs = (1 if single else 0, 2, 4, 8)[fhd >> 6]
    pos = start + 5 + (0 if single else 1) + (0, 1, 2, 4)[fhd & 0x03] + fcs
    end = fh.seek(0, os.SEEK_END)
    while True:
        fh.seek(pos)
        block = fh.read(3)
        if len(block) < 3:
            raise BundleError("bundle is truncated")
        value = int.from_bytes(block, "little")
        kind, size = (value >> 1) & 3, value >> 3
        if kind == 3:
            raise BundleError("bundle is corrupt (bad zstd block)")
        pos += 3 + (1 if kind == 1 else size)
        if pos > end:
            raise BundleError("bundle is truncated")
        if value & 1:
            break
    pos += 4 if fhd & 0x04 else 0
    if pos > end:
        raise BundleError("bundle is truncated")
    if pos < end:
        raise BundleError("bundle has unexpected data after its end")
    fh.seek(start)


def read_plain(
    fh: BinaryIO,
    root: Path | None,
    limits: Limits,
    router: Router | None = None,
    file_hash: FileHash | None = None,
) -> Manifest:
    """Read a plain bundle from `fh`, verifying everything; members go under `root` if given,
    or to the sinks `router` picks once it has seen the manifest. `file_hash` (a hashlib
    object), if given, is fed every byte of `fh` as the reader goes."""
    magic = _read_magic(fh)
    if file_hash is not None:
        file_hash.update(magic)
    if fh.seekable():
        check_frame(fh)
    src = _Source(fh, limits, file_hash)
    first = _next_header(src)
    if first is None or first[0] != MANIFEST_NAME:
        raise BundleError("bundle does not start with manifest.json")
    size = first[1]
    if size > limits.max_manifest:
        raise BundleError(
            f"bundle manifest is {size} bytes, over the {limits.max_manifest} byte limit"
        )
    data = src.exact(size + _padding(size))[:size]
    manifest_sha = hashlib.sha256(data).hexdigest()
    manifest = manifest_from_dict(_loads(data, "manifest"))
    route = router(manifest) if router is not None else None
    seen: dict[str, Member] = {}
    names = MemberNames(limits)
    total = 0
    while True:
        header = _next_header(src)
        if header is None:
            raise BundleError("bundle has no digest.json (truncated or not made by commuter)")
        name, size = header
        if name == DIGEST_NAME:
            break
        check_member_name(name)
        names.add(name)
        total += size
        check_size(name, size, total, limits)
        target = route.sink(name, size) if route is not None else None
        sha = _copy(src, size, None if root is None else root / name, target)
        seen[name] = Member(name, size, sha)
    if size > limits.max_digest:
        raise BundleError(f"bundle digest is {size} bytes, over the {limits.max_digest} limit")
    digest = src.exact(size + _padding(size))[:size]
    if _next_header(src) is not None:
        raise BundleError("bundle has members after digest.json")
    src.expect_end()
    if file_hash is not None:
        while rest := fh.read(CHUNK):  # none after a checked frame; a stream may have some
            file_hash.update(rest)
    obj = _loads(digest, "digest")
    members = _check_digest(obj, manifest_sha, seen)
    if isinstance(obj, dict) and "late" in obj:  # fields the writer knew only at the end
        manifest = with_late(manifest, obj["late"])
    return dataclasses.replace(manifest, members=members)


def _check_digest(obj: object, manifest_sha: str, seen: dict[str, Member]) -> tuple[Member, ...]:
    if not isinstance(obj, dict) or not isinstance(obj.get("members"), list):
        raise BundleError("bundle digest is malformed")
    listed: dict[str, tuple[int, str]] = {}
    for entry in obj["members"]:
        if not (
            isinstance(entry, list)
            and len(entry) == 3
            and isinstance(entry[0], str)
            and type(entry[1]) is int
            and isinstance(entry[2], str)
        ):
            raise BundleError("bundle digest has a malformed member entry")
        if entry[0] in listed:
            raise BundleError(f"bundle digest lists {entry[0][:200]!r} twice")
        listed[entry[0]] = (entry[1], entry[2])
    if obj.get("manifest_sha256") != manifest_sha:
        raise BundleError("bundle manifest is corrupt (sha256 mismatch)")
    for name in listed:
        if name not in seen:
            raise BundleError(f"bundle member {name[:200]!r} is listed in the digest but missing")
    for name, member in seen.items():
        if name not in listed:
            raise BundleError(f"bundle member {name[:200]!r} is not listed in the digest")
        if listed[name] != (member.size, member.sha256):
            raise BundleError(f"bundle member {name[:200]!r} is corrupt (sha256 mismatch)")
    members = tuple(seen.values())
    if obj.get("root") != root_digest(manifest_sha, members):
        raise BundleError("bundle digest is inconsistent (root sha256 mismatch)")
    return members


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def describe_lines(manifest: Manifest, *, max_members: int = 40) -> list[str]:
    """`inspect`'s lines: session, origin, git state and members with sizes.

    The values are the bundle's, unescaped: print each line through
    `commuter.commands._app.safe_text`.
    """
    o = manifest.origin
    fmt = "1 (commuter 0.1/0.2 JSON)" if manifest.format == 1 else str(manifest.format)
    lines = [
        f"session:   {manifest.session_id}",
        f"backend:   {manifest.backend}",
        f"project:   {manifest.project_dir}",
        f"from:      {o.user}@{o.hostname}" + (f" (device {o.device_id})" if o.device_id else ""),
        f"created:   {manifest.created_at} by commuter {o.commuter_version}",
        f"messages:  {manifest.message_count}",
    ]
    prompt = manifest.meta.get("first_prompt")
    if isinstance(prompt, str) and prompt:
        lines.append(f"prompt:    {' '.join(prompt.split())[:100]}")
    git = manifest.git
    if git:
        commit = str(git.get("commit") or "?")[:12]
        dirty = git.get("dirty") or []
        state = f"{counted(len(dirty), 'file')} dirty" if dirty else "clean"
        lines.append(
            f"git:       {git.get('branch') or '?'} @ {commit}, {state}"
            + (f", remote {git['remote']}" if git.get("remote") else "")
        )
    else:
        lines.append("git:       (not a git repository)")
    total = sum(m.size for m in manifest.members)
    lines.append(f"format:    {fmt}")
    lines.append(f"members:   {counted(len(manifest.members), 'file')}, {_size(total)}")
    for m in manifest.members[:max_members]:
        lines.append(f"  {_size(m.size):>10}  {m.name}")
    if len(manifest.members) > max_members:
        lines.append(f"  … and {len(manifest.members) - max_members} more")
    return lines


def counted(n: int, noun: str) -> str:
    """`1 file`, `2 files`: a count with its noun in the right number (regular plurals)."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


# --- the entry points ------------------------------------------------------------------------


def unpack(
    path: Path,
    staging_parent: Path,
    *,
    limits: Limits = DEFAULT_LIMITS,
    router: Router | None = None,
) -> Unpacked:
    """Verify a bundle (plain or legacy JSON) completely while unpacking it into staging.

    On any failure nothing stays in staging and one BundleError explains it. The caller
    removes `root` when done. `digest` is the sha256 of the file's bytes, taken as they were
    read and verified. `router` (plain bundles only) may send members elsewhere as
    they are decompressed: their bytes count as verified only once unpack has returned.
    """
    staging_parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    root = Path(tempfile.mkdtemp(prefix="unpack-", dir=staging_parent))
    file_hash = hashlib.sha256()
    try:
        manifest = read_any(path, root, limits, router, file_hash)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return Unpacked(manifest=manifest, root=root, digest=file_hash.hexdigest())


def read_manifest(path: Path, *, limits: Limits = DEFAULT_LIMITS) -> Manifest:
    """The manifest with its members, after a full verify pass that writes nothing."""
    return read_any(path, None, limits)


def is_bundle(path: Path) -> bool:
    """True if `path` starts like a bundle (plain, or legacy JSON / gzip)."""
    return sniff(path) is not None


def file_digest(path: Path) -> str:
    """sha256 hex of the whole file."""
    return sha256_file(path)


def describe(manifest: Manifest) -> Lines:
    """Human-readable lines for `inspect` (str() of the result joins them)."""
    return Lines(describe_lines(manifest))


class Lines(list[str]):
    """A list of lines whose str() is the lines joined by newlines."""

    def __str__(self) -> str:
        return "\n".join(self)
