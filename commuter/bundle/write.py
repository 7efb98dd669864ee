"""Writing a bundle: magic line, then zstd(tar(manifest, members..., digest)), streamed."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import queue
import stat
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from commuter import progress
from commuter.bundle.model import (
    BLOCK,
    DEFAULT_LIMITS,
    DIGEST_NAME,
    MAGIC,
    MANIFEST_NAME,
    ZSTD_LEVEL,
    ZSTD_THREADS,
    Limits,
    MemberNames,
    _padding,
    _tar_header,
    check_member_name,
    manifest_from_dict,
    manifest_to_dict,
    root_digest,
)
from commuter.errors import BundleError
from commuter.fsutil import CHUNK, quick_handoffs
from commuter.model import Manifest, Member

PARALLEL_HASH = 4 * CHUNK  # members this large are hashed on a thread of their own


class BundleWriter:
    """Streams a bundle to `out`: magic line, then zstd(tar(manifest, members..., digest))."""

    def __init__(
        self,
        out: BinaryIO,
        manifest: Manifest,
        *,
        level: int = ZSTD_LEVEL,
        threads: int = ZSTD_THREADS,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        data = orjson.dumps(manifest_to_dict(manifest), option=orjson.OPT_INDENT_2)
        if len(data) > limits.max_manifest:
            raise BundleError(
                f"bundle manifest is {len(data)} bytes, over the {limits.max_manifest} byte limit"
            )
        self._manifest = manifest_from_dict(orjson.loads(data))
        self._out = out
        self._limits = limits
        import zstandard  # here, so `commuter list` never loads it

        self._cobj = zstandard.ZstdCompressor(
            level=level, write_checksum=True, threads=threads
        ).compressobj()
        self._members: list[Member] = []
        self._names = MemberNames(limits)
        self._total = 0
        self._closed = False
        out.write(MAGIC)
        self._manifest_sha = hashlib.sha256(data).hexdigest()
        self._emit(_tar_header(MANIFEST_NAME, len(data)) + data + b"\0" * _padding(len(data)))

    def _emit(self, data: bytes | memoryview) -> None:
        out = self._cobj.compress(data)
        if out:
            self._out.write(out)

    def _begin(self, name: str, size: int) -> None:
        if self._closed:
            raise BundleError("bundle writer is already closed")
        check_member_name(name)
        if size > self._limits.max_member or self._total + size > self._limits.max_total:
            raise BundleError(f"bundle member {name!r} ({size} bytes) exceeds the size limits")
        self._names.add(name)
        self._total += size
        self._emit(_tar_header(name, size))

    def add_bytes(self, name: str, data: bytes) -> None:
        """Add a member from memory (small members: history lines, settings)."""
        self._begin(name, len(data))
        self._emit(data + b"\0" * _padding(len(data)))
        self._members.append(Member(name, len(data), hashlib.sha256(data).hexdigest()))

    def add_file(
        self, name: str, path: Path, *, observe: Callable[[bytes], None] | None = None
    ) -> None:
        """Add a member from a file, streamed in 1 MiB chunks (its size as it is now).

        `observe` sees every chunk as it goes by: a backend counts or scans the file in the
        same pass that hashes and compresses it, so each source file is read once.
        """
        try:  # O_NONBLOCK: a fifo put in place of a session file must not hang the export
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise BundleError(f"cannot read {path}: {exc.strerror or exc}") from None
        st = os.fstat(fd)
        if not _is_regular(st.st_mode):
            os.close(fd)
            raise BundleError(f"{path} is not a regular file")
        size = st.st_size
        h = hashlib.sha256()
        # A large member is hashed (and observed) on a worker thread while this one reads and
        # compresses: sha256 and zstd both drop the GIL (100 MB: 0.12 s of hashing was serial).
        parallel = observe is not None or size >= PARALLEL_HASH
        handoffs = quick_handoffs() if parallel else contextlib.nullcontext()
        with os.fdopen(fd, "rb") as fh, handoffs:
            self._begin(name, size)
            scan = _Observer(h.update, observe) if parallel else None
            try:
                left = size
                while left:
                    chunk = fh.read(min(CHUNK, left))
                    if not chunk:
                        raise BundleError(f"{path} shrank while it was being bundled")
                    if scan is not None:
                        scan.put(chunk)
                    else:
                        h.update(chunk)
                    self._emit(chunk)
                    left -= len(chunk)
                    progress.advance(len(chunk))
            finally:
                if scan is not None:
                    scan.finish()
        self._emit(b"\0" * _padding(size))
        self._members.append(Member(name, size, h.hexdigest()))

    def close(self, late: Mapping[str, Any] | None = None) -> Manifest:
        """Write the digest and the end of the stream; returns the manifest with its members.

        `late` holds manifest fields known only once the members went by (`message_count`,
        `meta` keys): they travel in digest.json and the reader puts them into the manifest.
        """
        if self._closed:
            raise BundleError("bundle writer is already closed")
        self._closed = True
        body: dict[str, Any] = {
            "manifest_sha256": self._manifest_sha,
            "members": [[m.name, m.size, m.sha256] for m in self._members],
            "root": root_digest(self._manifest_sha, self._members),
        }
        manifest = self._manifest
        if late:
            body["late"] = late_fields(late)
            manifest = with_late(manifest, body["late"])
        digest = orjson.dumps(body)
        self._emit(
            _tar_header(DIGEST_NAME, len(digest))
            + digest
            + b"\0" * (_padding(len(digest)) + 2 * BLOCK)
        )
        self._out.write(self._cobj.flush())
        self._out.flush()
        return dataclasses.replace(manifest, members=tuple(self._members))


def late_fields(late: Mapping[str, Any]) -> dict[str, Any]:
    """The late manifest fields as digest.json carries them: `message_count`, `meta`."""
    out: dict[str, Any] = {}
    if "message_count" in late:
        out["message_count"] = late["message_count"]
    if late.get("meta"):
        out["meta"] = dict(late["meta"])
    unknown = set(late) - {"message_count", "meta"}
    if unknown:
        raise BundleError(f"unknown late manifest fields {sorted(unknown)}")
    return out


def with_late(manifest: Manifest, late: object) -> Manifest:
    """`manifest` with the late fields of digest.json put in, checked like the manifest's own
    (BundleError names a bad one); the members stay."""
    if not isinstance(late, dict) or set(late) - {"message_count", "meta"}:
        raise BundleError("bundle digest field 'late' is malformed")
    fields = manifest_to_dict(manifest)
    if "message_count" in late:
        fields["message_count"] = late["message_count"]
    meta = late.get("meta", {})
    if not isinstance(meta, dict):
        raise BundleError("bundle digest field 'late' is malformed")
    fields["meta"] = {**fields["meta"], **meta}
    return manifest_from_dict(fields, members=manifest.members)


class _Observer:
    """Runs a member's hash update and observer on a worker thread, chunk by chunk, in order;
    the hash sees every chunk even after the observer failed (its error is raised)."""

    def __init__(
        self, update: Callable[[bytes], None], observe: Callable[[bytes], None] | None
    ) -> None:
        self._update = update
        self._observe = observe
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=4)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            self._update(chunk)
            if self.error is None and self._observe is not None:  # after an error: drain
                try:
                    self._observe(chunk)
                except BaseException as exc:
                    self.error = exc

    def put(self, chunk: bytes) -> None:
        if self.error is not None:
            raise self.error
        self._queue.put(chunk)

    def finish(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self.error is not None:
            raise self.error


def _is_regular(mode: int) -> bool:
    return stat.S_ISREG(mode)
