"""Bundles: writing, verifying, unpacking, inspecting, and reading commuter 0.2 JSON bundles."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest
import zstandard
from click.testing import CliRunner

from commuter import bundle
from commuter.bundle import (
    FORMAT_VERSION,
    MAGIC,
    BundleWriter,
    Manifest,
    Member,
    describe,
    file_digest,
    is_bundle,
    read_manifest,
    unpack,
)
from commuter.errors import BundleError
from commuter.model import Origin

SID = "fcf6708a-b0f9-42e2-b9f0-c72c4c301a99"
LEGACY = Path(__file__).parent / "data" / "legacy"
REAL = Path(__file__).parent / "data" / "claude" / "home" / ".claude" / "projects"


def make_manifest(**changes: object) -> Manifest:
    base = Manifest(
        format=FORMAT_VERSION,
        backend="claude",
        session_id=SID,
        project_dir="/home/a/proj",
        created_at="2026-05-01T10:00:00Z",
        origin=Origin("laptop", "alice", "2026-05-01T10:00:00Z", "0.3.0", "dev-1234"),
        message_count=7,
        git={
            "branch": "main",
            "commit": "a" * 40,
            "dirty": ["x.py"],
            "remote": "git@example.com:a/b.git",
            "root_commit": "b" * 40,
        },
        meta={"first_prompt": "hello", "file_history": {}},
        members=(),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def write_bundle(
    path: Path, files: dict[str, bytes], manifest: Manifest | None = None, tmp: Path | None = None
) -> Manifest:
    """A bundle at `path` with `files` (half added from disk, half from memory)."""
    src = (tmp or path.parent) / "src"
    src.mkdir(exist_ok=True)
    with path.open("wb") as out:
        writer = BundleWriter(out, manifest or make_manifest())
        for i, (name, data) in enumerate(files.items()):
            if i % 2:
                writer.add_bytes(name, data)
            else:
                f = src / f"f{i}"
                f.write_bytes(data)
                writer.add_file(name, f)
        return writer.close()


FILES = {
    f"session/{SID}.jsonl": b'{"type":"user","message":{"content":"hi"}}\n' * 500,
    f"session/{SID}/subagents/agent-1.jsonl": b'{"a":1}\n',
    f"session/{SID}/tool-results/x.txt": os.urandom(3000),
    "file-history/7bb64646fdba004a@v1": b"",
    "tasks/1.json": b"{}",
    "plans/a-plan.md": "# Plan ✓\n".encode(),
    "history.jsonl": b'{"display":"hi"}\n',
    "project/.claude/settings.json": b"{}\n",
    "project/.claude/commands/deep/dir/run tests.md": b"go\n",
    "project/CLAUDE.md": "café 日本\n".encode(),
}


def test_round_trip_is_exact(tmp_path: Path) -> None:
    path = tmp_path / "s.bundle"
    written = write_bundle(path, FILES)
    assert [m.name for m in written.members] == list(FILES)
    assert written.members[0] == Member(
        f"session/{SID}.jsonl",
        len(FILES[f"session/{SID}.jsonl"]),
        hashlib.sha256(FILES[f"session/{SID}.jsonl"]).hexdigest(),
    )
    assert path.read_bytes().startswith(MAGIC)
    unpacked = unpack(path, tmp_path / "staging")
    assert unpacked.manifest == written
    assert unpacked.root.parent == tmp_path / "staging"
    for name, data in FILES.items():
        assert (unpacked.root / name).read_bytes() == data
    got = {p.relative_to(unpacked.root).as_posix() for p in unpacked.root.rglob("*") if p.is_file()}
    assert got == set(FILES)
    assert oct((unpacked.root / "tasks/1.json").stat().st_mode & 0o777) == "0o600"
    assert read_manifest(path) == written
    shutil.rmtree(unpacked.root)


def test_manifest_fields_survive(tmp_path: Path) -> None:
    path = tmp_path / "s.bundle"
    m = make_manifest(
        meta={
            "source_home": "/home/a",
            "file_history": {"file-history/x@v1": "/a"},
            "n": [1, 2.5, None, True],
        },
        git=None,
    )
    written = write_bundle(path, {"history.jsonl": b""}, m)
    got = read_manifest(path)
    assert got == written
    assert got.meta["file_history"] == {"file-history/x@v1": "/a"}
    assert got.git is None and got.origin.device_id == "dev-1234"


def test_empty_bundle_and_reproducible_bytes(tmp_path: Path) -> None:
    a, b = tmp_path / "a.bundle", tmp_path / "b.bundle"
    write_bundle(a, FILES)
    write_bundle(b, FILES)
    assert a.read_bytes() == b.read_bytes()
    assert file_digest(a) == hashlib.sha256(a.read_bytes()).hexdigest()
    empty = tmp_path / "e.bundle"
    assert write_bundle(empty, {}).members == ()
    assert read_manifest(empty).members == ()


def test_stdlib_tar_can_list_it(tmp_path: Path) -> None:
    """The payload is an ordinary zstd-compressed PAX tar (debuggable with zstd and tar)."""
    path = tmp_path / "s.bundle"
    write_bundle(path, FILES)
    raw = path.read_bytes()[len(MAGIC) :]
    tar_bytes = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw)).read()
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        names = tar.getnames()
    assert names == ["manifest.json", *FILES, "digest.json"]


def test_is_bundle(tmp_path: Path) -> None:
    path = tmp_path / "s.bundle"
    write_bundle(path, {})
    assert is_bundle(path)
    for name in ("plain.json", "tools.json.gz", "unicode.json"):
        assert is_bundle(LEGACY / name)
    (tmp_path / "x").write_bytes(b'{"hello": 1}')
    (tmp_path / "e").write_bytes(b"")
    assert not is_bundle(tmp_path / "x")
    assert not is_bundle(tmp_path / "e")
    assert not is_bundle(tmp_path / "missing")


def test_writer_refuses_bad_input(tmp_path: Path) -> None:
    out = io.BytesIO()
    writer = BundleWriter(out, make_manifest())
    writer.add_bytes("a/b", b"1")
    for bad in (
        "../x",
        "/etc/passwd",
        "a//b",
        "a\\b",
        "a/./b",
        "",
        "manifest.json",
        "digest.json",
        "a\0b",
        "x/..",
    ):
        with pytest.raises(BundleError):
            writer.add_bytes(bad, b"")
    with pytest.raises(BundleError, match="twice"):
        writer.add_bytes("a/b", b"2")
    with pytest.raises(BundleError, match="twice"):
        writer.add_bytes("A/B", b"2")  # would collide on a case-insensitive disk
    with pytest.raises(BundleError, match="collides"):
        writer.add_bytes("a", b"2")
    with pytest.raises(BundleError, match="collides"):
        writer.add_bytes("a/b/c", b"2")
    with pytest.raises(BundleError, match="not a regular file"):
        writer.add_file("d", tmp_path)
    for not_utf8 in ("project/\udcff.md", "x\ud800"):  # os.walk's name for bytes like b"\xff"
        with pytest.raises(BundleError, match="not valid UTF-8"):
            writer.add_bytes(not_utf8, b"")
    writer.close()
    with pytest.raises(BundleError, match="closed"):
        writer.add_bytes("c", b"")
    with pytest.raises(BundleError, match="not a valid session id"):
        BundleWriter(io.BytesIO(), make_manifest(session_id="../../etc"))


def test_writer_limits(tmp_path: Path) -> None:
    limits = bundle.Limits(max_members=2, max_total=10, max_manifest=2000)
    writer = BundleWriter(io.BytesIO(), make_manifest(), limits=limits)
    writer.add_bytes("a", b"12345")
    with pytest.raises(BundleError, match="size limits"):
        writer.add_bytes("b", b"123456")
    writer.add_bytes("c", b"1")
    with pytest.raises(BundleError, match="more than 2 members"):
        writer.add_bytes("d", b"")
    with pytest.raises(BundleError, match="over the 2000 byte limit"):
        BundleWriter(io.BytesIO(), make_manifest(meta={"x": "y" * 3000}), limits=limits)


def test_add_file_takes_the_size_at_start(tmp_path: Path) -> None:
    """A transcript still being appended to is bundled as it was when its member began."""
    src = tmp_path / "t.jsonl"
    src.write_bytes(b"line\n" * 10)
    out = tmp_path / "s.bundle"
    with out.open("wb") as fh:
        writer = BundleWriter(fh, make_manifest())
        writer.add_file("session/x", src)
        with src.open("ab") as more:
            more.write(b"later\n")
        written = writer.close()
    assert written.members[0].size == 50
    assert read_manifest(out) == written


def test_describe_lists_what_inspect_shows(tmp_path: Path) -> None:
    path = tmp_path / "s.bundle"
    write_bundle(path, FILES)
    lines = describe(read_manifest(path))
    text = str(lines)
    assert isinstance(lines, list) and text == "\n".join(lines)
    for want in (
        SID,
        "claude",
        "/home/a/proj",
        "alice@laptop",
        "dev-1234",
        "0.3.0",
        "messages:  7",
        "main @ aaaaaaaaaaaa",
        "1 file dirty",
        "git@example.com:a/b.git",
        "10 files,",
        "history.jsonl",
        "hello",
    ):
        assert want in text, want
    many = make_manifest(members=tuple(Member(f"m{i}", i, "0" * 64) for i in range(100)))
    assert "… and 60 more" in str(describe(many))
    assert "not a git repository" in str(describe(make_manifest(git=None)))


def test_staging_parent_is_created_and_left_clean(tmp_path: Path) -> None:
    path = tmp_path / "s.bundle"
    write_bundle(path, FILES)
    staging = tmp_path / "a" / "b" / "staging"
    unpacked = unpack(path, staging)
    assert staging.is_dir()
    shutil.rmtree(unpacked.root)
    assert list(staging.iterdir()) == []


# --- legacy 0.1/0.2 JSON bundles (made by the real commuter 0.2.0 from tests/data/claude) ------


@pytest.mark.parametrize(
    ("name", "sid", "folder", "config"),
    [
        ("plain.json", SID, "-tmp-rcfix-claude-home-projects-my-app", True),
        (
            "tools.json.gz",
            "9f4898fa-a375-40c5-b92d-3ec70555dff2",
            "-tmp-rcfix-claude-home-projects-my-app",
            True,
        ),
        (
            "unicode.json",
            "e24202a2-58e0-498f-910a-77e7ab7f29ca",
            "-tmp-rcfix-claude-home-projects-caf---n----",
            False,
        ),
    ],
)
def test_legacy_bundles_unpack_to_the_same_layout(
    tmp_path: Path, name: str, sid: str, folder: str, config: bool
) -> None:
    unpacked = unpack(LEGACY / name, tmp_path / "staging")
    m = unpacked.manifest
    assert (m.format, m.backend, m.session_id) == (1, "claude", sid)
    assert m.project_dir.startswith("/tmp/rcfix/claude/home/projects/")
    assert (m.origin.hostname, m.origin.user) == ("vm", "alice")
    assert m.origin.created_at == m.created_at != ""
    # the transcript comes back byte for byte as Claude Code wrote it
    original = (REAL / folder / f"{sid}.jsonl").read_bytes()
    assert (unpacked.root / f"session/{sid}.jsonl").read_bytes() == original
    for member in m.members:
        data = (unpacked.root / member.name).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (member.size, member.sha256)
    if config:
        assert (unpacked.root / "project/CLAUDE.md").read_text() == "# my.app\nUse tabs.\n"
        assert (unpacked.root / "project/.claude/commands/test.md").is_file()
        assert b'"Bash(ls)"' in (unpacked.root / "project/.claude/settings.json").read_bytes()
        assert m.git is not None and m.git["branch"] == "main" and m.git["dirty"] == [".txt"]
    else:
        assert m.git is None
    assert read_manifest(LEGACY / name) == m
    assert "commuter 0.1/0.2" in str(describe(m))
    shutil.rmtree(unpacked.root)


def test_legacy_import_through_the_cli(tmp_path: Path, home: Path) -> None:
    """`commuter import` of a 0.2 bundle places the session where `claude --continue` looks."""
    from commuter.cli import cli

    project = home / "code" / "my.app"
    project.mkdir(parents=True)
    result = CliRunner().invoke(
        cli,
        [
            "import",
            str(LEGACY / "plain.json"),
            "--project-dir",
            str(project),
            "--no-launch",
            "--yes",
        ],
    )
    assert result.exit_code == 0, result.stderr
    assert SID in result.stdout
    placed = list((home / ".claude" / "projects").rglob(f"{SID}.jsonl"))
    assert len(placed) == 1
    staging = home / ".local" / "share" / "commuter" / "staging"
    assert [p for p in staging.rglob("*") if not p.is_dir()] == []


def test_legacy_validation(tmp_path: Path) -> None:
    good = (LEGACY / "plain.json").read_bytes()
    cases = {
        "newer": (good.replace(b'"version": "1.0"', b'"version": "2.0"'), "not supported"),
        "sid": (good.replace(SID.encode(), b"../../../etc/passwd"), "not a UUID"),
        "conv": (good.replace(b'"conversation": [', b'"conversation": 5, "x": ['), "conversation"),
        "trunc": (good[: len(good) // 2], "not valid JSON"),
    }
    for key, (data, message) in cases.items():
        path = tmp_path / f"{key}.json"
        path.write_bytes(data)
        staging = tmp_path / f"staging-{key}"
        with pytest.raises(BundleError, match=message):
            unpack(path, staging)
        assert list(staging.iterdir()) == []
    gz = tmp_path / "t.json.gz"
    gz.write_bytes(gzip.compress(good)[:-40])
    with pytest.raises(BundleError, match="corrupt or truncated"):
        unpack(gz, tmp_path / "staging-gz")
    big = tmp_path / "big.json"
    big.write_bytes(good)
    with pytest.raises(BundleError, match="over the 1000 byte limit"):
        unpack(big, tmp_path / "s", limits=bundle.Limits(max_legacy=1000))
    with pytest.raises(BundleError, match="expands beyond"):
        unpack(LEGACY / "tools.json.gz", tmp_path / "s", limits=bundle.Limits(max_legacy=30000))


def test_legacy_lone_surrogates(tmp_path: Path) -> None:
    """JSON may escape a lone surrogate: refused in file text, names and the project path,
    kept as the same escape in the transcript, replaced in display-only fields."""
    base = json.loads((LEGACY / "plain.json").read_text())
    for where, change in {
        "claude_md": lambda o: o["session"]["config"].update(claude_md="a\udcffb"),
        "commands": lambda o: o["session"]["config"]["commands"].update({"t.md": "\ud800"}),
        "command name": lambda o: o["session"]["config"]["commands"].update({"\udcff.md": ""}),
        "project_dir": lambda o: o["session"].update(project_dir="/tmp/\udcff"),
    }.items():
        obj = json.loads(json.dumps(base))
        change(obj)
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(obj))
        staging = tmp_path / "staging"
        with pytest.raises(BundleError, match=where.split()[0]):
            unpack(path, staging)
        assert list(staging.iterdir()) == []
    obj = json.loads(json.dumps(base))
    obj["session"]["conversation"][0]["cut"] = "half an emoji \ud83d"
    obj["source"]["hostname"] = "vm\udcff"
    path = tmp_path / "ok.json"
    path.write_text(json.dumps(obj))
    unpacked = unpack(path, tmp_path / "staging")
    first = (unpacked.root / f"session/{SID}.jsonl").read_bytes().splitlines()[0]
    assert b'"cut":"half an emoji \\ud83d"' in first
    assert json.loads(first)["cut"] == "half an emoji \ud83d"
    assert unpacked.manifest.origin.hostname == "vm\ufffd"
