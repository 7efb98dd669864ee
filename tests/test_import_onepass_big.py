"""Issue 17, import side: the bundle's digest taken in the pass that verifies it, a big
transcript (the threaded reader, the background writer) written as the ordinary path writes
it, a failed write surfacing, the GIL switch interval restored."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import orjson
import pytest
from claude_home import TOOLS, install, transcript
from conftest import settings_for
from test_bundle import LEGACY

from commuter import config, core, fsutil
from commuter.backends.claude import ClaudeBackend, stream
from commuter.bundle import unpack
from commuter.bundle.read import _THREAD_MIN
from commuter.model import ImportOptions


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _big(a: Path) -> Path:
    """The TOOLS transcript grown past the threaded reader's threshold: its lines again and
    again, each copy with new uuids (so the chain stays a chain)."""
    src = transcript(a, a / "projects" / "my.app", TOOLS)
    lines = src.read_bytes().splitlines(keepends=True)
    out = bytearray(src.read_bytes())
    n = 0
    while len(out) <= _THREAD_MIN + (1 << 20):
        for line in lines:
            entry = orjson.loads(line)
            for key in ("uuid", "parentUuid"):
                if isinstance(entry.get(key), str):
                    entry[key] = f"{n:08x}" + entry[key][8:]
            entry["pad"] = "x" * 20_000  # bulk that names no path
            out += orjson.dumps(entry) + b"\n"
        n += 1
    src.write_bytes(bytes(out))
    return src


@pytest.fixture
def two(tmp_path: Path):
    a = install(tmp_path / "A")
    b = tmp_path / "B"
    (b / "code" / "my.app").mkdir(parents=True)
    sa, sb = settings_for(a), settings_for(b)
    for s in (sa, sb):
        config.set_value(s, "path-map", (str(a / "projects"), str(b / "code")))
    return a, b, sa, sb


def _export(settings, proj: Path, out: Path) -> Path:
    with out.open("wb") as fh:
        core.export_to(settings, fh, session=TOOLS, cwd=proj)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_unpack_digest_is_the_files_sha256(two, tmp_path: Path) -> None:
    a, _b, sa, _sb = two
    bundle = _export(sa, a / "projects" / "my.app", tmp_path / "t.bundle")
    assert unpack(bundle, tmp_path / "staging").digest == _sha(bundle)
    for name in ("plain.json", "tools.json.gz"):
        assert unpack(LEGACY / name, tmp_path / "staging").digest == _sha(LEGACY / name)


def test_a_big_streamed_import_is_the_ordinary_one_and_names_the_bundle(
    two, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b, sa, sb = two
    _big(a)
    bundle = _export(sa, a / "projects" / "my.app", tmp_path / "big.bundle")
    routes: list[str] = []
    real = stream.place_streamed

    def spy(settings, source, options, route):
        routes.append(route.action)
        return real(settings, source, options, route)

    monkeypatch.setattr(stream, "place_streamed", spy)
    first = core.import_file(sb, bundle, ImportOptions(assume_yes=True))
    assert first.action == "created" and routes == ["created"]
    assert first.bundle_digest == _sha(bundle)
    got = _files(b / ".claude")
    assert first.transcript is not None and first.transcript.stat().st_size > _THREAD_MIN
    for path in (b / ".claude").rglob("*"):
        if path.is_file():
            path.unlink()
    monkeypatch.setattr(ClaudeBackend, "stream_route", lambda self, m, o: None)
    again = core.import_file(sb, bundle, ImportOptions(assume_yes=True))
    assert again.action == "created" and routes == ["created"]  # the ordinary path
    assert _files(b / ".claude") == got
    assert (
        str(b / "code" / "my.app").encode() in got[str(first.transcript.relative_to(b / ".claude"))]
    )


def test_a_write_that_fails_is_raised_by_the_background_writer(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"")
    with path.open("rb") as readonly:
        writer = fsutil.BackgroundWriter(readonly)
        writer.write(b"x" * 10)
        with pytest.raises(OSError):
            writer.close()
    for sync_every in (0, 3000):  # synced on the way, or only by whoever closes the file
        with path.open("wb") as fh:
            writer = fsutil.BackgroundWriter(fh, sync_every=sync_every)
            for _ in range(10):
                writer.write(b"ab" * 1000)
            writer.close()
        assert path.read_bytes() == b"ab" * 10_000


def test_quick_handoffs_restore_the_switch_interval() -> None:
    before = sys.getswitchinterval()
    with fsutil.quick_handoffs():
        assert sys.getswitchinterval() == pytest.approx(min(before, fsutil.SWITCH_INTERVAL))
    assert sys.getswitchinterval() == pytest.approx(before)
    with pytest.raises(RuntimeError), fsutil.quick_handoffs():
        raise RuntimeError("x")
    assert sys.getswitchinterval() == pytest.approx(before)
