"""The `commuter` command line: parse, call the core, print. No business logic here."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import sys
from typing import TYPE_CHECKING, Any

import click

from commuter import __version__
from commuter.errors import CommuterError
from commuter.settings import Settings

if TYPE_CHECKING:
    import asyncio

# Each module registers its commands on `cli`; imported lazily by name so `--help` stays cheap.
COMMAND_MODULES = (
    "commuter.commands.session",
    "commuter.commands.transfer",
    "commuter.commands.ssh",
    "commuter.commands.peer",
    "commuter.commands.relay",
    "commuter.commands.doctor",
)


# C0 and C1 controls, DEL, line/paragraph separators, bidi overrides and isolates, and lone
# surrogates (from undecodable bytes): a terminal acts on them, or cannot print them
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def stop_on_signals() -> asyncio.Event:
    """An event that Ctrl-C or SIGTERM (a service manager's stop) sets, so a daemon running in
    the current event loop can shut down cleanly and exit 0."""
    import asyncio
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def safe_text(text: str) -> str:
    """`text` (from a bundle, a peer or a file name) with every character a terminal would act
    on shown as a Python-style escape (`\\x1b`, `\\n`, `\\u2028`), so it prints as one
    inert line."""
    return _UNSAFE.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def one_line_text(text: str) -> str:
    """Free text such as a prompt: whitespace runs (newlines too) become one space, then
    safe_text."""
    return safe_text(" ".join(text.split()))


# json.dumps already escapes C0 inside strings; these it leaves raw (ensure_ascii=False)
_UNSAFE_JSON = re.compile("[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def safe_json(text: str) -> str:
    """JSON text from json.dumps(ensure_ascii=False) with the characters a terminal would act
    on written as `\\uXXXX` escapes (the same JSON value; they only occur inside strings)."""
    return _UNSAFE_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


class CommuterGroup(click.Group):
    """A click group that turns every CommuterError, OSError and UnicodeError into one line on
    stderr and exit 1. Anything else is a bug and keeps its traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (CommuterError, OSError, UnicodeError) as exc:
            if ctx.obj is not None and getattr(ctx.obj, "debug", False):
                raise
            if isinstance(exc, BrokenPipeError):
                _quiet_broken_pipe()
            raise click.ClickException(_one_line(exc, ctx.invoked_subcommand)) from exc
        except KeyboardInterrupt:
            click.echo("Error: interrupted", err=True)
            sys.exit(130)


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
    sys.exit(141)  # 128 + SIGPIPE, what a shell reports for a program killed by it


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
