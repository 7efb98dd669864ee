"""Cleanup commands: `backups list|prune` and `uninstall-data`."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import click

from commuter.commands._app import AppContext, pass_app, safe_text
from commuter.errors import ConfigError


def register(cli: click.Group) -> None:
    cli.add_command(backups_group)
    cli.add_command(uninstall_data)


def _mb(size: int) -> str:
    return f"{size / 2**20:.1f} MB"


@click.group("backups")
def backups_group() -> None:
    """List or prune the backups imports made of what they replaced."""


@backups_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def backups_list(app: AppContext, as_json: bool) -> None:
    """Every backup, newest first, with its session and size."""
    from commuter import backups

    found = backups.list_backups(app.settings)
    if as_json:
        rows = [
            {
                "path": str(b.path),
                "session_id": b.session_id,
                "created_at": b.created_at.isoformat(),
                "size": b.size,
            }
            for b in found
        ]
        click.echo(json.dumps(rows, indent=2))
        return
    if not found:
        click.echo(f"no backups (in {app.settings.backups_dir})", err=True)
        return
    for b in found:
        when = b.created_at.strftime("%Y-%m-%d %H:%M")
        click.echo(f"{when}  {b.session_id[:12]:<12}  {_mb(b.size):>10}  {safe_text(str(b.path))}")
    click.echo(f"{len(found)} backups, {_mb(sum(b.size for b in found))}", err=True)


@backups_group.command("prune")
@click.option("--keep", type=click.IntRange(min=1), help="Newest backups kept per session.")
@click.option("--max-mb", type=click.IntRange(min=1), help="Most MB all backups may take.")
@click.option("--dry-run", is_flag=True, help="Say what would go; remove nothing.")
@pass_app
def backups_prune(app: AppContext, keep: int | None, max_mb: int | None, dry_run: bool) -> None:
    """Keep the newest backups of each session (config backups-keep, default 2) within a
    size cap (config backups-max-mb, default 500); imports prune the same way on their own."""
    from commuter import backups

    limits = backups.Limits.of(app.settings, keep, max_mb)
    gone = backups.prune(app.settings, limits, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for b in gone:
        click.echo(f"{verb} {safe_text(str(b.path))} ({_mb(b.size)})")
    left = sum(b.size for b in backups.list_backups(app.settings))
    freed = sum(b.size for b in gone)
    click.echo(
        f"{verb} {len(gone)} backups ({_mb(freed)}); {_mb(left - freed if dry_run else left)} kept",
        err=True,
    )


def _refuse(path: Path, home: Path) -> str | None:
    """Why `path` must not be removed as commuter's own folder (it is HOME, above it, or /)."""
    real = Path(os.path.realpath(path))
    real_home = Path(os.path.realpath(home))
    if real == Path("/") or real == real_home or real in real_home.parents:
        return f"{path} is not a folder of commuter's own"
    return None


@click.command("uninstall-data")
@click.option("--yes", "assume_yes", is_flag=True, help="Do not ask.")
@pass_app
def uninstall_data(app: AppContext, assume_yes: bool) -> None:
    """Remove commuter's config, keys, trust store and data (backups, inbox, state) from this
    machine. The agents' sessions and the shared transfer dir are not touched."""
    settings = app.settings
    targets = [p for p in dict.fromkeys((settings.config_dir, settings.data_dir)) if p.exists()]
    for path in targets:
        why = _refuse(path, settings.home)
        if why:
            raise ConfigError(why + "; remove it by hand")
    if not targets:
        click.echo("nothing to remove: commuter keeps no data here")
        return
    click.echo("this removes:", err=True)
    for path in targets:
        click.echo(f"  {safe_text(str(path))}", err=True)
    click.echo(
        "(this machine's keys: paired machines must pair with it again; backups of replaced "
        "sessions; what waits in the LAN inbox)",
        err=True,
    )
    if not assume_yes:
        if not app.interactive:
            raise ConfigError("uninstall-data asks first; pass --yes to remove without asking")
        if not click.confirm("remove them?", default=False, err=True):
            click.echo("nothing removed", err=True)
            return
    for path in targets:
        if path.is_symlink():
            path.unlink()
        else:
            shutil.rmtree(path)
        click.echo(f"removed {safe_text(str(path))}")
