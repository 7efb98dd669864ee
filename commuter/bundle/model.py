"""The bundle format's constants, limits and checks: names, sizes, depth, manifest fields."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from commuter.errors import BundleError
from commuter.model import Manifest, Member, Origin

FORMAT_VERSION = 2
MAGIC = b"COMMUTER-BUNDLE %d\n" % FORMAT_VERSION
MAGIC_PREFIX = b"COMMUTER-BUNDLE "
MANIFEST_NAME = "manifest.json"
DIGEST_NAME = "digest.json"
ZSTD_LEVEL = 1  # level 1 + worker threads: ~0.5 s for 100 MB; level 3 doubles that
ZSTD_THREADS = min(4, os.cpu_count() or 1)
BLOCK = 512
_ROOT_TAG = b"commuter-bundle-2\0"
_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
# Any backend's session id: a file name on its own (no `/`, no `..`); the backend checks its
# own shape when placing one (Claude Code: a UUID).
_SESSION_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SURROGATE_RE = re.compile(r"[\ud800-\udfff]")
_BACKEND_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
MAX_JSON_DEPTH = 64  # arrays/objects in any JSON a bundle carries; real ones nest under 10
IMPORT_SIZE_HINT = "COMMUTER_MAX_IMPORT_SIZE raises the cap on imports"
_TAR_KINDS = {
    tarfile.DIRTYPE: "directory",
    tarfile.SYMTYPE: "symlink",
    tarfile.LNKTYPE: "hardlink",
    tarfile.CHRTYPE: "character device",
    tarfile.BLKTYPE: "block device",
    tarfile.FIFOTYPE: "fifo",
    tarfile.CONTTYPE: "contiguous file",
    tarfile.GNUTYPE_LONGNAME: "GNU long name",
    tarfile.GNUTYPE_LONGLINK: "GNU long link",
    tarfile.GNUTYPE_SPARSE: "sparse file",
    tarfile.XGLTYPE: "global pax header",
}


@dataclass(frozen=True, slots=True)
class Limits:
    """Caps that keep a hostile bundle from filling the disk or the memory."""

    max_total: int = 4 << 30
    max_member: int = 4 << 30
    max_members: int = 100_000  # files; the folders they sit in are capped at the same number
    max_manifest: int = 1 << 20
    max_digest: int = 32 << 20
    max_legacy: int = 256 << 20  # decompressed: the JSON has to be held in memory
    max_window: int = 1 << 24

    def for_import(self, max_size: int) -> Limits:
        """These limits with `max_size` as the cap on one import's total (and one member's)."""
        return dataclasses.replace(
            self, max_total=max_size, max_member=min(self.max_member, max_size)
        )


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class Unpacked:
    """A verified bundle: root/<member name> holds each member; `digest` the file's sha256."""

    manifest: Manifest
    root: Path
    digest: str = ""


# --- validation -----------------------------------------------------------------------------


def is_uuid(text: object) -> bool:
    """True for a canonical 36-character UUID string."""
    return isinstance(text, str) and _UUID_RE.fullmatch(text) is not None


def is_session_token(text: object) -> bool:
    """True for a session id a bundle may carry (`[A-Za-z0-9][A-Za-z0-9._-]{0,127}`, no `..`)."""
    return isinstance(text, str) and _SESSION_ID_RE.fullmatch(text) is not None and ".." not in text


def check_member_name(name: str) -> str:
    """`name` if it is a safe relative POSIX path for a member; BundleError otherwise."""
    if _SURROGATE_RE.search(name):  # bytes that are not UTF-8; digest.json could not hold them
        raise BundleError(f"bundle member name {name[:200]!r} is not valid UTF-8")
    if not name or len(name.encode("utf-8")) > 4096:
        raise BundleError(f"bundle member name {name[:80]!r} is empty or too long")
    if name.startswith("/") or re.match(r"[A-Za-z]:", name):
        raise BundleError(f"bundle member name {name[:200]!r} is an absolute path")
    if "\\" in name or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise BundleError(f"bundle member name {name[:200]!r} has a backslash or control character")
    for part in name.split("/"):
        if part in ("", ".", ".."):
            raise BundleError(f"bundle member name {name[:200]!r} has an empty, '.' or '..' part")
        if len(part.encode("utf-8")) > 255:
            raise BundleError(f"bundle member name {name[:80]!r} has a part over 255 bytes")
    if name in (MANIFEST_NAME, DIGEST_NAME):
        raise BundleError(f"bundle member name {name!r} is reserved")
    return name


_FILE = -1
# the least a member costs in digest.json: ["<name>",<size>,"<64 hex>"] and a comma
_DIGEST_ENTRY = 73


class MemberNames:
    """The member names of one bundle so far, with the checks every reader and the writer make.

    A name used twice (compared case-insensitively, as macOS disks do) or used both as a file
    and as a folder is refused. Each name costs time and memory in proportion to its length:
    folders are kept as (parent folder, part) pairs, never as prefix strings, whose total
    grows with the square of a deep name. Files and folders are each capped at
    `limits.max_members`, and the names' total length at what `limits.max_digest` can list.
    """

    def __init__(self, limits: Limits, what: str = "bundle") -> None:
        self._nodes: dict[tuple[int, str], int] = {}  # (folder id, casefolded part) -> id
        self._limits = limits
        self._what = what
        self._files = 0
        self._folders = 0
        self._digest = 0

    def add(self, name: str) -> None:
        """Record `name` (already checked by check_member_name); BundleError if it clashes."""
        shown = f"{self._what} member {name[:200]!r}"
        if self._files >= self._limits.max_members:
            raise BundleError(f"{self._what} has more than {self._limits.max_members} members")
        self._digest += len(name.encode("utf-8", "surrogateescape")) + _DIGEST_ENTRY
        if self._digest > self._limits.max_digest:
            raise BundleError(
                f"{self._what} member names add up to more than its digest may "
                f"hold ({self._limits.max_digest} bytes)"
            )
        *folders, last = name.casefold().split("/")
        parent = 0
        for part in folders:  # a refused name adds no node: a new folder has no file below it
            node = self._nodes.get((parent, part))
            if node is None:
                self._folders += 1
                if self._folders > self._limits.max_members:
                    raise BundleError(
                        f"{self._what} has more than {self._limits.max_members} folders"
                    )
                node = self._nodes[(parent, part)] = self._folders
            elif node == _FILE:
                raise BundleError(f"{shown} collides with another member")
            parent = node
        node = self._nodes.get((parent, last))
        if node == _FILE:
            raise BundleError(f"{shown} appears twice")
        if node is not None:
            raise BundleError(f"{shown} collides with another member")
        self._nodes[(parent, last)] = _FILE
        self._files += 1


def check_size(name: str, size: int, total: int, limits: Limits, what: str = "bundle") -> None:
    """BundleError if member `name` of `size` bytes, making `total` so far, is over the limits."""
    if size > limits.max_member or total > limits.max_total:
        raise BundleError(
            f"{what} member {name[:200]!r} ({size} bytes) exceeds the size limits "
            f"({limits.max_member} bytes per member, {limits.max_total} in all; "
            f"{IMPORT_SIZE_HINT})"
        )


def check_depth(obj: object, what: str, limit: int = MAX_JSON_DEPTH) -> None:
    """BundleError if JSON value `obj` nests arrays/objects deeper than `limit` (no recursion)."""
    if not isinstance(obj, (dict, list)):
        return
    stack: list[tuple[dict[str, Any] | list[Any], int]] = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            raise BundleError(f"{what} is nested more than {limit} levels deep")
        children = value.values() if isinstance(value, dict) else value
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))


def _typename(value: object) -> str:
    return {
        dict: "object",
        list: "array",
        str: "string",
        int: "integer",
        bool: "boolean",
        float: "number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def _field(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in obj:
        raise BundleError(f"bundle {where} field {key!r} is missing")
    value = obj[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
    if not ok:
        wanted = " or ".join(_typename(k()) if k is not type(None) else "null" for k in kinds)
        raise BundleError(f"bundle {where} field {key!r} must be {wanted}, not {_typename(value)}")
    return value


def check_format(fmt: int) -> None:
    """BundleError unless this commuter can read bundle format `fmt`."""
    if fmt > FORMAT_VERSION:
        raise BundleError(
            f"bundle format {fmt} is newer than this commuter supports "
            f"({FORMAT_VERSION}); upgrade commuter"
        )
    if fmt < FORMAT_VERSION:
        raise BundleError(f"bundle format {fmt} is not a valid format for this file layout")


def manifest_from_dict(obj: object, *, members: tuple[Member, ...] = ()) -> Manifest:
    """A validated Manifest from parsed manifest.json; BundleError names the bad field."""
    if not isinstance(obj, dict):
        raise BundleError(f"bundle manifest must be a JSON object, not {_typename(obj)}")
    check_format(_field(obj, "format", int, "manifest"))
    backend = _field(obj, "backend", str, "manifest")
    if not _BACKEND_RE.fullmatch(backend):
        raise BundleError(f"bundle manifest names an invalid backend {backend[:40]!r}")
    sid = _field(obj, "session_id", str, "manifest")
    if not is_session_token(sid):
        raise BundleError(f"bundle session id {sid[:80]!r} is not a valid session id")
    project = _field(obj, "project_dir", str, "manifest")
    if not project or "\0" in project or len(project) > 4096:
        raise BundleError("bundle manifest field 'project_dir' is empty or invalid")
    count = _field(obj, "message_count", int, "manifest")
    if count < 0:
        raise BundleError("bundle manifest field 'message_count' is negative")
    git = _field(obj, "git", (dict, type(None)), "manifest")
    if git is not None:
        _check_fields(git, _GIT_FIELDS, "git")
    meta = _field(obj, "meta", dict, "manifest")
    _check_fields(meta, _META_FIELDS, "meta")
    check_depth(obj, "bundle manifest")
    return Manifest(
        format=obj["format"],
        backend=backend,
        session_id=sid,
        project_dir=project,
        created_at=_field(obj, "created_at", str, "manifest"),
        origin=origin_from_dict(_field(obj, "origin", dict, "manifest")),
        message_count=count,
        git=git,
        meta=meta,
        members=members,
        delta=_delta_field(obj),
    )


def _delta_field(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest's `delta` object (checked in full by bundle.delta.spec_of), or None."""
    if obj.get("delta") is None:
        return None
    return dict(_field(obj, "delta", dict, "manifest"))


_OPTIONAL_TEXT = (str, type(None))
# the fields commuter reads; a backend may add others, which nothing here reads
_GIT_FIELDS: dict[str, tuple[type, ...]] = {
    "branch": _OPTIONAL_TEXT,
    "commit": _OPTIONAL_TEXT,
    "remote": _OPTIONAL_TEXT,
    "root_commit": _OPTIONAL_TEXT,
    "subdir": _OPTIONAL_TEXT,
    "dirty": (list,),
}
_META_FIELDS: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(
        (
            "source_claude_dir",
            "source_home",
            "source_project_folder",
            "plan_slug",
            "first_prompt",
            "last_activity",
            "entrypoint",
            "started_at",
            "lineage_hash",
            "legacy_version",
            "fork_of",
            "fork_from",
        ),
        _OPTIONAL_TEXT,
    ),
    "file_history": (dict,),
}


def _check_fields(obj: dict[str, Any], fields: dict[str, tuple[type, ...]], where: str) -> None:
    for key, kinds in fields.items():
        if key in obj:
            _field(obj, key, kinds, where)
    items = list(obj.get("dirty", [])) if "dirty" in fields else []
    if "file_history" in fields:
        items += obj.get("file_history", {}).values()
    if not all(isinstance(item, str) for item in items):
        key = "dirty" if "dirty" in fields else "file_history"
        raise BundleError(f"bundle {where} field {key!r} must hold only strings")


def origin_from_dict(obj: dict[str, Any]) -> Origin:
    """A validated Origin from the manifest's `origin` object."""
    extra = obj.get("extra") or {}
    if not isinstance(extra, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in extra.items()
    ):
        raise BundleError("bundle origin field 'extra' must map strings to strings")
    return Origin(
        hostname=_field(obj, "hostname", str, "origin"),
        user=_field(obj, "user", str, "origin"),
        created_at=_field(obj, "created_at", str, "origin"),
        commuter_version=_field(obj, "commuter_version", str, "origin"),
        device_id=_field(obj, "device_id", (str, type(None)), "origin")
        if "device_id" in obj
        else None,
        extra=dict(extra),
    )


def manifest_to_dict(manifest: Manifest) -> dict[str, Any]:
    """manifest.json's content: everything but the members (known only at the end)."""
    origin = manifest.origin
    return {
        "format": manifest.format,
        "backend": manifest.backend,
        "session_id": manifest.session_id,
        "project_dir": manifest.project_dir,
        "created_at": manifest.created_at,
        "origin": {
            "hostname": origin.hostname,
            "user": origin.user,
            "created_at": origin.created_at,
            "commuter_version": origin.commuter_version,
            "device_id": origin.device_id,
            "extra": dict(origin.extra),
        },
        "message_count": manifest.message_count,
        "git": manifest.git,
        "meta": manifest.meta,
        **({"delta": manifest.delta} if manifest.delta is not None else {}),
    }


def _loads(data: bytes, what: str) -> Any:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BundleError(f"bundle {what} is not valid JSON ({exc})") from None
    check_depth(obj, f"bundle {what}")
    return obj


def root_digest(manifest_sha256: str, members: tuple[Member, ...] | list[Member]) -> str:
    """The sha256 chaining the manifest and every member (name, size, hash) in order."""
    h = hashlib.sha256(_ROOT_TAG)
    h.update(bytes.fromhex(manifest_sha256))
    for m in members:
        h.update(
            m.name.encode("utf-8", "surrogateescape")
            + b"\0"
            + str(m.size).encode()
            + b"\0"
            + bytes.fromhex(m.sha256)
        )
    return h.hexdigest()


# --- writing --------------------------------------------------------------------------------


def _tar_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o600
    info.mtime = 0  # bundles of the same files are byte-identical
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _padding(size: int) -> int:
    return -size % BLOCK
