"""Legacy bundles: the JSON (plain or gzip) files of commuter 0.1/0.2, read into today's layout."""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import json
import os
import re
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import orjson

from commuter.bundle.model import (
    FORMAT_VERSION,
    MAX_JSON_DEPTH,
    Limits,
    MemberNames,
    check_member_name,
    check_size,
    is_uuid,
    manifest_from_dict,
)
from commuter.errors import BundleError
from commuter.fsutil import CHUNK
from commuter.model import Manifest, Member

LEGACY_FORMAT = 1
_TOOL_RE = re.compile(rb'"tool"\s*:\s*"commuter"')
_GZIP = b"\x1f\x8b"
_BACKENDS = {"claude-code": "claude", "claude_code": "claude", "claude": "claude"}
_SURROGATE = re.compile("[\ud800-\udfff]")
_WS = re.compile(rb"[ \t\n\r]++")
_STR = rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"'  # possessive: linear, never backtracks
_STRING = re.compile(_STR, re.S)
_SCALAR = re.compile(_STR + rb"|[-+.0-9A-Za-z]++", re.S)  # loosely: the parser checks it
_OPEN = (ord("{"), ord("["))
_PARSE_BUDGET = 256 << 20  # for all fields but the conversation, and for each of its entries
_MAX_SETTINGS = 1 << 20  # settings_json's text; json.dumps(indent=2) multiplies deep nesting


def sniff_head(head: bytes) -> str | None:
    """ "legacy" / "legacy-gzip" if these first bytes look like a 0.1/0.2 JSON bundle."""
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


def _load(path: Path, limits: Limits, gzipped: bool) -> bytes | bytearray:
    """The JSON text, at most `limits.max_legacy` bytes.

    gzip is expanded twice: once only counting, in 1 MiB chunks, so that a decompression bomb
    is refused without holding any of it, then into a buffer of exactly the counted size.
    """
    cap = limits.max_legacy
    size = path.stat().st_size
    if size > cap:
        raise BundleError(f"legacy bundle is {size} bytes, over the {cap} byte limit")
    if not gzipped:
        return path.read_bytes()
    try:
        total = 0
        with gzip.open(path, "rb") as fh:
            while chunk := fh.read(CHUNK):
                total += len(chunk)
                if total > cap:
                    raise BundleError(f"legacy bundle expands beyond the {cap} byte limit")
        data = bytearray(total)
        with gzip.open(path, "rb") as fh, memoryview(data) as view:
            got = 0
            while got < total and (n := fh.readinto(view[got : got + CHUNK])):
                got += n
            if got < total or fh.read(1):
                raise BundleError("legacy bundle changed while it was being read")
    except (OSError, EOFError, zlib.error) as exc:
        raise BundleError(f"legacy bundle is corrupt or truncated ({exc})") from None
    return data


class _Cursor:
    """Walks the outer levels of the legacy JSON without building it.

    Each value is scanned for its end (by `_nested`, which also refuses nesting deeper than
    MAX_JSON_DEPTH) before anything is parsed, and is parsed only when it is wanted, so
    memory holds the text plus one parsed value at a time and no parser ever recurses deep.
    """

    def __init__(self, data: bytes | bytearray) -> None:
        self.data = data
        self.pos = 0

    def fail(self, what: str) -> NoReturn:
        raise BundleError(f"legacy bundle is not valid JSON ({what} at byte {self.pos})")

    def peek(self) -> int:
        """The next byte after whitespace (-1 at the end); the cursor moves to it."""
        self.pos = _skip(_WS, self.data, self.pos)
        return self.data[self.pos] if self.pos < len(self.data) else -1

    def expect(self, char: bytes) -> None:
        if self.peek() != char[0]:
            self.fail(f"expected {char.decode()!r}")
        self.pos += 1

    def value(self, depth: int) -> tuple[int, int]:
        """The span of the value at the cursor, inside `depth` containers; moves past it."""
        first = self.peek()
        start = self.pos
        if first not in _OPEN:  # also -1, the end
            found = _SCALAR.match(self.data, start)
            if found is None:
                self.fail("expected a value")
            self.pos = found.end()
            return start, self.pos
        found = _nested(MAX_JSON_DEPTH - depth).match(self.data, start)
        if found is None:
            raise BundleError(
                f"legacy bundle is not valid JSON, or is nested more than "
                f"{MAX_JSON_DEPTH} levels deep (at byte {start})"
            )
        self.pos = found.end()
        return start, self.pos

    def object_keys(self) -> Iterator[str]:
        """The keys of the object at the cursor; the caller takes each one's value."""
        self.expect(b"{")
        if self.peek() == ord("}"):
            self.pos += 1
            return
        while True:
            self.peek()
            found = _STRING.match(self.data, self.pos)
            if found is None:
                self.fail("expected a key")
            self.pos = found.end()
            # a long key is none that commuter reads: not decoded, so it costs no memory
            key = _small_string(found.group()) if self.pos - found.start() <= 256 else ""
            self.expect(b":")
            yield key
            if not self.more(b"}"):
                return

    def array_items(self) -> Iterator[None]:
        """Once before each element of the array at the cursor; the caller takes its value."""
        self.expect(b"[")
        if self.peek() == ord("]"):
            self.pos += 1
            return
        while True:
            yield None
            if not self.more(b"]"):
                return

    def more(self, close: bytes) -> bool:
        """After a value: True at a ',', False at `close`; both are consumed."""
        char = self.peek()
        if char not in (ord(","), close[0]):
            self.fail(f"expected ',' or {close.decode()!r}")
        self.pos += 1
        return char == ord(",")


@functools.cache
def _nested(levels: int) -> re.Pattern[bytes]:
    """An array or object nesting at most `levels` deep, its strings skipped whole.

    One match finds where a value ends at the regex engine's speed. The pattern is built
    level by level; each alternative starts with a different byte and every repeat is
    possessive, so it never backtracks and runs in linear time.
    """
    text = rb"[^\"\[\]{}]++|" + _STR
    pattern = rb"[\[{](?:" + text + rb")*+[\]}]"
    for _ in range(levels - 1):
        pattern = rb"[\[{](?:" + text + rb"|" + pattern + rb")*+[\]}]"
    return re.compile(pattern, re.S)


def _skip(pattern: re.Pattern[bytes], data: bytes | bytearray, pos: int) -> int:
    """Where `pattern` (one that may match nothing) stops matching from `pos`."""
    found = pattern.match(data, pos)
    return found.end() if found else pos


def _small_string(text: bytes | bytearray) -> str:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise BundleError("legacy bundle is not valid JSON (a bad string)") from None
    return value if isinstance(value, str) else ""


class _Budget:
    """Memory for parsed values: a parse is refused beforehand if it could take more."""

    def __init__(self, limit: int) -> None:
        self.limit = self.left = limit

    def parse(self, data: bytes | bytearray, span: tuple[int, int], what: str) -> Any:
        start, end = span
        # what the parsed objects may take at most: 4 bytes a character, ~128 a container/item
        cost = 4 * (end - start) + 128 * sum(data.count(c, start, end) for c in b"{[,")
        if cost > self.left:
            raise BundleError(
                f"legacy bundle {what} is too large to read (over {self.limit >> 20} MiB in memory)"
            )
        self.left -= cost
        with memoryview(data) as view:
            try:
                return orjson.loads(view[start:end])
            except orjson.JSONDecodeError:
                pass
            try:  # orjson refuses integers over 64 bits; the stdlib does not
                return json.loads(bytes(view[start:end]))
            except (ValueError, RecursionError) as exc:
                raise BundleError(f"legacy bundle is not valid JSON ({str(exc)[:120]})") from None


def _get(obj: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        _refuse(obj, key, kind, where)
    return value


def _refuse(obj: dict[str, Any], key: str, kind: type, where: str) -> NoReturn:
    what = "missing" if key not in obj else f"a {type(obj[key]).__name__}"
    raise BundleError(f"legacy bundle field {where}{key!r} is {what}, expected {kind.__name__}")


def _text(value: object) -> str:
    """A display-only string field; a lone surrogate (an escape JSON allows) becomes U+FFFD."""
    if not isinstance(value, str):
        return ""
    return _SURROGATE.sub("\ufffd", value[:4096])


def _utf8(text: str, where: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError:
        raise BundleError(
            f"legacy bundle field {where!r} is not valid Unicode text (lone surrogate)"
        ) from None


def _config_members(config: dict[str, Any]) -> Iterator[tuple[str, bytes]]:
    """project/... members from 0.2's `session.config` (settings_json, claude_md, commands)."""
    if "settings_json" in config:
        # 0.2 restored it with json.dumps(indent=2) + newline; keep that exact text
        parts, size = [], 0
        for part in json.JSONEncoder(indent=2).iterencode(config["settings_json"]):
            size += len(part)
            if size > _MAX_SETTINGS:  # the indentation of deep nesting multiplies the text
                raise BundleError(
                    f"legacy bundle field 'settings_json' is over {_MAX_SETTINGS} bytes as text"
                )
            parts.append(part)
        yield "project/.claude/settings.json", ("".join(parts) + "\n").encode()
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


def _transcript(cur: _Cursor, start: int, stats: dict[str, int]) -> Iterator[bytes]:
    """The conversation array at `start` as JSONL, one entry parsed at a time."""
    cur.pos = start
    for _ in cur.array_items():
        entry = _Budget(_PARSE_BUDGET).parse(cur.data, cur.value(3), "conversation entry")
        if not isinstance(entry, dict):
            raise BundleError("legacy bundle conversation has an entry that is not an object")
        stats["messages"] += entry.get("type") in ("user", "assistant")
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
        """Write member `name` (already checked with MemberNames) from `chunks`."""
        h = hashlib.sha256()
        size = 0
        fh = None
        if self.root is not None:
            dest = self.root / name
            dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fh = os.fdopen(
                os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600), "wb"
            )
        try:
            for chunk in chunks:
                size += len(chunk)
                self.total += len(chunk)
                check_size(name, size, self.total, self.limits, "legacy bundle")
                h.update(chunk)
                if fh is not None:
                    fh.write(chunk)
        finally:
            if fh is not None:
                fh.close()
        self.members.append(Member(name, size, h.hexdigest()))


_Span = tuple[int, int]


def _outline(cur: _Cursor) -> tuple[dict[str, _Span], dict[str, _Span] | None, int | None]:
    """Spans of the top-level fields but an object `session`; spans of that session's fields;
    where `session.conversation` starts if it is an array. The whole text is scanned, so its
    nesting and its strings are checked before anything is parsed."""
    top: dict[str, _Span] = {}
    session: dict[str, _Span] | None = None
    conversation: int | None = None
    for key in cur.object_keys():
        if key == "session" and cur.peek() == ord("{"):
            top.pop(key, None)
            session, conversation = {}, None
            for field in cur.object_keys():
                if field == "conversation":
                    conversation = cur.pos if cur.peek() == ord("[") else None
                session[field] = cur.value(2)
        else:
            top[key] = cur.value(1)
            session = None if key == "session" else session
    if cur.peek() != -1:
        cur.fail("unexpected data after the end")
    return top, session, conversation


def read_legacy(path: Path, root: Path | None, limits: Limits, *, gzipped: bool) -> Manifest:
    """Validate a 0.1/0.2 JSON bundle and convert it to members under `root` (if given).

    Every check is made, and every member name and the manifest validated, before the first
    member is written; then the conversation is converted one entry at a time.
    """
    data = _load(path, limits, gzipped)
    cur = _Cursor(data)
    if cur.peek() != ord("{"):
        raise BundleError('not a commuter bundle (legacy JSON without "tool": "commuter")')
    spans, session_spans, conversation = _outline(cur)
    budget = _Budget(_PARSE_BUDGET)
    obj = {key: budget.parse(data, span, f"field {key!r}") for key, span in spans.items()}
    if obj.get("tool") != "commuter":
        raise BundleError('not a commuter bundle (legacy JSON without "tool": "commuter")')
    version = obj.get("version")
    if not isinstance(version, str) or not re.fullmatch(r"1(\.\d+)?", version):
        raise BundleError(
            f'legacy bundle version {str(version)[:20]!r} is not supported (expected "1.0")'
        )
    backend = _BACKENDS.get(_text(obj.get("backend")) or "claude-code")
    if backend is None:
        raise BundleError(
            f"legacy bundle backend {str(obj.get('backend'))[:40]!r} is not supported"
        )
    if session_spans is None:  # missing, or not an object
        _refuse(obj, "session", dict, "")
    session = {
        key: budget.parse(data, span, f"field 'session.{key}'")
        for key, span in session_spans.items()
        if key != "conversation" or conversation is None
    }
    sid = _get(session, "id", str, "session.")
    if not is_uuid(sid):
        raise BundleError(f"bundle session id {sid[:80]!r} is not a UUID")
    project = _get(session, "project_dir", str, "session.")
    if not project or "\0" in project or len(project) > 4096 or _SURROGATE.search(project):
        raise BundleError("legacy bundle field 'session.project_dir' is empty or invalid")
    if conversation is None:  # missing, or not an array
        _refuse(session, "conversation", list, "session.")
    config = session.get("config") or {}
    if not isinstance(config, dict):
        raise BundleError("legacy bundle field 'session.config' is not an object")
    transcript = f"session/{sid}.jsonl"
    files = list(_config_members(config))
    names = MemberNames(limits, "legacy bundle")
    for name in (transcript, *(name for name, _ in files)):
        names.add(check_member_name(name))
    count = session.get("message_count")
    manifest = manifest_from_dict(
        {
            "format": FORMAT_VERSION,
            "backend": backend,
            "session_id": sid,
            "project_dir": project,
            "created_at": _text(obj.get("exported_at")),
            "origin": _origin(obj),
            "message_count": count if type(count) is int and count >= 0 else 0,
            "git": _git(obj.get("git_snapshot")),
            "meta": _meta(obj, session, version),
        }
    )
    sink = _Sink(root, limits)
    stats = {"messages": 0}
    sink.add(transcript, _transcript(cur, conversation, stats))
    for name, content in files:
        sink.add(name, [content])
    return dataclasses.replace(
        manifest,
        format=LEGACY_FORMAT,
        members=tuple(sink.members),
        message_count=manifest.message_count
        if type(count) is int and count >= 0
        else stats["messages"],
    )


def _origin(obj: dict[str, Any]) -> dict[str, Any]:
    source = obj.get("source")
    if not isinstance(source, dict):
        source = {}
    extra = {
        k: _text(source[k]) for k in ("os", "backend_version") if isinstance(source.get(k), str)
    }
    return {
        "hostname": _text(source.get("hostname")) or "?",
        "user": _text(source.get("username")) or "?",
        "created_at": _text(obj.get("exported_at")),
        "commuter_version": "0.1/0.2",
        "device_id": None,
        "extra": extra,
    }


def _git(snap: object) -> dict[str, Any] | None:
    if not isinstance(snap, dict) or not (snap.get("branch") or snap.get("commit")):
        return None
    dirty = snap.get("dirty_files")
    return {
        "branch": _text(snap.get("branch")) or None,
        "commit": _text(snap.get("commit")) or None,
        "dirty": [_text(d) for d in dirty if isinstance(d, str)][:200]
        if isinstance(dirty, list)
        else [],
        "remote": None,
        "root_commit": None,
    }


def _meta(obj: dict[str, Any], session: dict[str, Any], version: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"legacy_version": version, "file_history": {}}
    for key in ("started_at", "last_activity", "lineage_hash"):
        if isinstance(session.get(key), str):
            meta[key] = _text(session[key])
    return meta
