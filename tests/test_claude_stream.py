"""The one-pass import of a Claude Code transcript (claude/stream.py), through real bundles:
the same files as the ordinary path, nothing visible before the bundle is verified, an update
that appends backed up by a record instead of a copy."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from claude_home import TOOLS, install, transcript
from conftest import settings_for

from commuter import config, core
from commuter.backends.claude import ClaudeBackend, stream
from commuter.errors import BackendError, BundleError
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


@pytest.fixture
def streamed(monkeypatch):
    """Counts the imports that took the one-pass path."""
    calls: list[str] = []
    real = stream.place_streamed

    def spy(settings, source, options, route):
        calls.append(route.action)
        return real(settings, source, options, route)

    monkeypatch.setattr(stream, "place_streamed", spy)
    return calls


def export(settings, proj: Path, out: Path) -> Path:
    with out.open("wb") as fh:
        core.export_to(settings, fh, session=TOOLS, cwd=proj)
    return out


def files_under(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_a_streamed_import_writes_what_the_ordinary_path_writes(
    two, tmp_path, monkeypatch, streamed
) -> None:
    a, b, sa, sb = two
    bundle = export(sa, a / "projects" / "my.app", tmp_path / "t.bundle")
    first = core.import_file(sb, bundle, ImportOptions(assume_yes=True))
    assert first.action == "created" and streamed == ["created"]
    got = files_under(b / ".claude")
    for path in (b / ".claude").rglob("*"):
        if path.is_file():
            path.unlink()
    monkeypatch.setattr(ClaudeBackend, "stream_route", lambda self, m, o: None)
    again = core.import_file(sb, bundle, ImportOptions(assume_yes=True))
    assert again.action == "created" and streamed == ["created"]  # the ordinary path
    assert files_under(b / ".claude") == got
    assert any(name.startswith("file-history/") for name in got)  # renamed backups compared


def test_the_same_bundle_again_is_unchanged_and_writes_nothing(two, tmp_path, streamed) -> None:
    a, b, sa, sb = two
    bundle = export(sa, a / "projects" / "my.app", tmp_path / "t.bundle")
    core.import_file(sb, bundle, ImportOptions(assume_yes=True))
    before = files_under(b / ".claude")
    again = core.import_file(sb, bundle, ImportOptions(assume_yes=True))
    assert again.action == "unchanged" and streamed == ["created", "unchanged"]
    assert files_under(b / ".claude") == before  # no temp left, nothing rewritten


def test_an_update_that_appends_is_backed_up_by_a_record(two, tmp_path, streamed) -> None:
    old, at_b = _import_half(two, tmp_path, ImportOptions())
    side = at_b.parent / TOOLS
    old_side = files_under(side)
    assert old_side  # the session has side files, which the update rewrites
    for path in side.rglob("*"):  # make each differ from what the bundle brings
        if path.is_file():
            path.write_bytes(path.read_bytes() + b"\n")
    old_side = files_under(side)
    result = _import_full(two, tmp_path, ImportOptions())
    assert result.action == "updated" and streamed == ["created", "updated"]
    [record] = result.backups
    assert record.name == stream.PREFIX_RECORD
    assert not list(record.parent.glob("*.jsonl"))  # no copy of the old transcript
    assert files_under(record.parent / TOOLS) == old_side  # the side files as they were
    assert files_under(side) != old_side
    body = json.loads(record.read_text())
    assert body["length"] == len(old) and at_b.read_bytes().startswith(old)
    assert len(at_b.read_bytes()) > len(old)
    stream.restore_prefix(record)
    assert at_b.read_bytes() == old


def test_restore_refuses_a_transcript_that_no_longer_starts_the_same(two, tmp_path) -> None:
    a, b, sa, sb = two
    proj_a, proj_b = a / "projects" / "my.app", b / "code" / "my.app"
    src = transcript(a, proj_a, TOOLS)
    full = src.read_bytes()
    src.write_bytes(full[: full.index(b"\n", len(full) // 2) + 1])
    core.import_file(sb, export(sa, proj_a, tmp_path / "half.bundle"), ImportOptions())
    src.write_bytes(full)
    result = core.import_file(sb, export(sa, proj_a, tmp_path / "full.bundle"), ImportOptions())
    at_b = transcript(b, proj_b, TOOLS)
    changed = b"X" + at_b.read_bytes()[1:]
    at_b.write_bytes(changed)
    with pytest.raises(Exception, match="no longer starts"):
        stream.restore_prefix(result.backups[0])
    assert at_b.read_bytes() == changed


def test_a_bundle_damaged_after_the_transcript_leaves_nothing(two, tmp_path, streamed) -> None:
    a, b, sa, sb = two
    bundle = export(sa, a / "projects" / "my.app", tmp_path / "t.bundle")
    data = bytearray(bundle.read_bytes())
    data[-6] ^= 0xFF  # inside the last block or the checksum: found only at the very end
    bundle.write_bytes(bytes(data))
    with pytest.raises(BundleError):
        core.import_file(sb, bundle, ImportOptions(assume_yes=True))
    assert files_under(b / ".claude") == {} if (b / ".claude").exists() else True
    assert not list(b.rglob("*.tmp"))


def test_a_local_copy_that_went_on_is_forked_by_the_ordinary_path(two, tmp_path, streamed) -> None:
    a, b, sa, sb = two
    proj_a, proj_b = a / "projects" / "my.app", b / "code" / "my.app"
    bundle = export(sa, proj_a, tmp_path / "t.bundle")
    core.import_file(sb, bundle, ImportOptions())
    at_b = transcript(b, proj_b, TOOLS)
    lines = at_b.read_bytes().splitlines(keepends=True)
    local = json.loads(lines[-1])
    local["uuid"] = "11111111-1111-4111-8111-111111111111"
    at_b.write_bytes(b"".join(lines) + json.dumps(local, separators=(",", ":")).encode() + b"\n")
    src = transcript(a, proj_a, TOOLS)
    remote = json.loads(src.read_bytes().splitlines()[-1])
    remote["uuid"] = "22222222-2222-4222-8222-222222222222"
    with src.open("a") as fh:
        fh.write(json.dumps(remote, separators=(",", ":")) + "\n")
    result = core.import_file(sb, export(sa, proj_a, tmp_path / "t2.bundle"), ImportOptions())
    assert result.action == "forked" and streamed == ["created"]
    assert not list(b.rglob("*.tmp"))


def test_a_line_the_rewriter_refuses_leaves_nothing(two, tmp_path, streamed) -> None:
    from claude_home import deep_line

    a, b, sa, sb = two
    proj_a = a / "projects" / "my.app"
    with transcript(a, proj_a, TOOLS).open("a") as fh:
        fh.write(deep_line(proj_a, 300) + "\n")
    bundle = export(sa, proj_a, tmp_path / "t.bundle")
    with pytest.raises(BundleError, match="nested deeper than"):
        core.import_file(sb, bundle, ImportOptions(assume_yes=True))
    assert (
        not [p for p in (b / ".claude").rglob("*") if p.is_file()]
        if (b / ".claude").exists()
        else True
    )
    assert not list(b.rglob("*.tmp"))


def _import_half(two, tmp_path, options: ImportOptions):
    """Import the first half of the session's transcript (A's is whole again after): (old
    bytes at B, B's transcript)."""
    a, b, sa, sb = two
    proj_a, proj_b = a / "projects" / "my.app", b / "code" / "my.app"
    src = transcript(a, proj_a, TOOLS)
    full = src.read_bytes()
    lines = full.splitlines(keepends=True)
    src.write_bytes(b"".join(lines[: len(lines) // 2]))
    core.import_file(sb, export(sa, proj_a, tmp_path / "half.bundle"), options)
    src.write_bytes(full)
    at_b = transcript(b, proj_b, TOOLS)
    return at_b.read_bytes(), at_b


def _import_full(two, tmp_path, options: ImportOptions):
    """Import the whole session (after _import_half: the update); the result."""
    a, _b, sa, sb = two
    bundle = export(sa, a / "projects" / "my.app", tmp_path / "full.bundle")
    return core.import_file(sb, bundle, options)


def _half_then_full(two, tmp_path, options: ImportOptions):
    """Import the first half of the session's transcript, then the whole: (old bytes at B, the
    update's result, B's transcript)."""
    old, at_b = _import_half(two, tmp_path, options)
    return old, _import_full(two, tmp_path, options), at_b


@pytest.mark.parametrize("verified", [False, True])
def test_an_update_records_the_digests_of_the_old_and_the_new_transcript(
    two, tmp_path, streamed, verified
) -> None:
    old, result, at_b = _half_then_full(
        two, tmp_path, ImportOptions(assume_yes=True, sender_verified=verified)
    )
    assert result.action == "updated" and streamed == ["created", "updated"]
    new = at_b.read_bytes()
    [record] = result.backups
    body = json.loads(record.read_text())
    assert body["length"] == len(old) and body["sha256"] == hashlib.sha256(old).hexdigest()
    if verified:  # the delta base is the new transcript as written, without reading it again
        assert result.extra["in_step_sha256"] == hashlib.sha256(new).hexdigest()
        assert result.extra["in_step_size"] == len(new)
    else:
        assert "in_step_sha256" not in result.extra
    assert not [p.name for p in at_b.parent.iterdir() if p.name.endswith(".tmp")]


def test_an_update_of_an_empty_transcript_restores_to_empty(two, tmp_path, streamed) -> None:
    a, b, sa, sb = two
    at_b = transcript(b, b / "code" / "my.app", TOOLS)
    at_b.parent.mkdir(parents=True)
    at_b.write_bytes(b"")
    bundle = export(sa, a / "projects" / "my.app", tmp_path / "t.bundle")
    result = core.import_file(sb, bundle, ImportOptions(assume_yes=True))
    assert result.action == "updated" and streamed == ["updated"]
    body = json.loads(result.backups[0].read_text())
    assert body["length"] == 0 and body["sha256"] == hashlib.sha256(b"").hexdigest()
    stream.restore_prefix(result.backups[0])
    assert at_b.read_bytes() == b""


def test_an_identical_copy_left_unchanged_has_its_digest(two, tmp_path, streamed) -> None:
    a, b, sa, sb = two
    bundle = export(sa, a / "projects" / "my.app", tmp_path / "t.bundle")
    core.import_file(sb, bundle, ImportOptions(assume_yes=True))
    again = core.import_file(sb, bundle, ImportOptions(assume_yes=True, sender_verified=True))
    assert again.action == "unchanged" and streamed == ["created", "unchanged"]
    held = transcript(b, b / "code" / "my.app", TOOLS).read_bytes()
    assert again.extra["in_step_sha256"] == hashlib.sha256(held).hexdigest()


def test_an_update_leaves_side_files_it_would_write_again_unchanged(
    two, tmp_path, streamed
) -> None:
    """Side files already there with the bundle's bytes keep their inode (no temp, no
    rename); one that differs (longer, shorter or other bytes of the same length) gets the
    bundle's bytes; the backup holds each one of the side folder as it was, copied."""
    a = two[0]
    side_a = transcript(a, a / "projects" / "my.app", TOOLS).parent / TOOLS / "tool-results"
    side_a.mkdir(parents=True, exist_ok=True)
    for n in range(4):
        (side_a / f"toolu_{n}.txt").write_bytes(f"output {n}\n".encode() * (n + 1))
    _old, at_b = _import_half(two, tmp_path, ImportOptions())
    files = sorted(p for p in (at_b.parent / TOOLS).rglob("*") if p.is_file())
    files += sorted((two[1] / ".claude" / "file-history" / TOOLS).iterdir())
    assert len(files) >= 6, files
    brought = {p: p.read_bytes() for p in files}
    longer, shorter, other, *kept = files
    longer.write_bytes(brought[longer] + b"more\n")
    shorter.write_bytes(brought[shorter][:-1])
    other.write_bytes(bytes([brought[other][0] ^ 1]) + brought[other][1:])
    before = {p: p.read_bytes() for p in files}
    inodes = {p: p.stat().st_ino for p in kept}

    result = _import_full(two, tmp_path, ImportOptions())

    assert result.action == "updated" and streamed == ["created", "updated"]
    assert {p: p.read_bytes() for p in files} == brought
    assert {p: p.stat().st_ino for p in kept} == inodes
    assert all(p.stat().st_ino != inodes.get(p) for p in (longer, shorter, other))
    [record] = result.backups
    saved = record.parent / TOOLS
    for p in files:
        if at_b.parent in p.parents:
            copy = saved / p.relative_to(at_b.parent / TOOLS)
            assert copy.read_bytes() == before[p]
            if p in kept:  # a copy, not a link: the live file may change in place later
                assert copy.stat().st_ino != p.stat().st_ino
    assert not list(two[1].rglob("*.tmp"))


def test_an_update_appends_to_the_local_transcript_what_it_lacks(two, tmp_path, streamed) -> None:
    """The local copy is not written again: the same inode, its bytes then the new ones, the
    same file a first import of the bundle writes; nothing left beside it."""
    old, at_b = _import_half(two, tmp_path, ImportOptions())
    inode = at_b.stat().st_ino
    result = _import_full(two, tmp_path, ImportOptions())
    assert result.action == "updated" and streamed == ["created", "updated"]
    assert at_b.stat().st_ino == inode
    new = at_b.read_bytes()
    assert new.startswith(old) and len(new) > len(old)
    _a, b, _sa, sb = two
    assert not list(b.rglob("*.tmp"))
    shutil.rmtree(b / ".claude")
    core.import_file(sb, tmp_path / "full.bundle", ImportOptions())  # a first import
    assert at_b.read_bytes() == new


def test_a_transcript_that_grew_before_the_commit_is_left_as_it_is(
    two, tmp_path, streamed, monkeypatch
) -> None:
    """Claude appended to the local copy after the import compared it: nothing is appended
    and no side file is replaced; one clear error; no temp left."""
    _old, at_b = _import_half(two, tmp_path, ImportOptions())
    side = at_b.parent / TOOLS
    for path in side.rglob("*"):  # differ from the bundle's, so that the update replaces them
        if path.is_file():
            path.write_bytes(path.read_bytes() + b"\n")
    sides = files_under(side)
    real = stream.place_streamed

    def claude_writes_first(settings, source, options, route):
        with at_b.open("ab") as fh:
            fh.write(b'{"type":"user","uuid":"late"}\n')
        return real(settings, source, options, route)

    monkeypatch.setattr(stream, "place_streamed", claude_writes_first)
    before = at_b.read_bytes()
    with pytest.raises(BackendError, match="changed while it was being updated"):
        _import_full(two, tmp_path, ImportOptions())
    assert at_b.read_bytes() == before + b'{"type":"user","uuid":"late"}\n'
    assert files_under(side) == sides
    assert not list(two[1].rglob("*.tmp"))


def test_an_append_that_fails_cuts_the_transcript_back(
    two, tmp_path, streamed, monkeypatch
) -> None:
    """A write that fails half-way through the append (a full disk) leaves the local copy
    as it was, byte for byte, and no temp."""
    old, at_b = _import_half(two, tmp_path, ImportOptions())
    real = os.pwrite
    calls: list[int] = []

    def full_disk(fd: int, data, offset: int) -> int:
        calls.append(offset)
        if len(calls) > 1:
            raise OSError(28, "No space left on device")
        return real(fd, data[: max(1, len(data) // 2)], offset)

    monkeypatch.setattr(os, "pwrite", full_disk)  # placing's append is its one caller
    with pytest.raises(OSError, match="No space left"):
        _import_full(two, tmp_path, ImportOptions())
    assert len(calls) >= 2  # a part was written before the failure
    assert at_b.read_bytes() == old
    assert not list(two[1].rglob("*.tmp"))


def test_a_transcript_replaced_by_a_symlink_before_the_commit_gets_nothing(
    two, tmp_path, streamed, monkeypatch
) -> None:
    """The local transcript turned into a symlink after the import compared it: nothing is
    written through it (its target keeps its bytes), no side file is replaced, one error."""
    _old, at_b = _import_half(two, tmp_path, ImportOptions())
    side = at_b.parent / TOOLS
    for path in side.rglob("*"):
        if path.is_file():
            path.write_bytes(path.read_bytes() + b"\n")
    sides = files_under(side)
    elsewhere = tmp_path / "elsewhere.jsonl"
    real = stream.place_streamed

    def swapped(settings, source, options, route):
        elsewhere.write_bytes(at_b.read_bytes())  # as long as the copy compared
        at_b.unlink()
        at_b.symlink_to(elsewhere)
        return real(settings, source, options, route)

    monkeypatch.setattr(stream, "place_streamed", swapped)
    with pytest.raises(BackendError, match="changed while it was being updated"):
        _import_full(two, tmp_path, ImportOptions())
    assert elsewhere.read_bytes() == _old
    assert at_b.is_symlink()
    assert files_under(side) == sides
    assert not list(two[1].rglob("*.tmp"))
