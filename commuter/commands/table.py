"""The `list` table at scale: terminal cells, fitting and short ids with fast paths for the
common text (no character that could be wide), the same results as the general helpers of
commands/session.py (tests/test_list_speed.py compares them), and the table's layout."""

from __future__ import annotations

import atexit
import contextlib
import functools
import gc
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from itertools import repeat
from operator import itemgetter

import click

Row = tuple[str, str, str, str, str, str]  # id, agent, age, messages, project, prompt

# No character below U+0378 is East Asian wide or full-width (checked in the test).
_MAYBE_WIDE = re.compile("[^\x00-\u0377]")


@functools.lru_cache(maxsize=4096)
def _wide(c: str) -> bool:
    return unicodedata.east_asian_width(c) in "WF"


def cells(text: str) -> int:
    """Terminal columns `text` takes (East Asian wide and full-width characters take two)."""
    if text.isascii():
        return len(text)
    return len(text) + sum(map(_wide, _MAYBE_WIDE.findall(text)))


def prefix(text: str, width: int) -> str:
    """The longest start of `text` that fits in `width` columns."""
    if text.isascii() or not any(map(_wide, _MAYBE_WIDE.findall(text))):
        return text[: max(0, width)]
    used = 0
    for i, c in enumerate(text):
        used += 2 if _wide(c) else 1
        if used > width:
            return text[:i]
    return text


def pad(text: str, width: int, right: bool = False) -> str:
    gap = " " * max(0, width - cells(text))
    return gap + text if right else text + gap


def fit_words(text: str, width: int, breaks: str = " ") -> str:
    """`text` in at most `width` columns, cut after a word (a `breaks` character) and marked
    `…`; mid-word only when the first word alone is wider than `width`."""
    wide = 0 if text.isascii() else sum(map(_wide, _MAYBE_WIDE.findall(text)))
    if len(text) + wide <= width:
        return text
    if width <= 1:
        return "…" if width == 1 else ""
    cut = prefix(text, width - 1) if wide else text[: width - 1]
    whole = len(cut) < len(text) and text[len(cut)] in breaks
    if not whole:
        at = cut.rfind(breaks) if len(breaks) == 1 else max(cut.rfind(b) for b in breaks)
        if at > 0:
            cut = cut[: at + 1] if cut[at] != " " else cut[:at]
    return cut.rstrip() + "…"


def fit_path(path: str, width: int) -> str:
    """A project path in at most `width` columns: inner segments become `…`, then the head
    is cut (`…/deep.app`); a last segment too long alone is cut after a `-`, `_` or `.`."""
    if cells(path) <= width:
        return path
    parts = path.split("/")
    for keep_head in (2, 1):
        if len(parts) > keep_head + 1:
            shortened = "/".join([*parts[:keep_head], "…", parts[-1]])
            if cells(shortened) <= width:
                return shortened
    last = "…/" + parts[-1]
    return last if cells(last) <= width else fit_words(parts[-1], width, " -_.")


def short_ids(ids: Sequence[str], minimum: int = 7) -> dict[str, str]:
    """Shortest unique prefix of each id, at least `minimum` characters (like git)."""
    unique = set(ids)
    out = dict(zip(unique, map(itemgetter(slice(minimum)), unique), strict=True))
    if len(set(out.values())) == len(out):  # no two share their first `minimum` characters
        return out
    seen = Counter(out.values())
    # Only ids of one head need more: sorted, each is compared with its neighbours.
    groups: dict[str, list[str]] = {}
    for sid, head in out.items():
        if seen[head] > 1:
            groups.setdefault(head, []).append(sid)
    for group in groups.values():
        group.sort()
        need = [minimum] * len(group)
        for i in range(len(group) - 1):
            a, b = group[i], group[i + 1]
            common = next(
                (k for k, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
                min(len(a), len(b)),
            )
            need[i] = max(need[i], common + 1)
            need[i + 1] = max(need[i + 1], common + 1)
        out.update((sid, sid[: min(n, len(sid))]) for sid, n in zip(group, need, strict=True))
    return out


def one_lines(texts: Iterable[str | None]) -> list[str]:
    """`one_line` of each text ("" for None or ""), the check inline for 10,000 prompts."""
    return [
        ""
        if not text
        else text
        if text.isprintable()
        and "  " not in text
        and not text.startswith(" ")
        and not text.endswith(" ")
        else one_line(text)
        for text in texts
    ]


def one_line(text: str) -> str:
    """`_app.one_line_text(text)`, without its work for text that is already one inert line
    (printable, single spaces: what the backends' heads hold)."""
    if (
        text.isprintable()
        and "  " not in text
        and not text.startswith(" ")
        and not text.endswith(" ")
    ):
        return text  # isprintable() is False for every character safe_text escapes
    from commuter.commands._app import one_line_text

    return one_line_text(text)


def widest(texts: Sequence[str]) -> int:
    """The most columns one of `texts` takes (0 for none): `cells` only for those not ASCII."""
    most = max(map(len, texts), default=0)
    if "".join(texts).isascii():
        return most
    return max(most, *(cells(x) for x in texts if not x.isascii()))


def lay_out(header: Row, columns: Sequence[Sequence[str]], width: int) -> str:
    """The table of `columns` (six of equal length) in `width` terminal columns, as one string:
    the header in bold, the four short columns as wide as their widest cell (messages
    right-aligned), the project and the first prompt sharing what is left (the project up to
    half, more if the prompts are short), each cut to fit; a prompt that starts `[fork of …]`
    has that part in cyan."""
    widths = [max(cells(header[i]), widest(columns[i])) for i in range(4)]
    room = width - sum(widths) - 2 * 4  # four columns, each followed by two spaces
    projects = set(columns[4])
    longest = max(cells(header[4]), *map(cells, projects))
    longest_prompt = max(cells(header[5]), widest(columns[5]))
    project_w = min(longest, max(12, room - min(longest_prompt, room // 2) - 2))
    prompt_w = room - project_w - 2
    fitted = {p: pad(fit_path(p, project_w), project_w) for p in (*projects, header[4])}

    def fit_prompt(text: str) -> str:
        if len(text) > prompt_w or not (text.isascii() or cells(text) <= prompt_w):
            text = fit_words(text, prompt_w)
        if text.startswith("[fork of"):
            end = text.find("]") + 1 or len(text)
            text = click.style(text[:end], fg="cyan") + text[end:]
        return text

    def line(row: Sequence[str]) -> str:
        text = "  ".join(
            (
                pad(row[0], widths[0]),
                pad(row[1], widths[1]),
                pad(row[2], widths[2]),
                pad(row[3], widths[3], right=True),
                fitted[row[4]],
            )
        )
        if prompt_w >= 8:
            text += "  " + fit_prompt(row[5])
        return text.rstrip()

    lines = [click.style(line(header), bold=True)]
    # Columns whose every cell is as wide as it is long are padded by ljust and rjust and
    # joined in C (map), with Python only for the prompts that must be cut or coloured.
    if not all(
        "".join(col).isascii() or all(cells(x) == len(x) for x in set(col)) for col in columns[:4]
    ):
        lines += map(line, zip(*columns, strict=True))
        return "\n".join(lines)
    padded: list[Iterable[str]] = [
        map(str.ljust, columns[0], repeat(widths[0])),
        map(str.ljust, columns[1], repeat(widths[1])),
        map(str.ljust, columns[2], repeat(widths[2])),
        map(str.rjust, columns[3], repeat(widths[3])),
        map(fitted.__getitem__, columns[4]),
    ]
    if prompt_w >= 8:
        padded.append(
            q
            if len(q) <= prompt_w and q.isascii() and not q.startswith("[fork of")
            else fit_prompt(q)
            for q in columns[5]
        )
    lines += map(str.rstrip, map("  ".join, zip(*padded, strict=True)))
    return "\n".join(lines)


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection inside: a listing of 10,000 sessions makes some 200,000
    objects and no cycles, and the collector would walk them (and every module) again and
    again for nothing (about 8 % of `list`, measured)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


@functools.cache
def no_collection_at_exit() -> None:
    """At exit, let the interpreter's last collections skip what exists by then (a listing's
    objects and every module: about 9 ms of a 10,000-session `list`); they are freed all the
    same, only not walked again. Registered once."""
    atexit.register(_freeze)


def _freeze() -> None:
    gc.freeze()
    gc.disable()
