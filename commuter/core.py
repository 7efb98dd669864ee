"""The core operations the CLI, the peer server and the transports call: export and import.

Contract (owned by the core; other layers use only what is here):
- export_to(settings, out, session=ID-or-prefix | None, cwd=Path) writes one bundle to a binary
  file object and returns its Manifest. With session=None the newest session of `cwd` is taken.
- import_file(settings, path, options) verifies the whole bundle before writing anything, then
  places the session so `claude --continue` in the target project finds it, and returns an
  ImportResult. Raises BundleError for bad input, ConsentRequired / SessionBusy where a local
  file would otherwise be lost.
- read_manifest(path) reads only what `inspect` needs.
- list_sessions(settings) yields SessionRef, newest first.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class ImportOptions:
    """How an import should behave; the CLI fills it from flags and the terminal."""

    project_dir: Path | None = None
    replace: bool = False
    dry_run: bool = False
    assume_yes: bool = False
    interactive: bool = False
    origin: str | None = None


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

    def resume_command(self) -> str:
        """The command a person runs to continue the session."""
        return f"cd {shlex.quote(str(self.project_dir))} && claude --resume {self.session_id}"

    def continue_command(self) -> str:
        return f"cd {shlex.quote(str(self.project_dir))} && claude --continue"


@dataclass(frozen=True, slots=True)
class Origin:
    """Who made a bundle: shown in `inspect` and in the import summary."""

    hostname: str
    user: str
    created_at: str
    commuter_version: str
    device_id: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
