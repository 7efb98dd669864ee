"""Session commands: list, export, import, inspect."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click

from commuter.commands._app import (
    AppContext,
    agent_option,
    one_line_text,
    pass_app,
    safe_json,
    safe_text,
)
from commuter.completion import complete_file, complete_session
from commuter.errors import BundleError, CommuterError, OutputError
from commuter.settings import FORKS_FILE, Settings

if TYPE_CHECKING:
    from commuter.forks import Fork
    from commuter.model import ImportResult, SessionRef


def register(cli: click.Group) -> None:
    """Add the session commands to the CLI group."""
    cli.add_command(list_cmd)
    cli.add_command(export_cmd)
    cli.add_command(import_cmd)
    cli.add_command(inspect_cmd)


def relative_time(when: datetime, now: datetime | None = None) -> str:
    """'3 minutes ago' style."""
    seconds = int(((now or datetime.now(UTC)) - when).total_seconds())
    if seconds < 60:
        return "just now"
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''} ago"
    return "just now"


def age(when: datetime, now: datetime) -> str:
    """A short age for the listing's column: 'just now', '12 min ago', '5 h ago', '3 days ago',
    '6 wk ago', '11 mo ago', '3 yr ago'."""
    seconds = int((now - when).total_seconds())
    for unit, size in (
        ("yr", 365 * 86400),
        ("mo", 30 * 86400),
        ("wk", 7 * 86400),
        ("days", 86400),
        ("h", 3600),
        ("min", 60),
    ):
        if seconds >= size:
            n = seconds // size
            return f"{n} {'day' if unit == 'days' and n == 1 else unit} ago"
    return "just now"


def ages(whens: Sequence[datetime], now: datetime) -> list[str]:
    """`age(when, now)` of each, with one call per day and minute seen, not per session: from
    one day on it depends on the whole days alone, before that on the whole minutes."""
    sinces = list(map(now.__sub__, whens))
    days = list(map(attrgetter("days"), sinces))
    by_day = {d: age(when, now) for d, when in dict(zip(days, whens, strict=True)).items() if d > 0}
    out: list[str | None] = list(map(by_day.get, days))
    if min(days, default=1) > 0:
        return cast("list[str]", out)
    by_minute: dict[int, str] = {}
    for i, d in enumerate(days):
        if d == 0:  # within the day: by the whole minutes
            minute = sinces[i].seconds // 60
            text = by_minute.get(minute)
            if text is None:
                text = by_minute[minute] = age(whens[i], now)
            out[i] = text
        elif d < 0:  # ahead of now
            out[i] = "just now"
    return cast("list[str]", out)


def _ref_json(
    ref: SessionRef, fork: Fork | None = None, messages: int | None = None
) -> dict[str, Any]:
    return {
        "backend": ref.backend,
        "session_id": ref.session_id,
        "project": str(ref.project) if ref.project else None,
        "updated_at": ref.updated_at.isoformat(),
        "path": str(ref.path) if ref.path else None,
        "size": ref.size,
        "first_prompt": ref.first_prompt,
        "has_messages": ref.has_messages,
        "message_count": messages,
        "fork_of": fork.origin_id if fork else None,
        "fork_from": fork.origin_host if fork else None,
    }


def project_root(settings: Settings, cwd: Path, refs: Sequence[SessionRef] | None = None) -> Path:
    """The project `cwd` belongs to, found as git finds its repository: the nearest folder at
    or above `cwd` that has sessions, not above the git root (which is the answer if no
    folder on the way has sessions) nor up to HOME from below it; else `cwd` itself."""
    from commuter import core

    here = Path(os.path.realpath(cwd))
    if refs is None:
        refs = core.list_sessions(settings)
    # one realpath per project, not per session (refs of one project share it)
    projects = {os.path.realpath(p) for p in {r.project for r in refs} if p is not None}
    home = Path(os.path.realpath(settings.home))
    for folder in (here, *here.parents):
        if folder == home and folder != here:
            break  # a session started in ~ is not every folder's under it
        if str(folder) in projects or (folder / ".git").exists():
            return folder
    return here


def here_dir(settings: Settings, agent: str | None = None) -> Path:
    """The current directory's project root (`project_root`), for the commands that take
    the newest session of "this project" (export, push, send)."""
    from commuter import core

    here = _own_project(settings, agent)
    if here is not None:
        return here
    return project_root(settings, Path.cwd(), core.list_sessions(settings, agent))


def _own_project(settings: Settings, agent: str | None) -> Path | None:
    """The current directory when its newest session is its own (then it is `project_root`'s
    answer, found without listing every session); else None."""
    from commuter import core
    from commuter.errors import SessionNotFound

    here = os.path.realpath(Path.cwd())
    try:
        ref = core.find_session(settings, None, Path(here), agent)
    except SessionNotFound:
        return None
    if ref.project is None or os.path.realpath(ref.project) != here:
        return None
    return Path(here)


def _in_project(ref: SessionRef, root: Path) -> bool:
    if ref.project is None:
        return False
    project = Path(os.path.realpath(ref.project))
    return project == root or root in project.parents


COUNTS_FILE = "message-counts.json"
_MISS = object()  # no count in the cache that can be believed


def message_counts(settings: Settings, refs: Sequence[SessionRef]) -> dict[str, int | None]:
    """Each session's message count by `backend:session_id` (see `ordered_counts`)."""
    keys = (f"{ref.backend}:{ref.session_id}" for ref in refs)
    return dict(zip(keys, ordered_counts(settings, refs), strict=True))


def ordered_counts(settings: Settings, refs: Sequence[SessionRef]) -> list[int | None]:
    """Each session's message count, in the order of `refs` (None where its backend cannot
    count), from the backend's `message_count` and cached in state_dir by size and time, so
    that a listing reads a transcript whole only when it changed. Entries of sessions not in
    `refs` (another agent's, another project's) are kept, unless they outnumber the listed
    ones by far."""
    import orjson

    path = settings.state_dir / COUNTS_FILE
    try:
        cache = orjson.loads(path.read_bytes())
        if not isinstance(cache, dict):
            cache = {}
    except (OSError, orjson.JSONDecodeError):
        cache = {}
    keys = [f"{ref.backend}:{ref.session_id}" for ref in refs]
    stamps = [ref.updated_at.timestamp() for ref in refs]
    # [size, POSIX time, count] where the size and time are the session's: believed
    counts: list[object] = [
        hit[2]
        if type(hit) is list
        and len(hit) == 3
        and hit[0] == ref.size
        and hit[1] == stamp
        and type(hit[2]) is int
        else _MISS
        for hit, ref, stamp in zip(map(cache.get, keys), refs, stamps, strict=True)
    ]
    fresh: dict[str, list[Any]] = {}
    for i, count in enumerate(counts):
        if count is not _MISS:
            continue
        ref, key, hit = refs[i], keys[i], cache.get(keys[i])
        if (
            type(hit) is list
            and len(hit) == 3
            and hit[0] == ref.size
            and type(hit[2]) is int
            and hit[1] == ref.updated_at.isoformat()  # what 1.0 wrote: rewritten once
        ):
            counts[i] = hit[2]
            fresh[key] = [ref.size, stamps[i], hit[2]]
            continue
        counts[i] = count = _count(settings, ref)
        if count is not None:
            fresh[key] = [ref.size, stamps[i], count]
    out = dict(zip(keys, counts, strict=True))  # two refs of one id: the count found last
    if fresh:
        from commuter.fsutil import atomic_writer

        if len(cache) > 4 * len(refs) + 1000:  # mostly sessions that are gone
            cache = {k: cache[k] for k in out if k in cache}
        cache.update(fresh)
        with contextlib.suppress(OSError):
            settings.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            with atomic_writer(path, 0o600, fsync=False) as fh:  # a cache: no fsync
                fh.write(orjson.dumps(cache) + b"\n")
    if len(out) < len(keys):
        counts = [out[key] for key in keys]
    return cast("list[int | None]", counts)


def _count(settings: Settings, ref: SessionRef) -> int | None:
    """`ref`'s message count from its backend, None if it cannot count or reading failed."""
    from commuter.backends import get_backend

    try:
        counter = getattr(get_backend(ref.backend, settings), "message_count", None)
        return int(counter(ref)) if counter is not None else None
    except (OSError, ValueError, CommuterError):
        return None


def _term_width() -> int:
    return max(40, shutil.get_terminal_size((80, 24)).columns)


@click.command("list")
@click.option("--all", "show_all", is_flag=True, help="Also list sessions without messages.")
@click.option("--here", is_flag=True, help="Only sessions of this directory's project.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON with full ids.")
@agent_option
@pass_app
def list_cmd(app: AppContext, show_all: bool, here: bool, as_json: bool, agent: str | None) -> None:
    """List sessions on this machine (every agent's), newest first."""
    from commuter.commands.table import paused_gc

    with paused_gc():
        _list(app, show_all, here, as_json, agent)


def _list(app: AppContext, show_all: bool, here: bool, as_json: bool, agent: str | None) -> None:
    from commuter import listing

    settings = app.settings
    refs = [r for r in listing.list_sessions(settings, agent) if show_all or r.has_messages]
    if here:
        root = project_root(settings, Path.cwd(), refs)
        refs = [r for r in refs if _in_project(r, root)]
    known = _forks(settings)
    counts = ordered_counts(settings, refs)
    if len(refs) >= 1000:  # so many that the exit would spend milliseconds walking them
        from commuter.commands.table import no_collection_at_exit

        no_collection_at_exit()
    if as_json:
        rows = [
            _ref_json(r, known.get((r.backend, r.session_id)), n)
            for r, n in zip(refs, counts, strict=True)
        ]
        click.echo(safe_json(json.dumps(rows, indent=2, ensure_ascii=False)))
        return
    if not refs:
        click.echo("no sessions found" + (" in this project" if here else ""), err=True)
        return
    from commuter.commands import table as t

    sids = [r.session_id for r in refs]
    shorts = t.short_ids(sids + [f.origin_id for f in known.values()])
    home = str(settings.home)
    places = [r.project for r in refs]
    # a few dozen projects and agents among 10,000 rows: each made safe once
    shown = {p: safe_text(_tilde(str(p) if p else "?", home)) for p in set(places)}
    agents = [r.backend for r in refs]
    names = {a: safe_text(a) for a in set(agents)}
    prompts = t.one_lines([r.first_prompt for r in refs])
    for i, ref in enumerate(refs if known else ()):
        fork = known.get((ref.backend, ref.session_id))
        if fork is not None:
            origin = shorts.get(fork.origin_id, fork.origin_id[:7])
            host = one_line_text(fork.origin_host)
            prompts[i] = f"[fork of {safe_text(origin)} from {host}] " + prompts[i]
    columns = (
        list(map(shorts.__getitem__, sids)),
        list(map(names.__getitem__, agents)),
        ages([r.updated_at for r in refs], datetime.now(UTC)),
        ["-" if n is None else str(n) for n in counts],
        list(map(shown.__getitem__, places)),
        prompts,
    )
    header = ("ID", "AGENT", "UPDATED", "MSGS", "PROJECT", "FIRST PROMPT")
    # One write: 10,000 rows are one echo, not 10,000.
    click.echo(t.lay_out(header, columns, _term_width()))


def _forks(settings: Settings) -> dict[tuple[str, str], Fork]:
    """Every fork record; without a record file, without importing forks (and sqlite3)."""
    if not (settings.state_dir / FORKS_FILE).exists():
        return {}
    from commuter import forks

    return forks.all_forks(settings.state_dir)


@click.command("export")
@click.argument("session", required=False, shell_complete=complete_session)
@click.option("--latest", is_flag=True, help="The newest session of this directory's project.")
@click.option(
    "-o",
    "--output",
    metavar="FILE|-",
    help="Bundle file to write, or - for stdout (default: ./<short id>.bundle, never replaced).",
    shell_complete=complete_file,
)
@agent_option
@pass_app
def export_cmd(
    app: AppContext, session: str | None, latest: bool, output: str | None, agent: str | None
) -> None:
    """Write a session (ID, unique prefix, or --latest) to a bundle file."""
    from commuter import core
    from commuter.bundle.read import counted
    from commuter.fsutil import atomic_writer, output_problem

    if session and latest:
        raise click.UsageError("give an ID or --latest, not both")
    settings = app.settings
    session, cwd = choose_session(app, session, latest, agent)
    if output == "-":
        if sys.stdout.isatty():
            raise BundleError("refusing to write a bundle to a terminal; use -o FILE or a pipe")
        stream = sys.stdout.buffer
        manifest = core.export_to(settings, stream, session=session, cwd=cwd, agent=agent)
        stream.flush()
    else:
        ref = None
        if output is None:  # named after the session, so it must be found first (once)
            ref = core.find_session(settings, session, cwd, agent)
            output = default_bundle_name(ref.session_id)
            if os.path.lexists(output):
                raise OutputError(
                    f"{output} already exists; pass -o FILE (-o {output} replaces it)"
                )
        target = Path(output).expanduser()
        problem = output_problem(target)
        if problem:
            raise OutputError(problem)
        with atomic_writer(target, 0o600, parents=False) as fh:
            manifest = core.export_to(settings, fh, session=session, cwd=cwd, agent=agent, ref=ref)
    click.echo(
        safe_text(
            f"exported session {manifest.session_id} "
            f"({counted(manifest.message_count, 'message')}, "
            f"{counted(len(manifest.members), 'file')}) from {manifest.project_dir}"
            + (f" to {output}" if output != "-" else "")
        ),
        err=True,
    )


def default_bundle_name(session_id: str) -> str:
    """`./<first 8 characters of the id>.bundle`, any character but a letter, digit, `-` or
    `_` replaced (a plug-in backend's id is not trusted to be a file name)."""
    short = "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "_" for c in session_id)
    return f"./{short[:8] or 'session'}.bundle"


def choose_session(
    app: AppContext, session: str | None, latest: bool, agent: str | None
) -> tuple[str | None, Path]:
    """The session a command works on, and where to look for it: SESSION as given (in the
    current directory); else, on a terminal without --latest, the one a person picks
    (commuter.picker) when the project has several; else None (the newest) in the project
    root (`project_root`)."""
    if session:
        return session, Path.cwd()
    from commuter import core

    settings = app.settings
    if latest or not app.interactive:
        here = _own_project(settings, agent)
        if here is not None:
            return None, here
    refs = core.list_sessions(settings, agent)
    root = project_root(settings, Path.cwd(), refs)
    if latest or not app.interactive:
        return None, root
    mine = [r for r in refs if r.has_messages and _is_root(r, root)]
    if len(mine) < 2:
        return None, root
    from commuter import picker
    from commuter.commands.table import short_ids

    mine = mine[: picker.MAX_SHOWN]
    counts = message_counts(settings, mine)
    shorts = short_ids([r.session_id for r in mine])
    now = datetime.now(UTC)
    choices = [
        picker.Choice(
            r.session_id,
            shorts[r.session_id],
            r.backend,
            age(r.updated_at, now),
            counts.get(f"{r.backend}:{r.session_id}"),
            r.first_prompt or "",
        )
        for r in mine
    ]
    title = f"sessions of {_tilde(str(root), str(settings.home))} (newest first):"
    return picker.ask(title, choices).session_id, root


def _is_root(ref: SessionRef, root: Path) -> bool:
    return ref.project is not None and Path(os.path.realpath(ref.project)) == root


def _tilde(path: str, home: str) -> str:
    return "~" + path[len(home) :] if path == home or path.startswith(home + "/") else path


def warn_line(message: str) -> None:
    """`warning: message` on stderr; the label in colour on a terminal (click drops the
    colour in a pipe)."""
    click.echo(click.style("warning:", fg="yellow", bold=True) + " " + safe_text(message), err=True)


def _ask(question: str, choices: tuple[str, ...]) -> str:
    answer: str = click.prompt(
        question, type=click.Choice(choices), default=choices[0], err=True, show_choices=True
    )
    return answer


def _spool_stdin(staging: Path) -> Path:
    import tempfile

    staging.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, name = tempfile.mkstemp(prefix=".stdin-", suffix=".tmp", dir=staging)
    with os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(sys.stdin.buffer, out, 1 << 20)
    return Path(name)


@click.command("import")
@click.argument("bundle", shell_complete=complete_file)
@click.option("--project-dir", type=click.Path(path_type=Path), help="Local project directory.")
@click.option("--replace", is_flag=True, help="Replace a diverged local copy (after a backup).")
@click.option("--no-launch", is_flag=True, help="Do not start the agent afterwards.")
@click.option("--dry-run", is_flag=True, help="Show what would happen; write nothing.")
@click.option("--yes", "assume_yes", is_flag=True, help="Take the bundle's project config.")
@pass_app
def import_cmd(
    app: AppContext,
    bundle: str,
    project_dir: Path | None,
    replace: bool,
    no_launch: bool,
    dry_run: bool,
    assume_yes: bool,
) -> None:
    """Import a bundle (FILE or - for stdin) so the agent's `--continue` picks it up."""
    from commuter import core

    interactive = app.interactive
    options = core.ImportOptions(
        project_dir=project_dir,
        replace=replace,
        dry_run=dry_run,
        assume_yes=assume_yes,
        interactive=interactive,
        ask=_ask if interactive else None,
        # Piped in by `commuter to` over the user's own ssh: as trusted as a paired peer's.
        sender_verified=bundle == "-" and app.settings.ssh_hop,
    )
    spooled: Path | None = None
    try:
        if bundle == "-":
            spooled = path = _spool_stdin(app.settings.staging_dir)
        else:
            path = _bundle_file(Path(bundle).expanduser())
        result = core.import_file(app.settings, path, options)
    finally:
        if spooled is not None:
            spooled.unlink(missing_ok=True)
    _report(result, app.settings)
    if dry_run or no_launch or result.action == "dry-run":
        return
    _launch(result, app.settings)


def _settings(given: Settings | None) -> Settings:
    """`given`, else the running command's settings (callers that predate the argument)."""
    if given is not None:
        return given
    ctx = click.get_current_context(silent=True)
    app = ctx.find_object(AppContext) if ctx is not None else None
    return app.settings if app is not None else Settings.from_env()


def _launch(result: ImportResult, settings: Settings | None = None) -> None:
    """On a terminal, exec what the session's backend resumes it with (claude --resume ID)."""
    from commuter.backends import launch_argv

    argv = launch_argv(_settings(settings), result)
    if argv and sys.stdin.isatty() and sys.stdout.isatty():
        os.chdir(result.project_dir)
        os.execvp(argv[0], argv)


def _bundle_file(path: Path) -> Path:
    """`path` if it is a regular file; BundleError naming what is wrong otherwise."""
    if not path.is_file():
        raise BundleError(f"{path}: " + ("not a regular file" if path.exists() else "no such file"))
    return path


def _report(result: ImportResult, settings: Settings | None = None) -> None:
    """The import summary; every line goes through safe_text, since the origin, the project
    path and the warnings carry text from the bundle (or the peer that sent it). The resume
    and continue lines are the backend's."""
    from commuter.backends import continue_command, resume_command

    def say(line: str, err: bool = False) -> None:
        click.echo(safe_text(line), err=err)

    for warning in result.warnings:
        warn_line(warning)
    for backup in result.backups:
        say(f"backup: {backup}", err=True)
    if result.backups:  # an import that made a backup prunes the old ones (backups-keep, -max-mb)
        from commuter.backups import auto_prune

        auto_prune(_settings(settings))
    verbs = {
        "created": "imported",
        "updated": "updated",
        "unchanged": "unchanged",
        "forked": "imported as a fork",
        "replaced": "replaced",
    }
    would = {
        "created": "would import",
        "updated": "would update",
        "unchanged": "would leave unchanged",
        "forked": "would import as a fork",
        "replaced": "would replace",
    }
    if result.origin:
        say(f"exported: {result.origin}")
    if result.action == "dry-run":
        planned = result.planned or "created"
        if planned == "forked":  # the fork's id is drawn at import: no command to show yet
            say(
                f"would import as a fork: session {result.original_session_id} "
                f"in {result.project_dir} (a new id is chosen at import)"
            )
            return
        verb = would.get(planned, f"would do {planned}")
    else:
        verb = verbs.get(result.action, result.action)
    say(f"{verb}: session {result.session_id} in {result.project_dir}")
    settings = _settings(settings)
    say(f"resume:   {resume_command(settings, result)}")
    line = continue_command(settings, result)  # None: its --continue would take another
    if line is not None:
        say(f"continue: {line}")


@click.command("inspect")
@click.argument("bundle", type=click.Path(path_type=Path))
@pass_app
def inspect_cmd(app: AppContext, bundle: Path) -> None:
    """Show what a bundle holds, without importing it."""
    _bundle_file(bundle)
    try:
        from commuter.peer import seal
    except ImportError:  # pragma: no cover
        seal = None  # type: ignore[assignment]
    if seal is not None and seal.is_sealed(bundle):
        header = seal.read_header(bundle)  # unauthenticated until opened: escape it all
        click.echo(
            safe_text(
                f"sealed (encrypted for {', '.join(header.recipients) or 'nobody'})"
                f" from {header.sender_device_id}, created {header.created_at}"
            )
        )
        return
    from commuter import bundle as bundles

    # The values in these lines come from the bundle and may hold newlines: safe_text each.
    for line in bundles.describe(bundles.read_manifest(bundle)):
        click.echo(safe_text(line))
