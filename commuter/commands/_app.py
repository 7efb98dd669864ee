"""What every command module shares: the AppContext a command gets, and text made safe to print.

Here, not in commuter.cli, so that each commuter.commands module imports on its own (cli.py
imports them by name to register their commands).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from commuter.settings import Settings

if TYPE_CHECKING:
    import asyncio

    from click.shell_completion import CompletionItem


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


class AppContext:
    """What every command gets: settings, and whether a person is at a terminal."""

    def __init__(self, settings: Settings, debug: bool = False) -> None:
        self.settings = settings
        self.debug = debug

    @property
    def interactive(self) -> bool:
        return sys.stdin.isatty() and sys.stderr.isatty()


pass_app = click.make_pass_decorator(AppContext)


_F = TypeVar("_F", bound=Callable[..., Any])


def agent_option(command: _F) -> _F:
    """`--agent NAME`: only sessions of that agent (claude, codex, gemini or a plug-in's name);
    without it the newest session of the project across agents is taken."""
    return click.option(
        "--agent",
        metavar="NAME",
        help="Only sessions of this agent (e.g. claude, codex, gemini).",
        shell_complete=complete_agent,
    )(command)


def complete_agent(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """The backend names (built-ins, then plug-ins) starting with `incomplete`; nothing if
    they cannot be read (a completion prints no error)."""
    from click.shell_completion import CompletionItem

    try:
        from commuter.backends import backend_names

        names = backend_names(Settings.from_env())
    except Exception:
        return []
    return [CompletionItem(name) for name in names if name.startswith(incomplete)]
