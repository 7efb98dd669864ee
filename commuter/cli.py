"""The `commuter` command line: parse, call the core, print. No business logic here."""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

import click

from commuter import __version__
from commuter.errors import CommuterError
from commuter.settings import Settings

# Each module registers its commands on `cli`; imported lazily by name so `--help` stays cheap.
COMMAND_MODULES = (
    "commuter.commands.session",
    "commuter.commands.transfer",
    "commuter.commands.ssh",
    "commuter.commands.peer",
    "commuter.commands.relay",
    "commuter.commands.doctor",
)


class CommuterGroup(click.Group):
    """A click group that turns every CommuterError into one line on stderr and exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CommuterError as exc:
            if ctx.obj is not None and getattr(ctx.obj, "debug", False):
                raise
            shown = click.ClickException(f"{exc} ({exc.hint})" if exc.hint else str(exc))
            raise shown from exc
        except KeyboardInterrupt:
            click.echo("Error: interrupted", err=True)
            sys.exit(130)


class AppContext:
    """What every command gets: settings, and whether a person is at a terminal."""

    def __init__(self, settings: Settings, debug: bool = False) -> None:
        self.settings = settings
        self.debug = debug

    @property
    def interactive(self) -> bool:
        return sys.stdin.isatty() and sys.stderr.isatty()


pass_app = click.make_pass_decorator(AppContext)


@click.group(cls=CommuterGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="commuter")
@click.option("--debug", is_flag=True, hidden=True, help="Show tracebacks.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Move AI coding-agent sessions (Claude Code) between your machines."""
    ctx.obj = AppContext(Settings.from_env(), debug=debug)


@cli.group("config")
def config_group() -> None:
    """Show or change commuter's settings."""


@config_group.command("set")
@click.argument("key")
@click.argument("values", nargs=-1, required=True)
@pass_app
def config_set(app: AppContext, key: str, values: tuple[str, ...]) -> None:
    """Set KEY: path-map A B | transfer-dir DIR | relay URL | name NAME."""
    from commuter import config

    config.set_value(app.settings, key, values)
    click.echo(f"{key} set")


@config_group.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def config_show(app: AppContext, as_json: bool) -> None:
    """Print the configuration."""
    from commuter import config

    data = config.load(app.settings).to_json()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"config file: {app.settings.config_file}")
    if not data:
        click.echo("(nothing set)")
    for key, value in data.items():
        if key == "path-map":
            for a, b in value:
                click.echo(f"path-map: {a} <-> {b}")
        else:
            click.echo(f"{key}: {value}")


@config_group.command("unset")
@click.argument("key")
@pass_app
def config_unset(app: AppContext, key: str) -> None:
    """Remove KEY from the configuration."""
    from commuter import config

    config.unset_value(app.settings, key)
    click.echo(f"{key} unset")


def _register() -> None:
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(cli)


_register()


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="commuter")
