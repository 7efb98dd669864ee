"""Hostile transcripts and crash leftovers at import: refused whole, nothing written, swept."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from claude_home import TOOLS, carry, deep_line, install, transcript
from conftest import settings_for

from commuter import config
from commuter.errors import BundleError
from commuter.model import ImportOptions


@pytest.fixture
def two(tmp_path: Path):
    a = install(tmp_path / "A")
    b = tmp_path / "B"
    (b / "code" / "my.app").mkdir(parents=True)
    sa, sb = settings_for(a), settings_for(b)
    for s in (sa, sb):
        config.set_value(s, "path-map", (str(a / "projects"), str(b / "code")))
    return a, b, sa, sb


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if not p.is_dir()) if root.exists() else []


@pytest.mark.parametrize("depth", [300, 1010])  # orjson.dumps fails past 254; the stack past ~990
def test_a_deeply_nested_line_is_refused_and_nothing_is_written(two, tmp_path, depth) -> None:
    a, b, sa, sb = two
    proj_a = a / "projects" / "my.app"
    with transcript(a, proj_a, TOOLS).open("a") as fh:
        fh.write(deep_line(proj_a, depth) + "\n")
    with pytest.raises(BundleError, match="nested deeper than"):
        carry(
            sa,
            sb,
            tmp_path / "stage",
            session=TOOLS,
            cwd=proj_a,
            options=ImportOptions(assume_yes=True),
        )
    assert files_under(b / ".claude") == []  # no orphaned tool-results or file-history
    assert [p for p in (b / ".claude").rglob("*") if p.is_dir()] == []


def test_an_update_refused_midway_keeps_the_local_session_as_it_was(two, tmp_path) -> None:
    a, b, sa, sb = two
    proj_a, proj_b = a / "projects" / "my.app", b / "code" / "my.app"
    carry(sa, sb, tmp_path / "s1", session=TOOLS, cwd=proj_a)
    at_b = transcript(b, proj_b, TOOLS)
    before = {p: p.read_bytes() for p in files_under(b / ".claude")}
    with transcript(a, proj_a, TOOLS).open("a") as fh:
        fh.write(deep_line(proj_a, 300) + "\n")
    with pytest.raises(BundleError):
        carry(sa, sb, tmp_path / "s2", session=TOOLS, cwd=proj_a)
    assert {p: p.read_bytes() for p in files_under(b / ".claude")} == before
    assert at_b.is_file()


_LEAVE = """
import os, sys
from pathlib import Path
from commuter import fsutil
from commuter.settings import Settings
folder, home = Path(sys.argv[1]), sys.argv[2]
settings = Settings.from_env({"HOME": home, "USER": "t"})
staging = settings.staging_dir
(staging / "unpack-x").mkdir(parents=True)
(staging / "unpack-x" / "plain.jsonl").write_text("secret")
cm = fsutil.atomic_writer(folder / (sys.argv[3] + ".jsonl"))
cm.__enter__().write(b"half a transcript")
print(os.getpid(), flush=True)
if sys.argv[4] == "die":
    os._exit(9)  # as kill -9 would: no cleanup
sys.stdin.read()  # stay alive until the test closes stdin
"""


def _leave(folder: Path, home: Path, sid: str, how: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _LEAVE, str(folder), str(home), sid, how],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip()
    if how == "die":
        proc.communicate(timeout=30)  # and close its pipes
    return proc


def test_leftovers_of_dead_processes_are_swept_and_live_ones_kept(two, tmp_path) -> None:
    a, b, sa, sb = two
    proj_a, proj_b = a / "projects" / "my.app", b / "code" / "my.app"
    folder = transcript(b, proj_b, TOOLS).parent
    folder.mkdir(parents=True)
    stranger = folder / ".notes.jsonl.tmp"  # not ours: never touched
    stranger.write_text("x")
    live = _leave(folder, b, "other", "live")
    _leave(folder, b, TOOLS, "die")
    try:
        staging_root = sb.staging_root
        assert len(list(staging_root.iterdir())) == 2
        assert len(list(folder.glob(".*.tmp"))) == 3
        out = tmp_path / "s.commuter"
        from commuter import core

        with out.open("wb") as fh:
            core.export_to(sa, fh, session=TOOLS, cwd=proj_a)
        from commuter import fsutil

        core.import_file(sb, out, ImportOptions(assume_yes=True))  # sweeps at first use
        left = sorted(p.name for p in folder.glob(".*.tmp"))
        assert len(left) == 2 and stranger.name in left
        assert any(".other.jsonl.cm" in name for name in left)  # the live writer's
        assert [
            p.name
            for p in staging_root.iterdir()
            if p.name.startswith("p") and (p / "unpack-x").exists()
        ] == [f"p{fsutil.process_tag_of(live.pid)}"]
        assert transcript(b, proj_b, TOOLS).is_file()
    finally:
        live.communicate(timeout=30)  # closes its stdin: it ends
    assert os.path.exists(folder)
