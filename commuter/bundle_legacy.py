"""Legacy bundles: the JSON (plain or gzip) files of commuter 0.1/0.2, read into today's layout."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from commuter.bundle import Limits, Manifest, Member, check_member_name, is_uuid
from commuter.core import Origin
from commuter.errors import BundleError

LEGACY_FORMAT = 1
_TOOL_RE = re.compile(rb'"tool"\s*:\s*"commuter"')
_GZIP = b"\x1f\x8b"
_BACKENDS = {"claude-code": "claude", "claude_code": "claude", "claude": "claude"}
_SURROGATE = re.compile("[\ud800-\udfff]")


def sniff_head(head: bytes) -> str | None:
    """"legacy" / "legacy-gzip" if these first bytes look like a 0.1/0.2 JSON bundle."""
    kind = "legacy"
    if head.startswith(_GZIP):
        try:
            head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, 4096)
        except zlib.error:
            return None
        kind = "legacy-gzip"
    if head.lstrip().startswith(b"{") and _TOOL_RE.search(head):
        return kind
    return None


def _load(path: Path, limits: Limits, gzipped: bool) -> bytes:
    cap = limits.max_legacy
    size = path.stat().st_size
    if size > cap:
        raise BundleError(f"legacy bundle is {size} bytes, over the {cap} byte limit")
    try:
        if not gzipped:
            return path.read_bytes()
        with gzip.open(path, "rb") as fh:
            data = fh.read(cap + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise BundleError(f"legacy bundle is corrupt or truncated ({exc})") from None
    if len(data) > cap:
        raise BundleError(f"legacy bundle expands beyond the {cap} byte limit")
    return data


def _parse(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    try:  # orjson refuses integers over 64 bits; the stdlib does not
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise BundleError(f"legacy bundle is not valid JSON ({str(exc)[:120]})") from None


def _get(obj: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        what = "missing" if key not in obj else f"a {type(value).__name__}"
        raise BundleError(f"legacy bundle field {where}{key!r} is {what}, "
                          f"expected {kind.__name__}")
    return value


def _text(value: object) -> str:
    """A display-only string field; a lone surrogate (an escape JSON allows) becomes U+FFFD."""
    if not isinstance(value, str):
        return ""
    return _SURROGATE.sub("\ufffd", value)


def _utf8(text: str, where: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError:
        raise BundleError(f"legacy bundle field {where!r} is not valid Unicode text "
                          "(lone surrogate)") from None


def _config_members(config: dict[str, Any]) -> Iterator[tuple[str, bytes]]:
    """project/... members from 0.2's `session.config` (settings_json, claude_md, commands)."""
    if "settings_json" in config:
        # 0.2 restored it with json.dumps(indent=2) + newline; keep that exact text
        yield "project/.claude/settings.json", (
            json.dumps(config["settings_json"], indent=2) + "\n").encode()
    if "claude_md" in config:
        yield "project/CLAUDE.md", _utf8(_str(config["claude_md"], "claude_md"), "claude_md")
    commands = config.get("commands", {})
    if not isinstance(commands, dict):
        raise BundleError("legacy bundle field 'commands' is not an object")
    for name, content in commands.items():
        if not isinstance(name, str) or "/" in name or _SURROGATE.search(name):
            raise BundleError(f"legacy bundle command name {str(name)[:80]!r} is not a file name")
        where = f"commands/{name}"
        yield f"project/.claude/commands/{name}", _utf8(_str(content, where), where)


def _str(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise BundleError(f"legacy bundle config {where!r} is not a string")
    return value


def _transcript(conversation: list[Any]) -> Iterator[bytes]:
    for entry in conversation:
        if not isinstance(entry, dict):
            raise BundleError("legacy bundle conversation has an entry that is not an object")
        try:
            yield orjson.dumps(entry) + b"\n"
        except orjson.JSONEncodeError:
            # a lone surrogate (JS cuts strings by UTF-16 unit; Claude writes it as an escape)
            # can only sit inside a JSON string, where backslashreplace gives that same escape
            text = json.dumps(entry, ensure_ascii=False, separators=(",", ":"))
            yield text.encode("utf-8", "backslashreplace") + b"\n"


class _Sink:
    """Writes members (or only hashes them) and enforces the size limits."""

    def __init__(self, root: Path | None, limits: Limits) -> None:
        self.root = root
        self.limits = limits
        self.members: list[Member] = []
        self.total = 0

    def add(self, name: str, chunks: Iterable[bytes]) -> None:
        check_member_name(name)
        if any(m.name.casefold() == name.casefold() for m in self.members):
            raise BundleError(f"legacy bundle has {name!r} twice")
        if len(self.members) >= self.limits.max_members:
            raise BundleError(f"legacy bundle has more than {self.limits.max_members} members")
        h = hashlib.sha256()
        size = 0
        fh = None
        if self.root is not None:
            dest = self.root / name
            dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fh = os.fdopen(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                                   0o600), "wb")
        try:
            for chunk in chunks:
                size += len(chunk)
                self.total += len(chunk)
                if size > self.limits.max_member or self.total > self.limits.max_total:
                    raise BundleError(f"legacy bundle member {name!r} exceeds the size limits")
                h.update(chunk)
                if fh is not None:
                    fh.write(chunk)
        finally:
            if fh is not None:
                fh.close()
        self.members.append(Member(name, size, h.hexdigest()))


def read_legacy(path: Path, root: Path | None, limits: Limits, *, gzipped: bool) -> Manifest:
    """Validate a 0.1/0.2 JSON bundle and convert it to members under `root` (if given)."""
    obj = _parse(_load(path, limits, gzipped))
    if not isinstance(obj, dict) or obj.get("tool") != "commuter":
        raise BundleError("not a commuter bundle (legacy JSON without \"tool\": \"commuter\")")
    version = obj.get("version")
    if not isinstance(version, str) or not re.fullmatch(r"1(\.\d+)?", version):
        raise BundleError(f"legacy bundle version {str(version)[:20]!r} is not supported "
                          "(expected \"1.0\")")
    backend = _BACKENDS.get(_text(obj.get("backend")) or "claude-code")
    if backend is None:
        raise BundleError(f"legacy bundle backend {str(obj.get('backend'))[:40]!r} "
                          "is not supported")
    session = _get(obj, "session", dict, "")
    sid = _get(session, "id", str, "session.")
    if not is_uuid(sid):
        raise BundleError(f"bundle session id {sid[:80]!r} is not a UUID")
    project = _get(session, "project_dir", str, "session.")
    if not project or "\0" in project or len(project) > 4096 or _SURROGATE.search(project):
        raise BundleError("legacy bundle field 'session.project_dir' is empty or invalid")
    conversation = _get(session, "conversation", list, "session.")
    config = session.get("config") or {}
    if not isinstance(config, dict):
        raise BundleError("legacy bundle field 'session.config' is not an object")
    sink = _Sink(root, limits)
    sink.add(f"session/{sid}.jsonl", _transcript(conversation))
    for name, data in _config_members(config):
        sink.add(name, [data])
    return Manifest(
        format=LEGACY_FORMAT, backend=backend, session_id=sid, project_dir=project,
        created_at=_text(obj.get("exported_at")), origin=_origin(obj),
        message_count=_count(session, conversation), git=_git(obj.get("git_snapshot")),
        meta=_meta(obj, session, version), members=tuple(sink.members),
    )


def _origin(obj: dict[str, Any]) -> Origin:
    source = obj.get("source")
    if not isinstance(source, dict):
        source = {}
    extra = {k: _text(source[k]) for k in ("os", "backend_version")
             if isinstance(source.get(k), str)}
    return Origin(
        hostname=_text(source.get("hostname")) or "?", user=_text(source.get("username")) or "?",
        created_at=_text(obj.get("exported_at")), commuter_version="0.1/0.2", extra=extra,
    )


def _count(session: dict[str, Any], conversation: list[Any]) -> int:
    count = session.get("message_count")
    if type(count) is int and count >= 0:
        return count
    return sum(1 for e in conversation if isinstance(e, dict) and e.get("type")
               in ("user", "assistant"))


def _git(snap: object) -> dict[str, Any] | None:
    if not isinstance(snap, dict) or not (snap.get("branch") or snap.get("commit")):
        return None
    dirty = snap.get("dirty_files")
    return {
        "branch": _text(snap.get("branch")) or None, "commit": _text(snap.get("commit")) or None,
        "dirty": [_text(d) for d in dirty if isinstance(d, str)][:200]
        if isinstance(dirty, list) else [],
        "remote": None, "root_commit": None,
    }


def _meta(obj: dict[str, Any], session: dict[str, Any], version: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"legacy_version": version, "file_history": {}}
    for key in ("started_at", "last_activity", "lineage_hash"):
        if isinstance(session.get(key), str):
            meta[key] = _text(session[key])
    return meta
