"""`commuter service install|uninstall|status`: the sync daemon as a login service."""

from __future__ import annotations

import click

from commuter.commands._app import AppContext, pass_app, safe_text


def register(cli: click.Group) -> None:
    cli.add_command(service_group)


@click.group("service")
def service_group() -> None:
    """Run `commuter serve --sync` at login (systemd user unit / launchd agent)."""


@service_group.command("install")
@click.option(
    "--quiet",
    type=click.FloatRange(0, 86400),
    default=None,
    metavar="S",
    help="Pass --quiet S to the daemon (default 30).",
)
@click.option("--no-start", is_flag=True, help="Only write the file; do not enable or start it.")
@pass_app
def install_cmd(app: AppContext, quiet: float | None, no_start: bool) -> None:
    """Write the service file and, where the service manager answers, enable and start it."""
    from commuter.sync import service

    found = service.install(app.settings, quiet)
    click.echo(f"installed {safe_text(str(found.path))} ({found.kind})")
    if no_start or not service.manager_works(found.kind):
        click.echo(f"start it now and at every login:  {safe_text(found.start_hint)}")
        return
    ok, said = service.run_hint(found.start_hint)
    if ok:
        click.echo(f"started: {safe_text(found.start_hint)}")
    else:
        click.echo(f"warning: could not start it ({safe_text(said)}); run:", err=True)
        click.echo(f"  {safe_text(found.start_hint)}")


@service_group.command("uninstall")
@click.option("--no-stop", is_flag=True, help="Only remove the file; do not stop the service.")
@pass_app
def uninstall_cmd(app: AppContext, no_stop: bool) -> None:
    """Stop and disable the service (where the manager answers), then remove its file."""
    from commuter.sync import service

    planned = service.service_file(app.settings)
    if not no_stop and planned.path.exists() and service.manager_works(planned.kind):
        service.run_hint(planned.stop_hint)
    gone = service.uninstall(app.settings)
    if gone is None:
        click.echo(f"not installed ({safe_text(str(planned.path))} does not exist)")
        return
    click.echo(f"removed {safe_text(str(gone.path))}")
    if no_stop or not service.manager_works(gone.kind):
        click.echo(f"if it still runs, stop it:  {safe_text(gone.stop_hint)}")


@service_group.command("status")
@pass_app
def status_cmd(app: AppContext) -> None:
    """Whether the service file is there, what the service manager says, the daemon's state."""
    from commuter.sync import service, status_file

    found = service.service_file(app.settings)
    if found.path.exists():
        mine = "" if service.ours(found.path) else " (not written by commuter)"
        click.echo(f"service file: {safe_text(str(found.path))}{mine}")
    else:
        click.echo("service file: not installed (run `commuter service install`)")
    state = service.manager_state(found.kind)
    click.echo(f"{found.kind}: {state}" if state else f"{found.kind}: not reachable from here")
    daemon = status_file.read(app.settings)
    if daemon is None:
        click.echo("daemon: never ran")
    elif daemon.get("running"):
        click.echo(f"daemon: running since {daemon.get('started_at')} (pid {daemon.get('pid')})")
    else:
        click.echo(f"daemon: not running (last started {daemon.get('started_at')})")
