"""`list` at scale: the fast table helpers give what the general ones give, the heads cache
believes nothing of a hostile file, and the message counts survive filtered listings and the
1.0 format without reading a transcript again."""

from __future__ import annotations

import json
import marshal
import random
import sys
import unicodedata
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from claude_home import TOOLS, install
from click.testing import CliRunner
from conftest import settings_for

from commuter.backends import claude
from commuter.backends.claude import ClaudeBackend
from commuter.backends.claude.heads import HEADS_FILE, OLD_HEADS_FILES
from commuter.cli import cli
from commuter.commands import session, table
from commuter.commands._app import one_line_text

ALPHABET = (
    "ab cd-ef_gh.ij/kl  \t\n"
    "éüñ—…「」日本語ｶﾀｶﾅ가한\u0301\u200b\u2028\u202e\x1b\x7f\u3000\xa0"
    "😀🎉\U0001f9ea\ufe0f"
)


# The straightforward definitions the fast helpers of commands/table.py must agree with.


def _short_ids(ids: Sequence[str], minimum: int = 7) -> dict[str, str]:
    """Shortest unique prefix of each id, at least `minimum` characters (like git)."""
    out: dict[str, str] = {}
    ordered = sorted(set(ids))
    for i, sid in enumerate(ordered):
        need = minimum
        for j in (i - 1, i + 1):
            if 0 <= j < len(ordered):
                other = ordered[j]
                common = next(
                    (k for k, (a, b) in enumerate(zip(sid, other, strict=False)) if a != b),
                    min(len(sid), len(other)),
                )
                need = max(need, common + 1)
        out[sid] = sid[: min(need, len(sid))]
    return out


def _cells(text: str) -> int:
    """Terminal columns `text` takes (East Asian wide and full-width characters take two)."""
    if text.isascii():  # the common case, without a lookup per character (10,000 rows)
        return len(text)
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _prefix(text: str, width: int) -> str:
    """The longest start of `text` that fits in `width` columns."""
    if text.isascii():
        return text[: max(0, width)]
    used = 0
    for i, c in enumerate(text):
        used += _cells(c)
        if used > width:
            return text[:i]
    return text


def _fit_words(text: str, width: int, breaks: str = " ") -> str:
    """`text` in at most `width` columns, cut after a word (a `breaks` character) and marked
    `…`; mid-word only when the first word alone is wider than `width`."""
    if _cells(text) <= width:
        return text
    if width <= 1:
        return "…" if width == 1 else ""
    cut = _prefix(text, width - 1)
    whole = len(cut) < len(text) and text[len(cut)] in breaks
    if not whole:
        at = max(cut.rfind(b) for b in breaks)
        if at > 0:
            cut = cut[: at + 1] if cut[at] != " " else cut[:at]
    return cut.rstrip() + "…"


def _fit_path(path: str, width: int) -> str:
    """A project path in at most `width` columns: inner segments become `…`, then the head
    is cut (`…/deep.app`); a last segment too long alone is cut after a `-`, `_` or `.`."""
    if _cells(path) <= width:
        return path
    parts = path.split("/")
    for keep_head in (2, 1):
        if len(parts) > keep_head + 1:
            shortened = "/".join([*parts[:keep_head], "…", parts[-1]])
            if _cells(shortened) <= width:
                return shortened
    last = "…/" + parts[-1]
    return last if _cells(last) <= width else _fit_words(parts[-1], width, " -_.")


def _texts(n: int = 3000) -> list[str]:
    rng = random.Random(17)
    return ["".join(rng.choice(ALPHABET) for _ in range(rng.randrange(0, 40))) for _ in range(n)]


def test_nothing_below_u0378_is_wide():
    assert not [c for c in range(0x378) if unicodedata.east_asian_width(chr(c)) in "WF"]


def test_fast_helpers_match_the_general_ones():
    for text in _texts():
        assert table.cells(text) == _cells(text), text
        assert table.one_line(text) == one_line_text(text), text
        for width in (0, 1, 2, 5, 9, 17, 30):
            assert table.prefix(text, width) == _prefix(text, width), (text, width)
            assert table.fit_words(text, width) == _fit_words(text, width)
            path = text.replace(" ", "/")
            assert table.fit_path(path, width) == _fit_path(path, width)


def test_one_lines_match_one_line_text():
    texts = [*_texts(), None, "", " lead", "trail ", "two  spaces", "tab\there"]
    assert table.one_lines(texts) == [one_line_text(t) if t else "" for t in texts]


def test_ages_match_age_for_every_session():
    now = datetime(2026, 12, 3, 15, 0, 0, 500_000, tzinfo=UTC)
    rng = random.Random(11)
    edges = [0, 59, 60, 3599, 3600, 86399, 86400, 7 * 86400, 30 * 86400, 365 * 86400]
    offsets = [e + d for e in edges for d in (-1e-6, 0.0, 1e-6, 0.5, 1.0)]
    offsets += [rng.uniform(-5 * 86400, 6 * 365 * 86400) for _ in range(3000)]
    offsets += [rng.uniform(0, 86400) for _ in range(2000)]  # within the first day
    whens = [now - timedelta(seconds=s) for s in sorted(offsets)]
    assert session.ages(whens, now) == [session.age(w, now) for w in whens]
    assert session.ages(whens[::-1], now) == [session.age(w, now) for w in whens[::-1]]


def test_fast_short_ids_match_the_general_ones():
    rng = random.Random(5)
    ids = [f"{rng.getrandbits(128):032x}" for _ in range(3000)]
    ids += [ids[0][:10] + "0" * 22, ids[1][:7], ids[2][:3], ids[3][:9] + "f" * 23]
    for minimum in (1, 4, 7, 12):
        assert table.short_ids(ids, minimum) == _short_ids(ids, minimum)


def _cached(settings) -> Any:
    return marshal.loads((settings.cache_dir / HEADS_FILE).read_bytes())


def test_a_cache_of_code_or_foreign_values_is_not_run_or_believed(tmp_path: Path, monkeypatch):
    home = install(tmp_path / "h")
    settings = settings_for(home)
    want = list(ClaudeBackend(settings).sessions())
    version, scope, folders = _cached(settings)
    ran: list[int] = []
    monkeypatch.setattr(sys, "commuter_ran", ran, raising=False)
    code = compile("import sys; sys.commuter_ran.append(1)", "<cache>", "exec")
    hostile = {
        name: {entry: (e[0], e[1], code, code, True) for entry, e in entries.items()}
        for name, entries in folders.items()
    }
    docs: list[Any] = [(version, scope, hostile), (version, scope, {"x": code}), code]
    for doc in docs:
        (settings.cache_dir / HEADS_FILE).write_bytes(marshal.dumps(doc))
        assert list(ClaudeBackend(settings).sessions()) == want
        assert ran == []
        assert _cached(settings)[2] == folders


def test_the_old_json_cache_goes_on_the_next_save(tmp_path: Path) -> None:
    home = install(tmp_path / "h")
    settings = settings_for(home)
    old = settings.cache_dir / OLD_HEADS_FILES[0]
    old.parent.mkdir(parents=True)
    old.write_text('{"version": 1, "scope": "x", "heads": {}}')
    list(ClaudeBackend(settings).sessions())
    assert not old.exists()
    assert (settings.cache_dir / HEADS_FILE).is_file()


@pytest.fixture
def scanned(monkeypatch) -> list[Path]:
    """Transcripts read whole to count their messages."""
    reads: list[Path] = []
    real = claude._scan

    def spy(path: Path):
        reads.append(path)
        return real(path)

    monkeypatch.setattr(claude, "_scan", spy)
    return reads


def _list(home: Path, *args: str, cwd: Path | None = None) -> str:
    runner = CliRunner(env={"HOME": str(home), "COLUMNS": "200"})
    if cwd is None:
        done = runner.invoke(cli, ["list", *args])
    else:
        import os

        here = Path.cwd()
        os.chdir(cwd)
        try:
            done = runner.invoke(cli, ["list", *args])
        finally:
            os.chdir(here)
    assert done.exit_code == 0, done.output
    return done.output


def test_counts_outlive_a_filtered_listing_and_the_old_format(
    home: Path, scanned: list[Path]
) -> None:
    install(home)
    settings = settings_for(home)
    first = json.loads(_list(home, "--json", "--all"))
    assert len(scanned) == len(first) > 2
    scanned.clear()
    project = next(Path(r["project"]) for r in first if r["session_id"] == TOOLS)
    _list(home, "--here", cwd=project)
    assert scanned == []
    assert json.loads(_list(home, "--json", "--all")) == first
    assert scanned == []
    # What 1.0 wrote: [size, ISO time, count]; believed, and rewritten once as timestamps.
    counts = settings.state_dir / session.COUNTS_FILE
    doc = json.loads(counts.read_text())
    refs = {f"{r['backend']}:{r['session_id']}": r for r in first}
    old = {k: [v[0], refs[k]["updated_at"], v[2]] for k, v in doc.items()}
    counts.write_text(json.dumps(old))
    assert json.loads(_list(home, "--json", "--all")) == first
    assert scanned == []
    assert json.loads(counts.read_text()) == doc
    # A count for a changed size is not believed.
    doc[f"claude:{TOOLS}"][0] += 1
    counts.write_text(json.dumps(doc))
    again = json.loads(_list(home, "--json", "--all"))
    assert [p.stem for p in scanned] == [TOOLS]
    assert again == first


def test_list_imports_no_bundle_code(tmp_path: Path) -> None:
    """The listing (commuter.listing) leaves export and import machinery unloaded."""
    import os
    import subprocess

    home = install(tmp_path / "h")
    probe = (
        "import contextlib, io, runpy, sys\n"
        "sys.argv = ['commuter', 'list']\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        "        runpy.run_module('commuter', run_name='__main__')\n"
        "    except SystemExit as exc:\n"
        "        assert not exc.code, exc.code\n"
        "print(' '.join(m for m in ('commuter.bundle', 'commuter.core') if m in sys.modules))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "COMMUTER_"))}
    env.update(HOME=str(home), NO_COLOR="1")
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def test_the_collector_is_paused_only_for_the_listing(home: Path) -> None:
    import gc

    install(home)
    assert gc.isenabled()
    _list(home)
    assert gc.isenabled()
    with pytest.raises(RuntimeError), table.paused_gc():
        assert not gc.isenabled()
        raise RuntimeError
    assert gc.isenabled()
    gc.disable()
    try:
        with table.paused_gc():
            pass
        assert not gc.isenabled()  # left as it was found
    finally:
        gc.enable()


def test_the_exit_skips_the_collection_of_what_is_there_once_asked(tmp_path: Path) -> None:
    import subprocess

    probe = (
        "import atexit, gc\n"
        "atexit.register(lambda: print(gc.get_freeze_count() > 0, gc.isenabled()))\n"
        "from commuter.commands import table\n"
        "print(gc.get_freeze_count() > 0, gc.isenabled())\n"
        "table.no_collection_at_exit()\n"
        "table.no_collection_at_exit()\n"
        "print(gc.get_freeze_count() > 0, gc.isenabled())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split("\n") == ["False True", "False True", "True False", ""]


def test_only_a_big_listing_asks_for_it(home: Path, monkeypatch) -> None:
    from commuter import listing
    from commuter.model import SessionRef

    asked: list[int] = []
    monkeypatch.setattr(table, "no_collection_at_exit", lambda: asked.append(1))
    when = datetime(2026, 1, 1, tzinfo=UTC)
    for n in (999, 1000):
        refs = [SessionRef("toy", f"s{i:05}", None, when, None, 1, "hi") for i in range(n)]
        monkeypatch.setattr(listing, "list_sessions", lambda settings, agent, r=refs: r)
        asked.clear()
        assert _list(home).count("\n") == n + 1
        assert asked == ([1] if n >= 1000 else [])
