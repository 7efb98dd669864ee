"""What every backend's import shares: the target project, the git-state prompt, backups of
local files it replaces, the project config a bundle may bring (and the consent it takes), and
the pending write that makes all of a session's files appear together or not at all."""

from __future__ import annotations

import contextlib
import errno
import filecmp
import os
import shutil
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from commuter import fsutil
from commuter.errors import BackendError

if TYPE_CHECKING:
    from commuter.backends import ImportSource
    from commuter.model import ImportOptions
    from commuter.settings import Settings

# Export carries project files up to 1 MiB; a bundle with more is not one commuter made, and
# these members are compared and written whole.
MAX_PROJECT_MEMBER = 1 << 20


# --- where the session goes -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """The local project dir for an incoming session, and the config's path-maps used to find
    it (a backend's rewriter applies them both ways)."""

    project: Path
    path_maps: tuple[tuple[str, str], ...]


def resolve_target(settings: Settings, source: ImportSource, options: ImportOptions) -> Target:
    """--project-dir, else the path-maps, else the same git repo, else the source path (see
    pathmap.resolve_target_project)."""
    from commuter import config
    from commuter.pathmap import resolve_target_project

    maps = tuple(config.load(settings).path_maps)
    project = resolve_target_project(
        source.project_dir,
        override=options.project_dir,
        config_maps=maps,
        cwd=Path.cwd(),
        git=source.git,
    )
    return Target(project, maps)


def confirm_git_state(source: ImportSource, target: Path, options: ImportOptions) -> list[str]:
    """How the source's git state differs from the target's, as warnings; on a terminal the
    person is asked to go on (a no: BackendError, nothing written)."""
    from commuter import gitstate

    warnings = gitstate.import_warnings(source.git, target)
    if warnings and not options.dry_run and options.interactive and options.ask is not None:
        question = "; ".join(warnings) + ". Import anyway?"
        if options.ask(question, ("yes", "no")) != "yes":
            raise BackendError("import cancelled; nothing was written")
    return warnings


# --- backups --------------------------------------------------------------------------------


class Backups:
    """Copies of local files an import replaces: `<backups_dir>/<UTC stamp>-<sid>-<rand>/`,
    one new folder for each call."""

    def __init__(self, settings: Settings) -> None:
        self.root = settings.backups_dir

    def folder(self, sid: str) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        path = self.root / f"{stamp}-{sid}-{uuid.uuid4().hex[:6]}"
        path.mkdir(parents=True, mode=0o700)
        return path

    def session(self, sid: str, transcript: Path, *dirs: Path) -> Path:
        """Copy a transcript and the folders that belong to it (symlinks kept as links);
        returns the transcript's copy."""
        folder = self.folder(sid)
        shutil.copy2(transcript, folder / transcript.name)
        for side in dirs:
            if side.is_dir():
                shutil.copytree(side, folder / side.name, symlinks=True)
        return folder / transcript.name

    def file(self, sid: str, path: Path, rel: str | None = None) -> Path:
        """Copy one file, as `rel` (a relative name, folders made) or by its own name."""
        dest = self.folder(sid) / (rel or path.name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest)
        return dest


# --- project config -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProjectConfig:
    """The project files a backend's agent reads and a bundle may therefore bring."""

    files: tuple[str, ...]  # relative names, e.g. CLAUDE.md
    dirs: tuple[str, ...] = ()  # folders whose files may come, e.g. .claude/commands
    # Files that make the agent run commands (hooks): always asked about, written 0600.
    runs_commands: tuple[str, ...] = ()
    steers: str = "steers the agent"  # what the others do, in a question
    runs: str = "can run commands"
    # Never written inside (the agent's own config, which a session of ~ would reach).
    own_dir: Path | None = None
    own_dir_name: str = "the agent's own config dir"

    def allows(self, rel: str) -> bool:
        return rel in self.files or any(rel.startswith(d.rstrip("/") + "/") for d in self.dirs)


@dataclass(frozen=True, slots=True)
class ProjectFile:
    """One project file of a bundle that may be written: member, destination, relative name."""

    src: Path
    dest: Path
    rel: str


def project_targets(
    source: ImportSource, target: Path, spec: ProjectConfig, warnings: list[str]
) -> list[ProjectFile]:
    """The bundle's `project/` members that `spec` allows and that stay inside `target`."""
    out: list[ProjectFile] = []
    root = os.path.realpath(target)
    own = os.path.realpath(spec.own_dir) if spec.own_dir is not None else None
    for member in source.members:
        if not member.startswith("project/"):
            continue
        rel = member[len("project/") :]
        if not spec.allows(rel):
            continue
        if ".." in rel.split("/") or rel.startswith("/") or "\\" in rel:
            continue
        dest = target / rel
        real = os.path.realpath(dest)
        if not real.startswith(root + os.sep):
            continue
        if own is not None and (real == own or real.startswith(own + os.sep)):
            # A session of ~ itself: its "project" config is the agent's own user config.
            warnings.append(
                f"did not write the bundle's {rel}: it would land in "
                f"{spec.own_dir_name} {spec.own_dir}"
            )
            continue
        src = source.member(member)
        if src.stat().st_size > MAX_PROJECT_MEMBER:
            warnings.append(f"did not write the bundle's {rel}: larger than 1 MiB")
            continue
        out.append(ProjectFile(src, dest, rel))
    return out


def project_conflicts(
    source: ImportSource, target: Path, spec: ProjectConfig, options: ImportOptions
) -> list[str]:
    """What `write_project_files` would keep or ask about, as --dry-run's warnings."""
    warnings: list[str] = []
    for f in project_targets(source, target, spec, warnings):
        if f.dest.is_file() and not filecmp.cmp(f.dest, f.src, shallow=False):
            warnings.append(
                f"{f.rel} differs from the local one (import keeps the local one without --yes)"
            )
        elif f.rel in spec.runs_commands and not f.dest.exists():
            warnings.append(
                f"the bundle brings {f.rel}, which {spec.runs}; import writes it only with --yes"
            )
        elif not f.dest.exists() and not options.sender_verified:
            warnings.append(
                f"the bundle brings {f.rel} but is not sealed by a paired peer; "
                "import writes it only with --yes"
            )
    return warnings


def write_project_files(
    source: ImportSource,
    target: Path,
    spec: ProjectConfig,
    options: ImportOptions,
    *,
    backups: Backups,
    sid: str,
    warnings: list[str],
    backed_up: list[Path],
) -> None:
    """Write project config. Replacing a different local file, adding one that runs commands,
    or adding any from a bundle not sealed by a paired peer takes consent (a yes on a
    terminal or --yes); a replaced file is backed up first."""
    for f in project_targets(source, target, spec, warnings):
        data = f.src.read_bytes()
        if f.dest.is_file() and f.dest.read_bytes() == data:
            continue
        if f.dest.exists() and not f.dest.is_file():
            warnings.append(f"kept your {f.rel}; it is not a regular file")
            continue
        replacing = f.dest.is_file()
        runs = f.rel in spec.runs_commands
        asks = replacing or runs or not options.sender_verified
        if asks and not consent(options, f.rel, replacing, spec):
            warnings.append(kept(f.rel, replacing, spec))
            continue
        if replacing:
            backed_up.append(backups.file(sid, f.dest, f.rel))
        f.dest.parent.mkdir(parents=True, exist_ok=True)
        fsutil.sweep_temps(f.dest.parent)
        fsutil.atomic_write_bytes(f.dest, data, 0o600 if runs else 0o644)


def kept(rel: str, replacing: bool, spec: ProjectConfig) -> str:
    """The warning for a project file that was not written."""
    if replacing:
        return f"kept your {rel}; the bundle's differs (--yes takes it)"
    if rel in spec.runs_commands:
        return f"did not write the bundle's {rel}: it {spec.runs}; --yes takes it"
    return (
        f"did not write the bundle's {rel}: the bundle is not sealed by a paired peer "
        "(--yes takes it)"
    )


def consent(options: ImportOptions, rel: str, replacing: bool, spec: ProjectConfig) -> bool:
    """--yes, or a yes on a terminal, to write the bundle's `rel`."""
    if options.assume_yes:
        return True
    if not (options.interactive and options.ask is not None):
        return False
    kind = spec.runs if rel in spec.runs_commands else spec.steers
    unsealed = "" if options.sender_verified else " (not sealed by a paired peer)"
    question = (
        f"the bundle's {rel} differs from yours and {kind}; replace yours?"
        if replacing
        else f"the bundle{unsealed} brings {rel}, which {kind}; write it?"
    )
    return options.ask(question, ("no", "yes")) == "yes"


# --- writing --------------------------------------------------------------------------------


class Pending:
    """Temp files beside their destinations, renamed together by `commit` (the one written
    first, last), or appended to a destination that must still be as long as it was (after
    every rename); if the block fails before that, the temps and the folders made are
    removed."""

    def __init__(self) -> None:
        self._files: list[tuple[str, Path]] = []
        self._appends: list[tuple[str, Path, int]] = []
        self._made: list[Path] = []
        self._done = False

    def __enter__(self) -> Pending:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._done:
            return
        for tmp in [f[0] for f in self._files] + [a[0] for a in self._appends]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        for made in reversed(self._made):
            with contextlib.suppress(OSError):
                made.rmdir()

    def folder(self, path: Path) -> None:
        """Make `path` (0700) and any missing parents, remembering which were made."""
        missing: list[Path] = []
        at = path
        while not os.path.lexists(at):
            missing.append(at)
            at = at.parent
        if not at.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(at))
        for made in reversed(missing):
            made.mkdir(mode=0o700)
            os.chmod(made, 0o700)
            self._made.append(made)

    @contextlib.contextmanager
    def writer(self, dest: Path, *, fsync: bool = False) -> Iterator[BinaryIO]:
        """A temp file beside `dest` (0600), renamed to it at commit."""
        # Side files are many and small: not fsynced one by one (144 fsyncs cost 0.3 s).
        self.folder(dest.parent)
        with fsutil.temp_writer(dest, 0o600, fsync=fsync, parents=False) as (out, tmp):
            yield out
        self._files.append((tmp, dest))

    @contextlib.contextmanager
    def appender(self, dest: Path, size: int) -> Iterator[BinaryIO]:
        """A temp file beside `dest` whose bytes `commit` appends to `dest`, which must be
        `size` bytes long then (nothing is appended to a file that changed meanwhile). The
        temp is never renamed into place, so it is not fsynced: the append is."""
        with fsutil.temp_writer(dest, 0o600, fsync=False, parents=False) as (out, tmp):
            yield out
        self._appends.append((tmp, dest, size))

    def copy(self, src: Path, dest: Path) -> None:
        with src.open("rb") as fh, self.writer(dest) as out:
            shutil.copyfileobj(fh, out, 1 << 20)

    def commit(self) -> None:
        # Each destination to append to is opened (and checked) before anything changes.
        appends: list[tuple[int, str, int]] = []
        try:
            for tmp, dest, size in self._appends:
                appends.append((_open_append(dest, size), tmp, size))
            for tmp, dest in [*self._files[1:], *self._files[:1]]:
                os.replace(tmp, dest)
            for fd, tmp, size in appends:
                _append(fd, tmp, size)
        finally:
            for fd, _tmp, _size in appends:
                os.close(fd)
        self._done = True


def _open_append(dest: Path, size: int) -> int:
    """`dest` open for writing, if it is still the regular file of `size` bytes it was (no
    symlink followed)."""
    changed = f"{dest} changed while it was being updated"
    flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(dest, flags)
    except OSError as exc:
        raise BackendError(f"{changed} ({exc.strerror or exc}); import again") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size != size:
        os.close(fd)
        raise BackendError(f"{changed}; import again")
    return fd


def _append(fd: int, tmp: str, size: int) -> None:
    """`tmp`'s bytes after the first `size` bytes of the file `fd`, on disk (fsynced), then
    `tmp` removed; if that fails, the file is cut back to `size`."""
    try:
        with open(tmp, "rb") as src:
            at = size
            while chunk := src.read(fsutil.CHUNK):
                view = memoryview(chunk)
                while view:
                    n = os.pwrite(fd, view, at)
                    view, at = view[n:], at + n
        os.fsync(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, size)
        raise
    os.unlink(tmp)


def project_members(
    project: Path,
    files: tuple[str, ...],
    dirs: tuple[str, ...],
    *,
    max_size: int = 1 << 20,
    max_count: int = 500,
) -> list[tuple[str, Path | bytes]]:
    """Export side of a backend's project config: `project/<rel>` members for the regular
    `files` and everything under `dirs` (no symlinks followed, each at most `max_size`, names
    UTF-8, at most `max_count` in all)."""
    if not project.is_dir():
        return []
    found: list[tuple[str, Path | bytes]] = []
    for rel in files:
        path = project / rel
        if path.is_file() and not path.is_symlink() and path.stat().st_size <= max_size:
            found.append((f"project/{rel}", path))
    for rel_dir in dirs:
        base = project / rel_dir
        if not base.is_dir() or base.is_symlink():
            continue
        for root, subdirs, names in os.walk(base):
            subdirs[:] = sorted(d for d in subdirs if not Path(root, d).is_symlink())
            for name in sorted(names):
                path = Path(root, name)
                if path.is_symlink() or not path.is_file() or path.stat().st_size > max_size:
                    continue
                rel = path.relative_to(project).as_posix()
                if not _is_utf8(rel):  # a bundle member name must be UTF-8: leave it home
                    continue
                found.append((f"project/{rel}", path))
                if len(found) >= max_count:
                    return found
    return found


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes, kept by the filesystem decoder as surrogates
        return False
    return True


@dataclass(frozen=True, slots=True)
class Sides:
    """The two copies of a diverged session, for the fork / replace / cancel question: each
    one's message count and last prompt, and how many local messages `replace` discards."""

    local_messages: int
    local_prompt: str | None
    incoming_messages: int
    incoming_prompt: str | None
    discarded: int


def _prompt_text(text: str | None, width: int = 60) -> str:
    if not text:
        return "(no prompt)"
    flat = " ".join(text.split())
    if len(flat) > width:  # cut at a word boundary, never mid-word
        flat = flat[:width].rsplit(" ", 1)[0] + " …"
    return f'"{flat}"'


def divergence_question(sid: str, origin: str | None, sides: Sides | None) -> str:
    """The question asked on a terminal when both copies of `sid` went on (several lines)."""
    where = f" from {origin}" if origin else ""
    lines = [f"the bundle{where} holds session {sid}; both it and the local copy have new messages"]
    if sides is not None:

        def count(n: int) -> str:
            return f"{n} message{'s' if n != 1 else ''}"

        lines += [
            f"  here:   {count(sides.local_messages)}, last prompt "
            f"{_prompt_text(sides.local_prompt)}",
            f"  bundle: {count(sides.incoming_messages)}, last prompt "
            f"{_prompt_text(sides.incoming_prompt)}",
        ]
        lost = f"discards the {count(sides.discarded)} only here" if sides.discarded else "discards"
    else:
        lost = "discards"
    lines += [
        "  fork:    keep both; the bundle's copy becomes a new session beside this one",
        f"  replace: the bundle's copy replaces this one ({lost}; a backup is kept)",
        "  cancel:  write nothing",
    ]
    return "\n".join(lines) + "\n"


def divergence_action(
    sid: str, options: ImportOptions, sides: Callable[[], Sides | None] | None = None
) -> str:
    """What to do with a session both sides went on with: "replaced" (--replace, or a yes on
    the terminal) or "fork"; BackendError on cancel (nothing written). `sides` (called only
    when the question is asked) describes the two copies for the question."""
    if options.replace:
        return "replaced"
    if options.interactive and options.ask is not None:
        described = sides() if sides is not None else None
        choice = options.ask(
            divergence_question(sid, options.origin, described), ("fork", "replace", "cancel")
        )
        if choice == "cancel":
            raise BackendError("import cancelled; nothing was written")
        return "replaced" if choice == "replace" else "fork"
    return "fork"
