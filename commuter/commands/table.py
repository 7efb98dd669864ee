"""The `list` table at scale: terminal cells, fitting and short ids with fast paths for the
common text (no character that could be wide), the same results as the general helpers of
commands/session.py (tests/test_list_speed.py compares them)."""

from __future__ import annotations

import contextlib
import functools
import gc
import re
import unicodedata
from collections.abc import Iterator, Sequence

# No character below U+0378 is East Asian wide or full-width (checked in the test).
_MAYBE_WIDE = re.compile("[^\x00-\u0377]")


@functools.lru_cache(maxsize=4096)
def _wide(c: str) -> bool:
    return unicodedata.east_asian_width(c) in "WF"


def cells(text: str) -> int:
    """Terminal columns `text` takes (East Asian wide and full-width characters take two)."""
    if text.isascii():
        return len(text)
    return len(text) + sum(1 for c in _MAYBE_WIDE.findall(text) if _wide(c))


def prefix(text: str, width: int) -> str:
    """The longest start of `text` that fits in `width` columns."""
    if text.isascii() or not any(_wide(c) for c in _MAYBE_WIDE.findall(text)):
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
    if cells(text) <= width:
        return text
    if width <= 1:
        return "…" if width == 1 else ""
    cut = prefix(text, width - 1)
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
    ordered = sorted(set(ids))
    need = [minimum] * len(ordered)
    for i in range(len(ordered) - 1):
        a, b = ordered[i], ordered[i + 1]
        if a[:minimum] != b[:minimum]:
            continue  # they differ within the minimum: it is enough for both
        common = next(
            (k for k, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
        )
        need[i] = max(need[i], common + 1)
        need[i + 1] = max(need[i + 1], common + 1)
    return {sid: sid[: min(n, len(sid))] for sid, n in zip(ordered, need, strict=True)}


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
