"""Gemini CLI chat files (session-formats.md §3): where they are, what one holds, the slug rule
and projects.json, and the path rewrite of the fields gemini sends again on a resume."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ENV_VARS = ("GEMINI_CLI_HOME",)
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# A subagent chat's name in chats/<parent sid>/ (a uuid in 0.61.0; any plain name is kept).
SUB_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}\.jsonl?$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,199}$")
MAX_CHAT = 512 << 20
MAX_SUBAGENTS = 2000
CONTEXT_TAG = "<session_context>"


def is_session_id(text: str) -> bool:
    return bool(UUID_RE.match(text))


@dataclass(frozen=True, slots=True)
class GeminiDirs:
    root: Path  # ~/.gemini (or $GEMINI_CLI_HOME/.gemini)

    @classmethod
    def of(cls, home: Path, env: dict[str, str]) -> GeminiDirs:
        base = env.get("GEMINI_CLI_HOME") or str(home)
        return cls(Path(base) / ".gemini")

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def history(self) -> Path:
        return self.root / "history"

    @property
    def projects_json(self) -> Path:
        return self.root / "projects.json"


def slugify(path: str) -> str:
    """The slug gemini gives a project folder before collision suffixes."""
    base = re.sub(r"-+", "-", re.sub(r"[^a-z0-9]", "-", os.path.basename(path).lower()))
    return base.strip("-") or "project"


def project_hash(path: str) -> str:
    return hashlib.sha256(path.encode()).hexdigest()


def read_projects(dirs: GeminiDirs) -> dict[str, str]:
    """projects.json's {path: slug}; {} if missing or not readable as one."""
    try:
        data = json.loads(dirs.projects_json.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    projects = data.get("projects") if isinstance(data, dict) else None
    if not isinstance(projects, dict):
        return {}
    return {k: v for k, v in projects.items() if isinstance(k, str) and isinstance(v, str)}


def marker(folder: Path) -> str | None:
    """The project path in `folder`/.project_root, or None."""
    try:
        return (folder / ".project_root").read_text(encoding="utf-8").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def slug_of(dirs: GeminiDirs, project: str) -> str | None:
    """The slug gemini uses for `project` if it has one here (projects.json when the markers
    agree, else any tmp/ or history/ folder whose marker names it)."""
    slug = read_projects(dirs).get(project)
    if (
        slug
        and SLUG_RE.match(slug)
        and all(marker(base / slug) in (None, project) for base in (dirs.tmp, dirs.history))
    ):
        return slug
    for base in (dirs.tmp, dirs.history):
        try:
            names = sorted(os.listdir(base))
        except OSError:
            continue
        for name in names:
            if marker(base / name) == project:
                return name
    return None


def claim_slug(dirs: GeminiDirs, project: str) -> str:
    """The slug gemini would claim for a new project: the base slug, else `-1`, `-2`, …"""
    taken = set(read_projects(dirs).values())
    base = slugify(project)
    for counter in range(100000):
        candidate = base if counter == 0 else f"{base}-{counter}"
        if candidate in taken:
            continue
        owners = [marker(b / candidate) for b in (dirs.tmp, dirs.history)]
        if any(o is not None and o != project for o in owners):
            continue
        if any(
            (b / candidate).exists() and not (b / candidate).is_dir()
            for b in (dirs.tmp, dirs.history)
        ):
            continue
        return candidate
    raise RuntimeError("no free gemini slug")  # pragma: no cover


# --- one chat --------------------------------------------------------------------------------


@dataclass(slots=True)
class Chat:
    """What a chat file holds once its records are applied."""

    session_id: str | None = None
    kind: str = "main"
    start_time: str = ""
    last_updated: str = ""
    project_hash: str = ""
    ids: list[str] = field(default_factory=list)
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def has_messages(self) -> bool:
        """At least one user or model message besides the `<session_context>` one (what
        gemini's cleanup keeps and `--resume` offers)."""
        for mid in self.ids:
            msg = self.messages[mid]
            if msg.get("type") == "gemini" and (
                _text(msg.get("content")).strip() or msg.get("toolCalls") or msg.get("thoughts")
            ):
                return True
            if msg.get("type") == "user" and not _is_context(msg):
                return True
        return False

    def first_prompt(self) -> str | None:
        for mid in self.ids:
            msg = self.messages[mid]
            if msg.get("type") == "user" and not _is_context(msg):
                text = _text(msg.get("content"))
                if text:
                    return text
        return None

    def workspace(self) -> str | None:
        """The first workspace folder named in the `<session_context>` message."""
        for mid in self.ids:
            msg = self.messages[mid]
            if _is_context(msg):
                found = re.search(
                    r"\*\*Workspace Directories:\*\*\n\s+- (/[^\n]*)", _text(msg.get("content"))
                )
                if found:
                    return found.group(1)
        return None


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p.get("text", "")
            for p in content
            if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def _is_context(msg: dict[str, Any]) -> bool:
    return msg.get("type") == "user" and _text(msg.get("content")).lstrip().startswith(CONTEXT_TAG)


def _apply(chat: Chat, record: Any) -> None:
    if not isinstance(record, dict):
        return
    if "$set" in record:
        update = record["$set"]
        if not isinstance(update, dict):
            return
        if isinstance(update.get("lastUpdated"), str):
            chat.last_updated = update["lastUpdated"]
        if isinstance(update.get("startTime"), str):  # gemini merges any key of a $set
            chat.start_time = update["startTime"]
        if isinstance(update.get("sessionId"), str):
            chat.session_id = update["sessionId"]
        if isinstance(update.get("messages"), list):
            chat.ids, chat.messages = [], {}
            for msg in update["messages"]:
                _message(chat, msg)
        return
    if "$rewindTo" in record:
        target = record["$rewindTo"]
        # as gemini reads it: that message and all later ones go; an unknown id clears all
        cut = chat.ids.index(target) if target in chat.messages else 0
        for mid in chat.ids[cut:]:
            del chat.messages[mid]
        chat.ids = chat.ids[:cut]
        return
    if "sessionId" in record and "id" not in record:
        chat.session_id = str(record["sessionId"])
        chat.kind = str(record.get("kind") or "main")
        chat.start_time = str(record.get("startTime") or "")
        chat.last_updated = str(record.get("lastUpdated") or chat.start_time)
        chat.project_hash = str(record.get("projectHash") or "")
        if isinstance(record.get("messages"), list):  # the older whole-file .json
            for msg in record["messages"]:
                _message(chat, msg)
        return
    _message(chat, record)


def _message(chat: Chat, msg: Any) -> None:
    if not isinstance(msg, dict) or not isinstance(msg.get("id"), str):
        return
    if msg["id"] not in chat.messages:
        chat.ids.append(msg["id"])
    chat.messages[msg["id"]] = msg


def records(path: Path) -> Iterator[Any]:
    """The JSON records of a chat file (a `.json` file is one record); bad lines skipped."""
    with path.open("rb") as fh:
        if path.suffix == ".json":
            try:
                yield json.loads(fh.read(MAX_CHAT))
            except (ValueError, RecursionError):
                return
            return
        for line in fh:
            if line.strip():
                try:
                    record = json.loads(line)
                except (ValueError, RecursionError):  # gemini skips a line it cannot parse
                    continue
                yield record


def read_chat(path: Path) -> Chat:
    chat = Chat()
    for record in records(path):
        _apply(chat, record)
    return chat


def parse_time(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def iso_ms(moment: datetime) -> str:
    """A time as gemini writes it: UTC, milliseconds, `Z`."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def now_iso() -> str:
    return (
        datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        + f"{datetime.now(UTC).microsecond // 1000:03d}Z"
    )


def file_name(start_time: str, sid: str, suffix: str = ".jsonl") -> str:
    """`session-<YYYY-MM-DDTHH-MM>-<first 8 of sid>.jsonl`, the minute of the start (UTC)."""
    moment = parse_time(start_time) or datetime.now(UTC)
    return f"session-{moment.astimezone(UTC).strftime('%Y-%m-%dT%H-%M')}-{sid[:8]}{suffix}"


@dataclass(frozen=True, slots=True)
class ChatFile:
    path: Path
    folder: Path  # the tmp/<slug> folder
    chat: Chat


def chat_files(dirs: GeminiDirs, folder: Path | None = None) -> Iterator[ChatFile]:
    """Main chats directly in tmp/*/chats/ (or one folder's), newest last-update first per
    folder; subagent chats and unreadable files are left out."""
    folders = [folder] if folder is not None else _folders(dirs.tmp)
    for slug_dir in folders:
        chats = slug_dir / "chats"
        try:
            names = sorted(os.listdir(chats))
        except OSError:
            continue
        for name in names:
            if not (name.startswith("session-") and name.endswith((".json", ".jsonl"))):
                continue
            path = chats / name
            try:
                if not path.is_file() or path.stat().st_size > MAX_CHAT:
                    continue
                chat = read_chat(path)
            except (OSError, UnicodeDecodeError):
                continue
            if chat.session_id and chat.kind != "subagent" and is_session_id(chat.session_id):
                yield ChatFile(path, slug_dir, chat)


def _folders(base: Path) -> list[Path]:
    try:
        return [base / n for n in sorted(os.listdir(base)) if (base / n).is_dir()]
    except OSError:
        return []


def project_of(dirs: GeminiDirs, cf: ChatFile, projects: dict[str, str]) -> str | None:
    """The project a chat belongs to: its folder's marker, projects.json, the folder's
    sha256 name (older scheme) checked against the workspace it names, or that workspace."""
    owner = marker(cf.folder)
    if owner:
        return owner
    for path, slug in projects.items():
        if slug == cf.folder.name:
            return path
    workspace = cf.chat.workspace()
    if workspace and SHA256_RE.match(cf.folder.name) and project_hash(workspace) != cf.folder.name:
        return None
    return workspace


def folders_for(dirs: GeminiDirs, project: str) -> list[Path]:
    """The tmp/ folders that hold `project`'s chats (slug and older sha256 folder)."""
    out: list[Path] = []
    slug = slug_of(dirs, project)
    if slug:
        out.append(dirs.tmp / slug)
    legacy = dirs.tmp / project_hash(project)
    if legacy.is_dir():
        out.append(legacy)
    return out


# --- rewrite ----------------------------------------------------------------------------------

# Keys whose string value is a path (tool args, subagent folders).
PATH_KEYS = frozenset(
    {
        "file_path",
        "dir_path",
        "path",
        "absolute_path",
        "directory",
        "directories",
        "cwd",
        "workspace",
        "paths",
        "include_directories",
    }
)
# Subtrees whose texts gemini's own tools wrote (output of tools, their display): paths in
# them are translated wherever they stand.
TEXT_KEYS = frozenset({"functionResponse", "resultDisplay", "result"})


class Rewriter:
    """Translate source paths to target paths in the fields of §3.3."""

    def __init__(self, pairs: list[tuple[str, str]], old_sid: str = "", new_sid: str = ""):
        seen: dict[str, str] = {}
        for src, dst in pairs:
            src, dst = src.rstrip("/") or "/", dst.rstrip("/") or "/"
            if src != dst and src != "/" and src not in seen:
                seen[src] = dst
        self.pairs = sorted(seen.items(), key=lambda p: len(p[0]), reverse=True)
        self.old_sid, self.new_sid = old_sid, new_sid
        if self.pairs:
            alternatives = "|".join(re.escape(s) for s, _ in self.pairs)
            self._re: re.Pattern[str] | None = re.compile(
                rf"(?<![\w./-])({alternatives})(?=$|[/\s\"'`:),;\]}}>])"
            )
        else:
            self._re = None
        self._map = dict(self.pairs)

    def path(self, text: str) -> str:
        for src, dst in self.pairs:
            if text == src or text.startswith(src + "/"):
                return dst + text[len(src) :]
        return text

    def text(self, text: str) -> str:
        if self._re is None:
            return text
        return self._re.sub(lambda m: self._map[m.group(1)], text)

    def record(self, record: Any) -> Any:
        if isinstance(record, dict):
            if self.new_sid and record.get("sessionId") == self.old_sid:
                record = {**record, "sessionId": self.new_sid}
            update = record.get("$set")
            if (
                isinstance(update, dict)
                and self.new_sid
                and update.get("sessionId") == self.old_sid
            ):
                record = {**record, "$set": {**update, "sessionId": self.new_sid}}
        return self._walk(record, key=None, texts=False)

    def _walk(self, value: Any, key: str | None, texts: bool) -> Any:
        if isinstance(value, str):
            if texts or value.lstrip().startswith(CONTEXT_TAG):
                return self.text(value)
            if key in PATH_KEYS:
                return self.path(value)
            return value
        if isinstance(value, list):
            return [self._walk(v, key, texts) for v in value]
        if isinstance(value, dict):
            return {
                k: self._walk(v, k if not isinstance(v, (dict,)) else None, texts or k in TEXT_KEYS)
                for k, v in value.items()
            }
        return value

    def copy(self, src: Path, out: Any, touch: str | None = None, start: str | None = None) -> None:
        """Write `src` rewritten to the binary stream `out` (one record a line); an older
        whole-file `.json` chat gets `lastUpdated` = `touch` and `startTime` = `start` when
        given."""
        if src.suffix == ".json":
            for record in records(src):
                record = self.record(record)
                if touch and isinstance(record, dict):
                    record["lastUpdated"] = touch
                if start and isinstance(record, dict):
                    record["startTime"] = start
                out.write(json.dumps(record, ensure_ascii=False, indent=2).encode())
            return
        with src.open("rb") as fh:
            for line in fh:
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    out.write(line if line.endswith(b"\n") else line + b"\n")
                    continue
                out.write(
                    json.dumps(
                        self.record(record), ensure_ascii=False, separators=(",", ":")
                    ).encode()
                    + b"\n"
                )
