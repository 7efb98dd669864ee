"""`list` at scale: the heads cache (path, size, mtime) and nothing heavy imported at start."""

from __future__ import annotations

import marshal
import os
import subprocess
import sys
from pathlib import Path

import pytest
from claude_home import TOOLS, install
from conftest import settings_for

from commuter.backends import claude
from commuter.backends.claude import ClaudeBackend, heads
from commuter.backends.claude.heads import HEADS_FILE

HEAVY = ("aiohttp", "zeroconf", "nacl", "zstandard")


@pytest.fixture
def counted(monkeypatch):
    reads: list[Path] = []
    from commuter.backends.claude.paths import read_head as real  # what claude calls

    def spy(path: Path):
        reads.append(path)
        return real(path)

    monkeypatch.setattr(claude, "read_head", spy)
    return reads


def test_a_second_listing_reads_no_heads(tmp_path: Path, counted: list[Path]) -> None:
    home = install(tmp_path / "h")
    settings = settings_for(home)
    first = list(ClaudeBackend(settings).sessions())
    assert len(counted) == len(first) > 1
    assert (settings.cache_dir / HEADS_FILE).is_file()
    counted.clear()
    again = list(ClaudeBackend(settings).sessions())
    assert counted == [] and again == first


def test_a_changed_transcript_is_read_again(tmp_path: Path, counted: list[Path]) -> None:
    home = install(tmp_path / "h")
    settings = settings_for(home)
    list(ClaudeBackend(settings).sessions())
    [path] = list((home / ".claude" / "projects").rglob(f"{TOOLS}.jsonl"))
    with path.open("ab") as fh:
        fh.write(b"\n")
    counted.clear()
    refs = list(ClaudeBackend(settings).sessions())
    assert counted == [path]
    assert next(r for r in refs if r.session_id == TOOLS).size == path.stat().st_size


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not marshal",
        marshal.dumps([]),
        marshal.dumps((2, "elsewhere", {})),
        marshal.dumps((2, None, 3)),
        b'{"version": 1, "heads": 3}',
    ],
)
def test_a_damaged_or_missing_cache_is_rebuilt(tmp_path: Path, content: bytes) -> None:
    home = install(tmp_path / "h")
    settings = settings_for(home)
    want = list(ClaudeBackend(settings).sessions())
    cache = settings.cache_dir / HEADS_FILE
    cache.write_bytes(content)
    assert list(ClaudeBackend(settings).sessions()) == want
    assert marshal.loads(cache.read_bytes())[0] == 2
    cache.unlink()
    assert list(ClaudeBackend(settings).sessions()) == want


def test_a_cache_entry_of_the_wrong_shape_is_not_believed(tmp_path: Path) -> None:
    home = install(tmp_path / "h")
    settings = settings_for(home)
    want = list(ClaudeBackend(settings).sessions())
    cache = settings.cache_dir / HEADS_FILE
    version, scope, folders = marshal.loads(cache.read_bytes())
    for entries in folders.values():
        for name, entry in entries.items():
            entries[name] = (entry[0], entry[1], 7, {"x": 1}, "yes")
    cache.write_bytes(marshal.dumps((version, scope, folders)))
    assert list(ClaudeBackend(settings).sessions()) == want


def test_the_sessions_of_one_project_share_its_cwd_in_the_cache(tmp_path: Path) -> None:
    home = install(tmp_path / "h")
    settings = settings_for(home)
    cache = settings.cache_dir / HEADS_FILE
    want = list(ClaudeBackend(settings).sessions())
    _version, _scope, folders = marshal.loads(cache.read_bytes())
    cwds = [e[2] for entries in folders.values() for e in entries.values() if e[2]]
    assert len(cwds) > len(set(cwds))  # some project has several sessions
    assert len({id(c) for c in cwds}) == len(set(cwds))  # one string object per project
    assert list(ClaudeBackend(settings).sessions()) == want


def test_a_cache_over_the_size_limit_is_not_believed(
    tmp_path: Path, counted: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    home = install(tmp_path / "h")
    settings = settings_for(home)
    want = list(ClaudeBackend(settings).sessions())
    size = (settings.cache_dir / HEADS_FILE).stat().st_size
    counted.clear()
    monkeypatch.setattr(heads, "MAX_FILE", size - 1)
    assert list(ClaudeBackend(settings).sessions()) == want
    assert len(counted) == len(want)  # every head read again
    monkeypatch.setattr(heads, "MAX_FILE", size)
    counted.clear()
    assert list(ClaudeBackend(settings).sessions()) == want
    assert counted == []


_PROBE = """
import contextlib, io, runpy, sys
sys.argv = ["commuter", *sys.argv[1:]]
with contextlib.redirect_stdout(io.StringIO()):
    try:
        runpy.run_module("commuter", run_name="__main__")
    except SystemExit as exc:
        assert not exc.code, exc.code
print(" ".join(m for m in {heavy!r} if m in sys.modules))
"""


@pytest.mark.parametrize("args", [["--help"], ["list"]])
def test_help_and_list_load_no_network_or_crypto_module(tmp_path: Path, args: list[str]) -> None:
    home = install(tmp_path / "h")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "COMMUTER_"))}
    env.update(HOME=str(home), NO_COLOR="1")
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(heavy=HEAVY), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=home,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
    if args == ["list"]:
        assert (home / ".cache" / "commuter" / HEADS_FILE).is_file()
