"""Where Claude Code keeps a session: project-folder naming, id checks, fast session listing."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from commuter.errors import BackendError

if TYPE_CHECKING:
    from commuter.settings import Settings

_HEX = "[0-9a-fA-F]"
_UUID_RE = re.compile(rf"^{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}$")
_SAFE_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,199}$")
_SLUG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,199}$")
_DIGITS36 = "0123456789abcdefghijklmnopqrstuvwxyz"
CWD_RE = re.compile(rb'"cwd":"((?:[^"\\]|\\.)*)"')
HEAD_BYTES = 64 * 1024
_ENTRY_RE = re.compile(rb'"entrypoint":"([A-Za-z0-9_.-]{1,40})"')
# What Claude Code 2.1.332 accepts in CLAUDE_CODE_PROJECT_DIR_NAME (else it is ignored).
_PROJECT_DIR_NAME = re.compile(r"\A[A-Za-z0-9_-]{1,64}\Z")
_RESERVED_NAME = re.compile(r"\A(?:con|prn|aux|nul|com[0-9]|lpt[0-9])\Z", re.IGNORECASE)
# The variables Claude Code reads that decide where its sessions are.
CONFIG_DIR_VAR = "CLAUDE_CONFIG_DIR"
DIR_NAME_VAR = "CLAUDE_CODE_PROJECT_DIR_NAME"
ENV_VARS = (CONFIG_DIR_VAR, DIR_NAME_VAR)


def claude_project_folder(path: str) -> str:
    """Claude Code's folder name for a project path (session-formats.md §1.2)."""
    raw = path.encode("utf-16-le", "surrogatepass")
    codes = [int.from_bytes(raw[i : i + 2], "little") for i in range(0, len(raw), 2)]
    enc = "".join(
        chr(c) if (48 <= c <= 57 or 65 <= c <= 90 or 97 <= c <= 122) else "-" for c in codes
    )
    if len(enc) <= 200:
        return enc
    h = 0
    for c in codes:
        h = (h * 31 + c) & 0xFFFFFFFF
    value = abs(h - (1 << 32) if h & 0x80000000 else h)
    digits = ""
    while True:
        value, r = divmod(value, 36)
        digits = _DIGITS36[r] + digits
        if value == 0:
            return enc[:200] + "-" + digits


def real_project_path(path: Path) -> Path:
    """The path Claude records for a working directory: absolute, symlinks resolved."""
    return Path(os.path.realpath(path))


def is_session_id(value: str) -> bool:
    """True for a UUID, the only shape of session id we write paths from."""
    return bool(_UUID_RE.match(value))


def check_session_id(value: str) -> str:
    """Return `value` if it is a valid session id, else raise BackendError."""
    if not is_session_id(value):
        raise BackendError(f"invalid session id {value!r}")
    return value


def is_project_dir_name(name: str) -> bool:
    """True for a CLAUDE_CODE_PROJECT_DIR_NAME value Claude Code uses (others it ignores)."""
    return bool(_PROJECT_DIR_NAME.match(name)) and not _RESERVED_NAME.match(name)


def is_safe_name(value: str) -> bool:
    """True for a single harmless file name (task, tool-result, backup names)."""
    return bool(_SAFE_NAME_RE.match(value)) and ".." not in value


def is_safe_slug(value: str) -> bool:
    """True for a plan slug we may turn into plans/<slug>.md."""
    return bool(_SLUG_RE.match(value))


@dataclass(frozen=True, slots=True)
class ClaudeDirs:
    """The Claude Code directories of one machine."""

    root: Path
    # CLAUDE_CODE_PROJECT_DIR_NAME (Claude Code 2.1.234+): the one folder Claude then uses for
    # every project's sessions and memory. It honours it only beside CLAUDE_CONFIG_DIR and for
    # a plain name (is_project_dir_name).
    dir_name: str | None = None

    @classmethod
    def of(cls, settings: Settings) -> ClaudeDirs:
        """The dirs of `settings.home`, moved by CLAUDE_CONFIG_DIR as Claude Code does."""
        config_dir = settings.env.get(CONFIG_DIR_VAR)
        root = Path(config_dir) if config_dir else settings.home / ".claude"
        name = settings.env.get(DIR_NAME_VAR) or ""
        return cls(root, name if config_dir and is_project_dir_name(name) else None)

    @property
    def projects(self) -> Path:
        return self.root / "projects"

    def project_folder(self, project: Path | str) -> Path:
        """Where Claude writes the sessions of `project` (and reads its memory)."""
        return self.projects / (self.dir_name or claude_project_folder(str(project)))

    def memory(self, folder: Path) -> Path:
        """The auto-memory of the project whose sessions are in `folder`."""
        return folder / "memory"

    def file_history(self, sid: str) -> Path:
        return self.root / "file-history" / sid

    def tasks(self, sid: str) -> Path:
        return self.root / "tasks" / sid

    def plan(self, slug: str) -> Path:
        return self.root / "plans" / f"{slug}.md"

    @property
    def history(self) -> Path:
        return self.root / "history.jsonl"

    @property
    def sessions_dir(self) -> Path:
        return self.root / "sessions"


@dataclass(frozen=True, slots=True)
class TranscriptHead:
    """What the first bytes of a transcript tell: cwd, first prompt, whether it has messages."""

    cwd: str | None
    first_prompt: str | None
    has_messages: bool


def read_head(path: Path, limit: int = HEAD_BYTES) -> TranscriptHead:
    """Read only the head of a transcript (never the whole file)."""
    try:
        with path.open("rb") as fh:
            data = fh.read(limit)
    except OSError:
        return TranscriptHead(None, None, False)
    cwd: str | None = None
    prompt: str | None = None
    has_messages = b'"type":"user"' in data or b'"type":"assistant"' in data
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(entry, dict):
            continue
        if cwd is None and isinstance(entry.get("cwd"), str):
            cwd = entry["cwd"]
        if prompt is None and entry.get("type") == "user" and not entry.get("isMeta"):
            prompt = _prompt_text(entry.get("message"))
        if cwd is not None and prompt is not None:
            break
    if cwd is None:
        match = CWD_RE.search(data)
        if match:
            try:
                cwd = orjson.loads(b'"' + match.group(1) + b'"')
            except orjson.JSONDecodeError:
                cwd = None
    return TranscriptHead(cwd, prompt, has_messages)


def _prompt_text(message: object) -> str | None:
    if not isinstance(message, dict):
        return None
    content = message.get("content")
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        texts = [b.get("text") for b in content if isinstance(b, dict) and b.get("type") == "text"]
        text = next((t for t in texts if isinstance(t, str)), "")
    else:
        return None
    text = " ".join(text.split())
    return text or None


@dataclass(frozen=True, slots=True)
class TranscriptFile:
    """One `<sid>.jsonl` found under projects/."""

    session_id: str
    path: Path
    mtime: float
    size: int

    @property
    def updated_at(self) -> datetime:
        return datetime.fromtimestamp(self.mtime, UTC)


def iter_transcripts(dirs: ClaudeDirs, folder: Path | None = None) -> Iterator[TranscriptFile]:
    """Every session transcript (in one project folder, or all), unsorted."""
    folders = [folder] if folder is not None else _subdirs(dirs.projects)
    for sub in folders:
        try:
            entries = list(os.scandir(sub))
        except OSError:
            continue
        for entry in entries:
            name = entry.name
            if not name.endswith(".jsonl") or not is_session_id(name[:-6]):
                continue
            try:
                st = entry.stat()
            except OSError:
                continue
            yield TranscriptFile(name[:-6], Path(entry.path), st.st_mtime, st.st_size)


def project_folders_for(dirs: ClaudeDirs, project: Path) -> list[Path]:
    """The folders `claude --continue` searches for `project`: the exact one, plus
    same-200-prefix ones; with CLAUDE_CODE_PROJECT_DIR_NAME set, only that one."""
    if dirs.dir_name:
        return [dirs.projects / dirs.dir_name]
    name = claude_project_folder(str(project))
    exact = dirs.projects / name
    if len(name) <= 200:
        return [exact]
    others = [p for p in _subdirs(dirs.projects) if p.name.startswith(name[:200] + "-")]
    return [exact, *[p for p in others if p != exact]]


def _subdirs(path: Path) -> list[Path]:
    try:
        return [Path(e.path) for e in os.scandir(path) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def read_entrypoint(transcript: Path) -> str | None:
    """The `entrypoint` of the first entry that has one (cli = interactive, sdk-cli = -p)."""
    with transcript.open("rb") as fh:
        data = fh.read(64 * 1024)
    match = _ENTRY_RE.search(data)
    return match.group(1).decode(errors="replace") if match else None
