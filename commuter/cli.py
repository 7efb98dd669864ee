"""The `commuter` command line: parse, call the core, print. No business logic here."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
from collections.abc import Mapping
from typing import Any, NoReturn

import click

from commuter import __version__
from commuter.commands._app import AppContext, pass_app, safe_text
from commuter.errors import CommuterError, ExitStatus
from commuter.settings import Settings

# Every command but `config`: where it is defined, imported only when the command is looked
# up (`commuter list` loads commuter.commands.session alone; `--help` and completing a
# command name load them all).
LAZY_COMMANDS: dict[str, str] = {
    "list": "commuter.commands.session:list_cmd",
    "export": "commuter.commands.session:export_cmd",
    "import": "commuter.commands.session:import_cmd",
    "inspect": "commuter.commands.session:inspect_cmd",
    "push": "commuter.commands.transfer:push_cmd",
    "pull": "commuter.commands.transfer:pull_cmd",
    "to": "commuter.commands.ssh:to_cmd",
    "from": "commuter.commands.ssh:from_cmd",
    "id": "commuter.commands.peer:id_cmd",
    "pair": "commuter.commands.peer:pair_cmd",
    "unpair": "commuter.commands.peer:unpair_cmd",
    "peers": "commuter.commands.peer:peers_cmd",
    "serve": "commuter.commands.peer:serve_cmd",
    "send": "commuter.commands.peer:send_cmd",
    "receive": "commuter.commands.peer:receive_cmd",
    "relay": "commuter.commands.relay:relay_group",
    "doctor": "commuter.commands.doctor:doctor",
    "status": "commuter.commands.status:status_cmd",
    "sync-now": "commuter.commands.status:sync_now_cmd",
    "service": "commuter.commands.service:service_group",
    "backups": "commuter.commands.backups:backups_group",
    "uninstall-data": "commuter.commands.backups:uninstall_data",
    "completion": "commuter.completion:completion_cmd",
}


class CommuterGroup(click.Group):
    """A click group that turns every CommuterError, OSError and UnicodeError into one line on
    stderr and the error's exit status (ExitStatus.ERROR for OSError and UnicodeError), and
    Ctrl-C into one line and ExitStatus.INTERRUPTED. Anything else is a bug and keeps its
    traceback. Commands of `lazy` (name -> "module:attr") are imported when looked up."""

    def __init__(self, *args: Any, lazy: Mapping[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = self.commands.get(cmd_name)
        if command is None and cmd_name in self.lazy:
            command = _load_command(self.lazy[cmd_name])
            if command is not None:
                self.add_command(command, cmd_name)
        return command

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.NoSuchCommand as exc:  # "did you mean" among the unloaded commands too
            raise click.NoSuchCommand(
                exc.command_name, possibilities=self.list_commands(ctx), ctx=ctx
            ) from None

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


def _load_command(spec: str) -> click.Command | None:
    """The command a `"module:attr"` spec names; None if its module is not there."""
    name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        return None
    command = getattr(module, attr)
    if not isinstance(command, click.Command):
        raise TypeError(f"{spec} is not a click command")
    return command


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


@click.group(
    cls=CommuterGroup,
    lazy=LAZY_COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
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


def main() -> None:
    """Console-script entry point."""
    try:
        cli(prog_name="commuter")
    except KeyboardInterrupt:  # outside a command (click's own prompts catch it themselves)
        _fail("interrupted", ExitStatus.INTERRUPTED)
