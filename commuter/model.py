"""The values every layer trades in: who made a bundle, what it holds, how an import should
behave and what it did, a session on this machine. How to resume a placed session is its
backend's (commuter.backends.resume_command). Nothing here imports another commuter
module, so every layer can import this one (it is the bottom of the import graph)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Origin:
    """Who made a bundle: shown in `inspect` and in the import summary."""

    hostname: str
    user: str
    created_at: str
    commuter_version: str
    device_id: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Member:
    """One file in a bundle."""

    name: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Manifest:
    """What a bundle says about its session; `members` is filled from the digest."""

    format: int
    backend: str
    session_id: str
    project_dir: str
    created_at: str
    origin: Origin
    message_count: int
    git: dict[str, Any] | None
    meta: dict[str, Any]
    members: tuple[Member, ...]
    # A delta bundle: only what changed since a base the receiver holds (bundle/delta.py).
    delta: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class SessionRef:
    """One session on this machine, as `list` shows it."""

    backend: str
    session_id: str
    project: Path | None
    updated_at: datetime
    path: Path | None = None
    size: int = 0
    first_prompt: str | None = None
    has_messages: bool = True


@dataclass(frozen=True, slots=True)
class ImportOptions:
    """How an import should behave; the CLI fills it from flags and the terminal."""

    project_dir: Path | None = None
    replace: bool = False
    dry_run: bool = False
    assume_yes: bool = False
    interactive: bool = False
    origin: str | None = None
    # The bundle was sealed by a paired peer and its seal checked. Only then may its project
    # config add files missing here without a yes; anyone who can write to a shared folder can
    # drop a plain bundle, and CLAUDE.md or a command file steers the agent.
    sender_verified: bool = False
    # On a TTY the CLI passes a chooser: ask(question, choices) -> one of choices.
    ask: Callable[[str, tuple[str, ...]], str] | None = None


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What an import did."""

    session_id: str
    project_dir: Path
    action: str  # "created" | "updated" | "unchanged" | "forked" | "replaced" | "dry-run"
    transcript: Path | None = None
    backups: tuple[Path, ...] = ()
    warnings: tuple[str, ...] = ()
    original_session_id: str | None = None
    bundle_digest: str = ""
    origin: str | None = None  # who exported the bundle, and when
    planned: str | None = None  # with action "dry-run": what an import would do (an action)
    last_activity: float | None = None  # when the session was last written at its source
    backend: str = ""  # the backend that placed it (core.import_file fills it in)
    # What the backend noted about the placed session for its own resume/continue lines
    # (Claude Code: "print_mode", a session made by `claude -p`); no other layer reads it.
    extra: Mapping[str, object] = field(default_factory=dict, hash=False)
