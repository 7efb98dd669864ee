"""Rewrite a Claude Code transcript for another machine: paths in known fields, session id."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from commuter.backends.claude.paths import is_safe_name
from commuter.errors import BundleError
from commuter.fsutil import CHUNK
from commuter.pathmap import PathMap

# Keys whose string value is a file-system path; nothing else (prose, output) is touched.
PATH_KEYS = frozenset(
    {
        "cwd",
        "file_path",
        "filePath",
        "path",
        "notebook_path",
        "notebookPath",
        "planFilePath",
        "persistedOutputPath",
        "relocatedCwd",
        "worktreePath",
        "project",
        "directory",
        "outputFile",
        "output_file",
        "transcript_path",
        "absolutePath",
        "originalCwd",
        # Claude Code 2.1.332: environment snapshots, file-history backups, worktree-state.
        "workingDirectory",
        "realParentDir",
        "trackingPath",
        "scratchpadDirectory",
        "preEnterOriginalCwd",
        "extensionRoot",
    }
)
_PATH_KEYS_B = frozenset(k.encode() for k in PATH_KEYS)
# Keys whose value is a list of paths (the environment snapshot's --add-dir folders).
PATH_LIST_KEYS = frozenset({"additionalWorkingDirectories"})
_PATH_LIST_OPEN = b'"additionalWorkingDirectories":["'
_DELTA = b'"file-history-delta"'
_API_COPY = b'"type":"api-request-'
# Texts Claude Code 2.1.332 renders itself and sends again on a resume, naming a path
# (group 1): an attachment's `rendered[].content` (the environment, loaded instructions or
# memory, the plan file) and the recorded system prompt (`prompt_snapshot`, reused verbatim:
# it tells the model where the project's memory is). Matched only in those two fields.
_RENDERED_TEXTS = (
    re.compile(r"^ - Primary working directory: (/[^\n]+?)(?= \(was |$)", re.M),
    re.compile(r"^Contents of (/[^\n]+?) \(", re.M),
    re.compile(r"(?:create your plan at|A plan file already exists at) (/[^\n]+?\.md)\b"),
)
_PROMPT_TEXTS = (
    re.compile(r"file-based memory(?: system)? at `(/[^`\n]+)`"),
    re.compile(r"(?:a private directory|a shared team directory) at `(/[^`\n]+)`"),
)
# Words right before such a path (a hit makes the line parsed), as JSON bytes.
_RENDERED_LEADS = (
    b"Primary working directory: ",
    b"Contents of ",
    b"create your plan at ",
    b"plan file already exists at ",
)
_PROMPT_LEADS = (b"memory at `", b"memory system at `", b"directory at `")
_PROMPT_TAIL = b"at `"  # how every one of those ends: searched with the prefix
_CWD_KEY = b'"cwd":"'
# Nesting a parsed line may have: below orjson.dumps' limit (254) and Python's stack.
MAX_DEPTH = 200
_SNAPSHOT = b'"file-history-snapshot"'

# Fixed-format `tool_result` texts that Claude Code itself writes, each naming one absolute
# path (group 1): the pointer to a persisted large output, and the Write and Edit
# confirmations. Anchored at the start of the result text; prose is never matched.
_TOOL_TEXTS = (
    re.compile(r"\A<persisted-output>\n[^\n]*Full output saved to: (/[^\n]+)"),
    re.compile(
        r"\AFile created successfully at: (/[^\n]+?)"
        r"(?= \(file state is current in your context|\n|\Z)"
    ),
    re.compile(r"\AThe file (/[^\n]+?)(?= has been updated(?: successfully)?\.)"),
)
# The words right before the path in those texts (each ends in a space), as JSON bytes.
_LEADS = (b"Full output saved to: ", b"File created successfully at: ", b"The file ")
_PERSISTED_OPEN = b"<persisted-output>\\n"
# How Claude Code serialises a string-content result block; anything else is parsed.
_RESULT_OPEN = b'"type":"tool_result","content":"'


def _common_prefix(items: list[bytes]) -> bytes:
    if not items:
        return b""
    first, last = min(items), max(items)
    n = 0
    while n < len(first) and n < len(last) and first[n] == last[n]:
        n += 1
    return first[:n]


def escaped(text: str) -> bytes:
    """`text` as it appears inside a JSON string (no surrounding quotes)."""
    return orjson.dumps(text)[1:-1]


def backup_hash(path: str) -> str:
    """Claude's file-history name stem: first 16 hex of sha256 of the absolute path."""
    return hashlib.sha256(path.encode("utf-8")).hexdigest()[:16]


class Rewriter:
    """Line rewriter: lines without a source prefix are copied as bytes, unparsed."""

    def __init__(
        self,
        pathmap: PathMap,
        *,
        old_sid: str | None = None,
        new_sid: str | None = None,
        backup_names: dict[str, str] | None = None,
        literals: Sequence[tuple[bytes, bytes]] = (),
        derive_backups: str | None = None,
    ) -> None:
        """`derive_backups`: the session's source project dir; each file-history backup's new
        name is then found in the transcript's own records as they go by (the path each one
        keeps, translated: what export's `meta.file_history` says), for an import that
        rewrites the transcript before the manifest's late fields are known. `backup_names`
        collects them, so the backups that follow the transcript get the same names."""
        self.map = pathmap
        self.needles = [escaped(src) for src in pathmap.sources()]
        self.replacements = {escaped(src): escaped(dst) for src, dst in pathmap.pairs}
        # Only prefixes no other prefix contains are searched; longer ones are tried at hits.
        by_len = sorted(self.needles, key=len)
        self.roots: list[tuple[bytes, list[bytes]]] = []
        common = _common_prefix(self.needles)
        common = common[: common.rfind(b"/") + 1]
        if len(common) > 1:
            # One search for what all prefixes share (e.g. the old HOME), then compare.
            self.roots.append((common, list(reversed(by_len))))
        else:
            for needle in by_len:
                if not any(needle.startswith(root) for root, _ in self.roots):
                    kids = [n for n in reversed(by_len) if n.startswith(needle)]
                    self.roots.append((needle, kids))
        self.backup_names = backup_names or {}
        self.derive_cwd = derive_backups
        self._derived: set[str] = set()
        # Exact byte strings replaced everywhere: a fork's new session id, its own plan slug.
        sid = [(old_sid.encode(), new_sid.encode())] if old_sid and new_sid else []
        self.literals = [(old, new) for old, new in [*sid, *literals] if old != new]

    @property
    def is_identity(self) -> bool:
        return (
            not self.needles
            and not self.literals
            and not self.backup_names
            and self.derive_cwd is None
        )

    def line(self, raw: bytes) -> bytes:
        """Rewrite one line (with or without its trailing newline)."""
        return self.block(raw)

    def block(self, data: bytes) -> bytes:
        """Rewrite whole lines at once, by positions, without splitting them."""
        for old, new in self.literals:
            data = data.replace(old, new)
        # (start, stop, replacement) edits, in order; snapshot lines are parsed whole, and so
        # are lines where a fixed tool-result text is not laid out as Claude Code writes it.
        edits: list[tuple[int, int, bytes]] = []
        lines: set[tuple[int, int]] = set()
        if self.backup_names or self.derive_cwd is not None:
            _mark_records(data, lines)
        if self.needles:
            _mark_lines(data, _PATH_LIST_OPEN, lines, near_start=False, then=b'"/')
        # One search per root for every kind of hit, told apart by the bytes before it: a
        # path key's value (`"key":"`), a fixed text's path (a space), a prompt's (`at ``).
        keyed: list[tuple[int, list[bytes]]] = []
        for root, kids in self.roots:
            start = data.find(root)
            while start != -1:
                pos = start
                start = data.find(root, pos + 1)
                if pos < 4:  # no lead or key fits before it (and a negative start would wrap)
                    continue
                c = data[pos - 1]
                if c == 0x22:  # '"'
                    if data.startswith(b'":"', pos - 3):
                        keyed.append((pos, kids))
                elif c == 0x60:  # '`'
                    if data.endswith(_PROMPT_LEADS, 0, pos):
                        _add_client_line(data, pos, lines)
                # Every lead ends in ": ", "e ", "f " or "t ": most hits are rejected here.
                elif c == 0x20 and data[pos - 2] in b":eft":
                    if data.endswith(_RENDERED_LEADS, 0, pos):  # one C call for all the leads
                        _add_client_line(data, pos, lines)
                        continue
                    if not data.endswith(_LEADS, 0, pos):
                        continue
                    kind = next(i for i, x in enumerate(_LEADS) if _ends_with(data, pos, x))
                    edit = self._result_text(data, pos - len(_LEADS[kind]), kind)
                    if isinstance(edit, tuple):
                        edits.append(edit)
                    elif edit:
                        line_start = data.rfind(b"\n", 0, pos) + 1
                        line_stop = data.find(b"\n", pos)
                        lines.add((line_start, len(data) if line_stop == -1 else line_stop))
        for line_start, line_stop in lines:
            body = data[line_start:line_stop]
            new = self._parsed(body)
            if new is not body:
                edits.append((line_start, line_stop, new))
        for pos, kids in keyed:
            close = pos - 3
            opening = data.rfind(b'"', 0, close)
            # An unescaped `"key":"` cannot occur inside a JSON string: a hit preceded by one
            # is exactly a path-key value that starts with the prefix.
            if opening == -1 or data[opening + 1 : close] not in _PATH_KEYS_B:
                continue
            for needle in kids:
                if data.startswith(needle, pos):
                    stop = pos + len(needle)
                    if data[stop : stop + 1] in (b"/", b'"'):
                        edits.append((pos, stop, self.replacements[needle]))
                        break
        if not edits:
            return data
        edits.sort()
        parts: list[bytes] = []
        last = 0
        for begin, stop, new in edits:
            if begin < last:
                continue
            parts += [data[last:begin], new]
            last = stop
        parts.append(data[last:])
        return b"".join(parts)

    def _result_text(self, data: bytes, at: int, kind: int) -> tuple[int, int, bytes] | bool:
        """Splice the fixed result text whose lead `_LEADS[kind]` starts at `at`, by bytes.

        Returns an edit; False when the hit cannot be such a text (not at a string's start);
        True when only parsing the line can tell (another layout, escapes in the way).
        """
        begin = at
        if kind == 0:
            begin = data.rfind(_PERSISTED_OPEN, max(0, at - 4096), at)
            if begin == -1:
                return False
            first_line = data[begin + len(_PERSISTED_OPEN) : at]
            if any(c in first_line for c in (b"\\", b'"', b"\n")):
                return True
        if not _ends_with(data, begin, _RESULT_OPEN):
            # `"content":"` or `"text":"` may be a result in another key order or a text
            # block inside a result; elsewhere (mid-string) the text is not at its start.
            return _ends_with(data, begin, b'":"')
        stop = _string_end(data, begin)
        if stop == -1:
            return True
        try:
            text = orjson.loads(data[begin - 1 : stop + 1])
        except orjson.JSONDecodeError:
            return True
        new = self._tool_text(text, _TOOL_TEXTS[kind]) if isinstance(text, str) else None
        return False if new is None else (begin, stop, escaped(new))

    def _parsed(self, body: bytes) -> bytes:
        try:
            entry = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body
        return orjson.dumps(entry) if self._walk(entry) else body

    def _walk(self, obj: Any, depth: int = 0) -> bool:
        if depth > MAX_DEPTH:
            # No agent writes such lines; orjson.dumps and Python's stack would fail on them.
            raise BundleError(f"a transcript line is nested deeper than {MAX_DEPTH} levels")
        changed = False
        if isinstance(obj, dict):
            if obj.get("type") == "tool_result":
                changed |= self._tool_result(obj)
            for key, value in obj.items():
                if isinstance(value, str):
                    if key in PATH_KEYS and value.startswith("/"):
                        new = self.map.translate(value)
                        if new is not None and new != value:
                            obj[key] = new
                            changed = True
                elif isinstance(value, dict) and key == "trackedFileBackups":
                    new_backups, did = self._backups(value, depth + 1)
                    if did:
                        obj[key] = new_backups
                        changed = True
                elif isinstance(value, dict) and key == "backup":
                    tracking = obj.get("trackingPath")
                    if isinstance(tracking, str):
                        self._derive(tracking, value)
                    changed |= self._backup_name(value)
                    changed |= self._walk(value, depth + 1)
                elif isinstance(value, list) and key in PATH_LIST_KEYS:
                    changed |= self._path_list(value)
                elif isinstance(value, list) and key in ("rendered", "systemPrompt"):
                    changed |= self._client_texts(value, key)
                    changed |= self._walk(value, depth + 1)
                elif isinstance(value, dict | list):
                    changed |= self._walk(value, depth + 1)
        elif isinstance(obj, list):
            for item in obj:
                if isinstance(item, dict | list):
                    changed |= self._walk(item, depth + 1)
        return changed

    def _tool_result(self, block: dict[str, Any]) -> bool:
        """Translate the path in a fixed-format result text (string or text blocks)."""
        content = block.get("content")
        if isinstance(content, str):
            new = self._tool_text(content)
            if new is not None:
                block["content"] = new
                return True
            return False
        changed = False
        if isinstance(content, list):
            for item in content:
                text = item.get("text") if isinstance(item, dict) else None
                if isinstance(text, str) and item.get("type") == "text":
                    new = self._tool_text(text)
                    if new is not None:
                        item["text"] = new
                        changed = True
        return changed

    def _tool_text(self, text: str, *patterns: re.Pattern[str]) -> str | None:
        """`text` with its path translated if it is one of the fixed texts, else None."""
        for pattern in patterns or _TOOL_TEXTS:
            m = pattern.match(text)
            if m is not None:
                new = self.map.translate(m[1])
                if new is None or new == m[1]:
                    return None
                return text[: m.start(1)] + new + text[m.end(1) :]
        return None

    def _backups(self, tracked: dict[str, Any], depth: int) -> tuple[dict[str, Any], bool]:
        out: dict[str, Any] = {}
        changed = False
        for key, info in tracked.items():
            new_key = self.map.apply(key) if key.startswith("/") else key
            changed |= new_key != key
            if isinstance(info, dict):
                self._derive(key, info)
                changed |= self._backup_name(info)
                changed |= self._walk(info, depth + 1)  # realParentDir (2.1.332)
            out[new_key] = info
        return out, changed

    def _derive(self, key: str, info: dict[str, Any]) -> None:
        """In derive mode, the new name of the backup `info` names, from the path it keeps
        (the first path seen for a name wins, as export's backup_sources)."""
        name = info.get("backupFileName")
        if self.derive_cwd is None or not isinstance(name, str) or name in self._derived:
            return
        self._derived.add(name)
        absolute = key if key.startswith("/") else f"{self.derive_cwd.rstrip('/')}/{key}"
        _stem, sep, version = name.partition("@")
        if not sep:
            return
        new = f"{backup_hash(self.map.apply(absolute))}@{version}"
        if new != name and is_safe_name(new):
            self.backup_names[name] = new

    def _backup_name(self, info: dict[str, Any]) -> bool:
        """Rename a file-history backup (a snapshot's entry or a file-history-delta's)."""
        name = info.get("backupFileName")
        if isinstance(name, str) and name in self.backup_names:
            info["backupFileName"] = self.backup_names[name]
            return True
        return False

    def _path_list(self, items: list[Any]) -> bool:
        changed = False
        for i, item in enumerate(items):
            if isinstance(item, str) and item.startswith("/"):
                new = self.map.translate(item)
                if new is not None and new != item:
                    items[i] = new
                    changed = True
        return changed

    def _client_texts(self, items: list[Any], key: str) -> bool:
        """Paths in the texts Claude rendered itself (`rendered[].content`, `systemPrompt[]`)."""
        changed = False
        for i, item in enumerate(items):
            if key == "rendered" and isinstance(item, dict):
                text = item.get("content")
                if isinstance(text, str):
                    new = self._sub_paths(text, _RENDERED_TEXTS)
                    if new != text:
                        item["content"] = new
                        changed = True
            elif key == "systemPrompt" and isinstance(item, str):
                new = self._sub_paths(item, _PROMPT_TEXTS)
                if new != item:
                    items[i] = new
                    changed = True
        return changed

    def _sub_paths(self, text: str, patterns: tuple[re.Pattern[str], ...]) -> str:
        def one(m: re.Match[str]) -> str:
            new = self.map.translate(m[1])
            if new is None:
                return m[0]
            return m[0][: m.start(1) - m.start(0)] + new + m[0][m.end(1) - m.start(0) :]

        for pattern in patterns:
            text = pattern.sub(one, text)
        return text

    def copy(self, src: Path, out: BinaryIO) -> None:
        """Rewrite the file `src` line by line into `out`."""
        with src.open("rb") as fh:
            if self.is_identity:
                while chunk := fh.read(1 << 20):
                    out.write(chunk)
                return
            tail = b""
            while chunk := fh.read(CHUNK):
                data = tail + chunk if tail else chunk
                cut = data.rfind(b"\n") + 1
                tail = data[cut:]
                if cut:
                    out.write(self.block(data[:cut]))
            if tail:
                out.write(self.block(tail))


def _line_at(data: bytes, pos: int) -> tuple[int, int]:
    """(start, stop) of the line of `data` that holds index `pos`."""
    stop = data.find(b"\n", pos)
    return data.rfind(b"\n", 0, pos) + 1, len(data) if stop == -1 else stop


def _add_client_line(data: bytes, pos: int, lines: set[tuple[int, int]]) -> None:
    """Mark the line at `pos` to be parsed, unless it is a request copy (`api-request-blob`,
    `api-request-shape`): the client never sends those again, and their text is prose."""
    line = _line_at(data, pos)
    if line not in lines and _API_COPY not in data[line[0] : line[0] + 120]:
        lines.add(line)


def _mark_lines(
    data: bytes, needle: bytes, lines: set[tuple[int, int]], *, near_start: bool, then: bytes = b""
) -> None:
    """Add the lines holding `needle` (within a line's first 120 bytes if `near_start`;
    followed by `then` if given) to `lines`."""
    start = data.find(needle)
    while start != -1:
        line_start, line_stop = _line_at(data, start)
        if (not near_start or start - line_start < 120) and data.startswith(
            then, start + len(needle)
        ):
            lines.add((line_start, line_stop))
        start = data.find(needle, line_stop)


def _mark_records(data: bytes, lines: set[tuple[int, int]]) -> None:
    """Add the lines that are `file-history-snapshot` or `-delta` records (the type within
    a line's first 120 bytes) to `lines`: one search for both."""
    start = data.find(_RECORDS)
    while start != -1:
        line_start, line_stop = _line_at(data, start)
        if start - line_start < 120 and (
            data.startswith(_SNAPSHOT, start) or data.startswith(_DELTA, start)
        ):
            lines.add((line_start, line_stop))
            start = data.find(_RECORDS, line_stop)
        else:
            start = data.find(_RECORDS, start + 1)


def _ends_with(data: bytes, at: int, text: bytes) -> bool:
    """True if `text` ends right before index `at` of `data`."""
    return at >= len(text) and data.startswith(text, at - len(text))


def _string_end(data: bytes, begin: int) -> int:
    """Index of the quote that closes the JSON string starting at `begin`, or -1."""
    stop = data.find(b'"', begin)
    while stop != -1:
        slashes = 0
        while data[stop - 1 - slashes] == 0x5C:
            slashes += 1
        if slashes % 2 == 0:
            newline = data.find(b"\n", begin, stop)
            return stop if newline == -1 else -1
        stop = data.find(b'"', stop + 1)
    return -1


def backup_sources(transcript: Path, cwd: str) -> dict[str, str]:
    """Map each file-history backup name to the absolute path it backs up, from the
    `file-history-snapshot` entries and (Claude Code 2.1.332) the `file-history-delta` ones.

    Relative keys are taken relative to `cwd` (the session's project dir).
    """
    scan = BackupSources(cwd)
    with transcript.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            scan.feed(chunk)
    return scan.finish()


_RECORDS = b'"file-history-'


class BackupSources:
    """`backup_sources` fed chunk by chunk (lines may span chunks), so that the pass that
    packs a transcript finds them too."""

    def __init__(self, cwd: str) -> None:
        self.cwd = cwd
        self.found: dict[str, str] = {}
        self._tail = b""

    def feed(self, chunk: bytes, records: Iterable[int] | None = None) -> None:
        """`records`: where `chunk` has `"file-history-` (every occurrence, in order), if the
        caller searched for it already."""
        first = chunk.find(b"\n")
        if first == -1:
            self._tail += chunk
            return
        if self._tail or first:  # the line the last chunk began
            self._line(self._tail + chunk[:first])
        cut = chunk.rfind(b"\n") + 1
        self._tail = chunk[cut:]
        after = first  # a hit before this is in the line the last chunk began, or parsed
        for start in _finds(chunk, _RECORDS, first, cut) if records is None else records:
            if start < after or start >= cut:
                continue
            line_start = chunk.rfind(b"\n", 0, start) + 1
            line_stop = chunk.find(b"\n", start)
            if start - line_start < 120 and (
                chunk.startswith(_SNAPSHOT, start) or chunk.startswith(_DELTA, start)
            ):
                _snapshot_sources(chunk[line_start:line_stop], self.cwd, self.found)
                after = line_stop

    def _line(self, line: bytes) -> None:
        if _SNAPSHOT in line[:160] or _DELTA in line[:160]:
            at = min(i for i in (line.find(_SNAPSHOT), line.find(_DELTA)) if i != -1)
            if at < 120:
                _snapshot_sources(line, self.cwd, self.found)

    def finish(self) -> dict[str, str]:
        tail, self._tail = self._tail, b""
        if tail:
            self._line(tail)
        return self.found


def _finds(data: bytes, needle: bytes, start: int, stop: int) -> Iterator[int]:
    """Every place `needle` starts in data[start:stop], in order."""
    at = data.find(needle, start, stop)
    while at != -1:
        yield at
        at = data.find(needle, at + 1, stop)


def _snapshot_sources(raw: bytes, cwd: str, found: dict[str, str]) -> None:
    try:
        entry = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return
    if not isinstance(entry, dict):
        return
    snap = entry.get("snapshot")
    tracked = snap.get("trackedFileBackups") if isinstance(snap, dict) else None
    if not isinstance(tracked, dict):
        tracked = {entry.get("trackingPath"): entry.get("backup")}  # a file-history-delta
    for key, info in tracked.items():
        name = info.get("backupFileName") if isinstance(info, dict) else None
        if isinstance(name, str) and isinstance(key, str):
            absolute = key if key.startswith("/") else f"{cwd.rstrip('/')}/{key}"
            found.setdefault(name, absolute)
