"""The `commuter` command line: parse, call the core, print. No business logic here."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
from typing import Any, NoReturn

import click

from commuter import __version__
from commuter.commands._app import AppContext, pass_app, safe_text
from commuter.errors import CommuterError, ExitStatus
from commuter.settings import Settings

# Each module registers its commands on `cli`; imported lazily by name so `--help` stays cheap.
COMMAND_MODULES = (
    "commuter.commands.session",
    "commuter.commands.transfer",
    "commuter.commands.ssh",
    "commuter.commands.peer",
    "commuter.commands.relay",
    "commuter.commands.doctor",
    "commuter.commands.status",
    "commuter.commands.service",
    "commuter.commands.backups",
    "commuter.completion",
)


class CommuterGroup(click.Group):
    """A click group that turns every CommuterError, OSError and UnicodeError into one line on
    stderr and the error's exit status (ExitStatus.ERROR for OSError and UnicodeError), and
    Ctrl-C into one line and ExitStatus.INTERRUPTED. Anything else is a bug and keeps its
    traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (CommuterError, OSError, UnicodeError) as exc:
            if ctx.obj is not None and getattr(ctx.obj, "debug", False):
                raise
            if isinstance(exc, BrokenPipeError):
                _quiet_broken_pipe()
            status = exc.exit_code if isinstance(exc, CommuterError) else ExitStatus.ERROR
            _fail(_one_line(exc, ctx.invoked_subcommand), status)
        except KeyboardInterrupt:
            _fail("interrupted", ExitStatus.INTERRUPTED)


def _fail(message: str, status: ExitStatus) -> NoReturn:
    """`Error: message` on stderr (as click prints a ClickException), then exit `status`."""
    click.echo(f"Error: {message}", err=True)
    sys.exit(status)


def _one_line(exc: BaseException, command: str | None) -> str:
    """`exc` as one line: its own message for a CommuterError, `what: strerror (path)` else."""
    if isinstance(exc, CommuterError):
        text = f"{exc} ({exc.hint})" if exc.hint else str(exc)
    elif isinstance(exc, OSError):
        paths = [os.fsdecode(p) for p in (exc.filename, exc.filename2) if p is not None]
        where = f" ({' -> '.join(paths)})" if paths else ""
        text = f"{command or 'commuter'}: {exc.strerror or exc}{where}"
    else:
        text = f"{command or 'commuter'}: text that cannot be {_codec_verb(exc)} ({exc})"
    return safe_text(text)


def _codec_verb(exc: BaseException) -> str:
    return "decoded" if isinstance(exc, UnicodeDecodeError) else "encoded"


def _quiet_broken_pipe() -> None:
    """The reader of our stdout went away (`commuter list | head`): exit quietly, like cat."""
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.close()  # so the flush at exit does not fail a second time
    sys.exit(ExitStatus.BROKEN_PIPE)  # what a shell reports for a program killed by SIGPIPE


_SERVERS = ("serve", "relay", "service")  # long-running: they log, they draw no bars


@click.group(cls=CommuterGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="commuter")
@click.option("--debug", is_flag=True, hidden=True, help="Show tracebacks.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Move AI coding-agent sessions (Claude Code, Codex, Gemini) between your machines."""
    ctx.obj = AppContext(Settings.from_env(), debug=debug)
    if ctx.invoked_subcommand not in _SERVERS:  # a person waits on it: progress bars
        from commuter import progress

        progress.enable()


@cli.group("config")
def config_group() -> None:
    """Show or change commuter's settings."""


@config_group.command("set")
@click.argument("key")
@click.argument("values", nargs=-1, required=True)
@pass_app
def config_set(app: AppContext, key: str, values: tuple[str, ...]) -> None:
    """Set KEY: path-map A B | transfer-dir DIR | relay URL | name NAME | backups-keep N |
    backups-max-mb M | plain-max-age-days D."""
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
    try:
        cli(prog_name="commuter")
    except KeyboardInterrupt:  # outside a command (click's own prompts catch it themselves)
        _fail("interrupted", ExitStatus.INTERRUPTED)
