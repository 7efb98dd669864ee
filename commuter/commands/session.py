"""Session commands: list, export, import, inspect."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from commuter.commands._app import (
    AppContext,
    agent_option,
    one_line_text,
    pass_app,
    safe_json,
    safe_text,
)
from commuter.errors import BundleError, OutputError
from commuter.settings import Settings

if TYPE_CHECKING:
    from commuter.model import ImportResult, SessionRef


def register(cli: click.Group) -> None:
    """Add the session commands to the CLI group."""
    cli.add_command(list_cmd)
    cli.add_command(export_cmd)
    cli.add_command(import_cmd)
    cli.add_command(inspect_cmd)


def short_ids(ids: Sequence[str], minimum: int = 7) -> dict[str, str]:
    """Shortest unique prefix of each id, at least `minimum` characters (like git)."""
    out: dict[str, str] = {}
    ordered = sorted(set(ids))
    for i, sid in enumerate(ordered):
        need = minimum
        for j in (i - 1, i + 1):
            if 0 <= j < len(ordered):
                other = ordered[j]
                common = next(
                    (k for k, (a, b) in enumerate(zip(sid, other, strict=False)) if a != b),
                    min(len(sid), len(other)),
                )
                need = max(need, common + 1)
        out[sid] = sid[: min(need, len(sid))]
    return out


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


def _ref_json(ref: SessionRef) -> dict[str, Any]:
    return {
        "backend": ref.backend,
        "session_id": ref.session_id,
        "project": str(ref.project) if ref.project else None,
        "updated_at": ref.updated_at.isoformat(),
        "path": str(ref.path) if ref.path else None,
        "size": ref.size,
        "first_prompt": ref.first_prompt,
        "has_messages": ref.has_messages,
    }


@click.command("list")
@click.option("--all", "show_all", is_flag=True, help="Also list sessions without messages.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON with full ids.")
@agent_option
@pass_app
def list_cmd(app: AppContext, show_all: bool, as_json: bool, agent: str | None) -> None:
    """List sessions on this machine (every agent's), newest first."""
    from commuter import core

    refs = [r for r in core.list_sessions(app.settings, agent) if show_all or r.has_messages]
    if as_json:
        click.echo(
            safe_json(json.dumps([_ref_json(r) for r in refs], indent=2, ensure_ascii=False))
        )
        return
    if not refs:
        click.echo("no sessions found", err=True)
        return
    shorts = short_ids([r.session_id for r in refs])
    now = datetime.now(UTC)
    home = str(app.settings.home)
    for ref in refs:
        project = str(ref.project) if ref.project else "?"
        if project == home or project.startswith(home + "/"):
            project = "~" + project[len(home) :]
        project = _shorten(project)
        prompt = one_line_text(ref.first_prompt or "")[:60]
        click.echo(
            f"{shorts[ref.session_id]:<9} {safe_text(ref.backend):<7} "
            f"{relative_time(ref.updated_at, now):<15} {safe_text(project)}  {prompt}".rstrip()
        )


def _shorten(path: str, width: int = 48) -> str:
    """A long project path for the listing: its first two and last segments around `…`
    (`~/projects/…/deep.app`); `list --json` has the whole path."""
    parts = path.split("/")
    if len(path) <= width or len(parts) <= 4:
        return path
    return "/".join([*parts[:2], "…", parts[-1]])


@click.command("export")
@click.argument("session", required=False)
@click.option("--latest", is_flag=True, help="The newest session of this directory's project.")
@click.option("-o", "--output", required=True, help="Bundle file to write, or - for stdout.")
@agent_option
@pass_app
def export_cmd(
    app: AppContext, session: str | None, latest: bool, output: str, agent: str | None
) -> None:
    """Write a session (ID, unique prefix, or --latest) to a bundle file."""
    from commuter import core
    from commuter.bundle.read import counted
    from commuter.fsutil import atomic_writer, output_problem

    if session and latest:
        raise click.UsageError("give an ID or --latest, not both")
    if output == "-":
        if sys.stdout.isatty():
            raise BundleError("refusing to write a bundle to a terminal; use -o FILE or a pipe")
        stream = sys.stdout.buffer
        manifest = core.export_to(
            app.settings, stream, session=session, cwd=Path.cwd(), agent=agent
        )
        stream.flush()
    else:
        target = Path(output).expanduser()
        problem = output_problem(target)
        if problem:
            raise OutputError(problem)
        with atomic_writer(target, 0o600, parents=False) as fh:
            manifest = core.export_to(
                app.settings, fh, session=session, cwd=Path.cwd(), agent=agent
            )
    click.echo(
        safe_text(
            f"exported session {manifest.session_id} "
            f"({counted(manifest.message_count, 'message')}, "
            f"{counted(len(manifest.members), 'file')}) from {manifest.project_dir}"
            + (f" to {output}" if output != "-" else "")
        ),
        err=True,
    )


def _ask(question: str, choices: tuple[str, ...]) -> str:
    answer: str = click.prompt(
        question, type=click.Choice(choices), default=choices[0], err=True, show_choices=True
    )
    return answer


def _spool_stdin(staging: Path) -> Path:
    staging.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, name = tempfile.mkstemp(prefix=".stdin-", suffix=".tmp", dir=staging)
    with os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(sys.stdin.buffer, out, 1 << 20)
    return Path(name)


@click.command("import")
@click.argument("bundle")
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
        say(f"warning: {warning}", err=True)
    for backup in result.backups:
        say(f"backup: {backup}", err=True)
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
