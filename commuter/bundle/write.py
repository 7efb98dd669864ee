"""Writing a bundle: magic line, then zstd(tar(manifest, members..., digest)), streamed."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import stat
from pathlib import Path
from typing import BinaryIO

import orjson

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
from commuter.fsutil import CHUNK
from commuter.model import Manifest, Member


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

    def add_file(self, name: str, path: Path) -> None:
        """Add a member from a file, streamed in 1 MiB chunks (its size as it is now)."""
        try:  # O_NONBLOCK: a fifo put in place of a session file must not hang the export
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise BundleError(f"cannot read {path}: {exc.strerror or exc}") from None
        st = os.fstat(fd)
        if not _is_regular(st.st_mode):
            os.close(fd)
            raise BundleError(f"{path} is not a regular file")
        with os.fdopen(fd, "rb") as fh:
            size = st.st_size
            self._begin(name, size)
            h = hashlib.sha256()
            left = size
            while left:
                chunk = fh.read(min(CHUNK, left))
                if not chunk:
                    raise BundleError(f"{path} shrank while it was being bundled")
                h.update(chunk)
                self._emit(chunk)
                left -= len(chunk)
        self._emit(b"\0" * _padding(size))
        self._members.append(Member(name, size, h.hexdigest()))

    def close(self) -> Manifest:
        """Write the digest and the end of the stream; returns the manifest with its members."""
        if self._closed:
            raise BundleError("bundle writer is already closed")
        self._closed = True
        digest = orjson.dumps(
            {
                "manifest_sha256": self._manifest_sha,
                "members": [[m.name, m.size, m.sha256] for m in self._members],
                "root": root_digest(self._manifest_sha, self._members),
            }
        )
        self._emit(
            _tar_header(DIGEST_NAME, len(digest))
            + digest
            + b"\0" * (_padding(len(digest)) + 2 * BLOCK)
        )
        self._out.write(self._cobj.flush())
        self._out.flush()
        return dataclasses.replace(self._manifest, members=tuple(self._members))


def _is_regular(mode: int) -> bool:
    return stat.S_ISREG(mode)
