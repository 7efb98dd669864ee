"""The session picker: on a terminal, a person chooses one of several sessions by number."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass

import click

from commuter.commands._app import one_line_text, safe_text
from commuter.commands.table import cells, fit_words, pad

MAX_SHOWN = 20  # the newest 20; an older session is given by id


@dataclass(frozen=True, slots=True)
class Choice:
    """One line of the menu."""

    session_id: str
    short: str
    agent: str
    age: str
    messages: int | None
    prompt: str


def ask(title: str, choices: Sequence[Choice], width: int | None = None) -> Choice:
    """Show `choices` numbered on stderr and read a number (Enter: the first); a number out
    of range is asked again."""
    width = width or max(40, shutil.get_terminal_size((80, 24)).columns)
    click.echo(safe_text(title), err=True)
    for line in menu_lines(choices, width):
        click.echo(line, err=True)
    number: int = click.prompt(
        "session number (Enter: 1, the newest)",
        type=click.IntRange(1, len(choices)),
        default=1,
        show_default=False,
        err=True,
    )
    return choices[number - 1]


def menu_lines(choices: Sequence[Choice], width: int) -> list[str]:
    """One line per choice in at most `width` columns: number, short id, agent (only when
    they differ), age, message count, first prompt cut after a word."""
    agents = len({c.agent for c in choices}) > 1
    rows: list[list[str]] = []
    for n, c in enumerate(choices, 1):
        row = [f"{n:>2})", safe_text(c.short)]
        if agents:
            row.append(safe_text(c.agent))
        row += [c.age, "-" if c.messages is None else f"{c.messages} msgs"]
        rows.append(row)
    widths = [max(cells(row[i]) for row in rows) for i in range(len(rows[0]))]
    last = len(widths) - 1  # the count, right-aligned
    lines = []
    for c, row in zip(choices, rows, strict=True):
        columns = enumerate(zip(row, widths, strict=True))
        text = "  ".join(pad(cell, w, right=i == last) for i, (cell, w) in columns)
        room = width - cells(text) - 2
        prompt = one_line_text(c.prompt)
        if room >= 8 and prompt:
            text += "  " + fit_words(prompt, room)
        lines.append(text.rstrip())
    return lines
