"""The ssh hop: `to HOST` and `from HOST` (a plain bundle inside the user's own ssh)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from commuter.commands._app import AppContext, agent_option, pass_app, safe_text
from commuter.completion import complete_session, complete_ssh_host

if TYPE_CHECKING:
    from commuter.model import ImportResult


def register(cli: click.Group) -> None:
    """Add `to` and `from` to the CLI group."""
    cli.add_command(to_cmd)
    cli.add_command(from_cmd)


_REMOTE_HELP = (
    "How to run commuter on HOST, e.g. '~/venv/bin/commuter' "
    "(default: the first of commuter on PATH, ~/.local/bin/commuter, $PIPX_BIN_DIR/commuter)."
)


@click.command("to")
@click.argument("host", shell_complete=complete_ssh_host)
@click.argument("session", required=False, shell_complete=complete_session)
@click.option("--latest", is_flag=True, help="The newest session of this directory's project.")
@click.option(
    "--project-dir",
    "remote_dir",
    metavar="REMOTE_DIR",
    help="Project directory on HOST (default: HOST's path-maps decide).",
)
@click.option("--remote-commuter", metavar="CMD", help=_REMOTE_HELP)
@agent_option
@pass_app
def to_cmd(
    app: AppContext,
    host: str,
    session: str | None,
    latest: bool,
    remote_dir: str | None,
    remote_commuter: str | None,
    agent: str | None,
) -> None:
    """Send this directory's newest session (or SESSION) to HOST over ssh and import it there."""
    from commuter import core, sshhop
    from commuter.commands.session import choose_session

    if session and latest:
        raise click.UsageError("give an ID or --latest, not both")
    settings = app.settings
    session, cwd = choose_session(app, session, latest, agent)
    with sshhop.staging_file(settings, ".ssh-to-") as bundle:
        with bundle.open("wb") as fh:
            manifest = core.export_to(settings, fh, session=session, cwd=cwd, agent=agent)
        remote = sshhop.send_to(
            settings, host, bundle, project_dir=remote_dir, remote_command=remote_commuter
        )
    # The remote commuter's own output, line by line, made inert (it is another machine's text).
    for line in remote.stderr.splitlines():
        click.echo(safe_text(line), err=True)
    for line in remote.stdout.splitlines():
        click.echo(safe_text(line))
    click.echo(f"sent session {str(manifest.session_id)[:7]} to {safe_text(host)}")


@click.command("from")
@click.argument("host", shell_complete=complete_ssh_host)
@click.option(
    "--project-dir",
    "remote_dir",
    metavar="REMOTE_DIR",
    help="Project directory on HOST (default: this directory through your "
    "path-maps); when given, the session comes into this directory.",
)
@click.option("--remote-commuter", metavar="CMD", help=_REMOTE_HELP)
@click.option("--no-launch", is_flag=True, help="Do not start claude afterwards.")
@pass_app
def from_cmd(
    app: AppContext,
    host: str,
    remote_dir: str | None,
    remote_commuter: str | None,
    no_launch: bool,
) -> None:
    """Fetch HOST's newest session of this project over ssh and import it here."""
    import asyncio

    from commuter import core, sshhop
    from commuter.commands.session import _ask, _report
    from commuter.commands.transfer import _warn
    from commuter.pipeline import SshFetch, receive_one
    from commuter.transports import TransportContext

    settings = app.settings
    cwd = Path.cwd()
    interactive = app.interactive
    options = core.ImportOptions(
        project_dir=cwd if remote_dir else None,
        interactive=interactive,
        ask=_ask if interactive else None,
    )
    where = remote_dir or sshhop.remote_dir_for(settings, cwd)
    ctx = TransportContext.load(settings)
    pulled = asyncio.run(
        receive_one(ctx, SshFetch(ctx, host, where, remote_commuter), options, warn=_warn)
    )
    click.echo(f"from {safe_text(host)} via ssh:")
    if pulled is None or pulled.result is None:
        return
    _report(pulled.result)
    if not no_launch:
        _launch(pulled.result)


def _launch(result: ImportResult) -> None:
    """What `import` does last: on a terminal, resume the session in its agent."""
    from commuter.commands.session import _launch as launch

    launch(result)
