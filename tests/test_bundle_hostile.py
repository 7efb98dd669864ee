"""Hostile bundles: every bad input gives one BundleError and leaves nothing in staging."""

from __future__ import annotations

import collections
import hashlib
import io
import os
import random
import tarfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard
from click.testing import CliRunner
from test_bundle import SID, make_manifest

from commuter.bundle import (
    MAGIC,
    BundleWriter,
    Limits,
    Member,
    manifest_to_dict,
    read_manifest,
    root_digest,
    unpack,
)
from commuter.errors import BundleError, CommuterError

T = tuple[tarfile.TarInfo, bytes]


def entry(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = "") -> T:
    info = tarfile.TarInfo(name)
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.type = kind
    info.linkname = link
    return info, data


def manifest_bytes(**changes: object) -> bytes:
    return orjson.dumps(manifest_to_dict(make_manifest(**changes)))


def craft(
    entries: list[T],
    *,
    manifest: bytes | None = None,
    digest: object = "auto",
    magic: bytes = MAGIC,
    list_extra: tuple[Member, ...] = (),
    skip: str = "",
) -> bytes:
    """A bundle made by hand: manifest.json, `entries`, then a digest (computed unless given)."""
    manifest = manifest_bytes() if manifest is None else manifest
    buf = io.BytesIO()
    members = [
        Member(i.name, len(d), hashlib.sha256(d).hexdigest()) for i, d in entries if i.name != skip
    ] + list(list_extra)
    msha = hashlib.sha256(manifest).hexdigest()
    if digest == "auto":
        digest = {
            "manifest_sha256": msha,
            "members": [[m.name, m.size, m.sha256] for m in members],
            "root": root_digest(msha, members),
        }
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info, _ = entry("manifest.json", manifest)
        tar.addfile(info, io.BytesIO(manifest))
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.size else None)
        if digest is not None:
            data = orjson.dumps(digest)
            tar.addfile(entry("digest.json", data)[0], io.BytesIO(data))
    return magic + zstandard.ZstdCompressor(level=1, write_checksum=True).compress(buf.getvalue())


def good_bundle(tmp_path: Path) -> bytes:
    src = tmp_path / "t.jsonl"
    src.write_bytes(b'{"type":"user","message":"hello"}\n' * 3000 + os.urandom(20000))
    out = io.BytesIO()
    writer = BundleWriter(out, make_manifest())
    writer.add_file(f"session/{SID}.jsonl", src)
    writer.add_bytes("history.jsonl", b'{"display":"x"}\n')
    writer.add_bytes("project/CLAUDE.md", b"# hi\n" * 100)
    writer.close()
    return out.getvalue()


def refused(tmp_path: Path, data: bytes, match: str = "", limits: Limits | None = None) -> str:
    """Assert `data` is refused with one BundleError and that staging holds nothing."""
    path = tmp_path / "bad.bundle"
    path.write_bytes(data)
    staging = tmp_path / "staging"
    kwargs: dict[str, Any] = {"limits": limits} if limits else {}
    with pytest.raises(BundleError, match=match or None) as info:
        unpack(path, staging, **kwargs)
    assert list(staging.iterdir()) == [], "staging must be empty after a refused bundle"
    with pytest.raises(BundleError):
        read_manifest(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message
    return message


def test_crafted_good_bundle_is_accepted(tmp_path: Path) -> None:
    """The crafting helper itself makes valid bundles (so the refusals below are meaningful)."""
    path = tmp_path / "ok.bundle"
    path.write_bytes(craft([entry("a/b.txt", b"hello"), entry("c", b"")]))
    assert [m.name for m in read_manifest(path).members] == ["a/b.txt", "c"]


@pytest.mark.parametrize(
    "name",
    [
        "../evil",
        "a/../../evil",
        "/etc/passwd",
        "/abs",
        "a\\..\\b",
        "C:/x",
        "a//b",
        "./a",
        "a/.",
        "x\x00y",
        "x\ny",
        "",
        "manifest.json",
    ],
)
def test_bad_member_names(tmp_path: Path, name: str) -> None:
    refused(tmp_path, craft([entry(name, b"x")]), "bundle")


@pytest.mark.parametrize(
    ("kind", "word"),
    [
        (tarfile.SYMTYPE, "symlink"),
        (tarfile.LNKTYPE, "hardlink"),
        (tarfile.DIRTYPE, "directory"),
        (tarfile.CHRTYPE, "character device"),
        (tarfile.BLKTYPE, "block device"),
        (tarfile.FIFOTYPE, "fifo"),
    ],
)
def test_non_regular_members(tmp_path: Path, kind: bytes, word: str) -> None:
    refused(tmp_path, craft([entry("session/x", kind=kind, link="../../etc/passwd")]), word)


def test_linkname_on_a_regular_file(tmp_path: Path) -> None:
    refused(tmp_path, craft([entry("a", b"x", link="/etc/passwd")]), "link target")


def test_duplicates_and_collisions(tmp_path: Path) -> None:
    refused(tmp_path, craft([entry("a", b"1"), entry("a", b"1")]), "appears twice")
    refused(tmp_path, craft([entry("Readme", b"1"), entry("README", b"1")]), "appears twice")
    refused(tmp_path, craft([entry("a", b"1"), entry("a/b", b"2")]), "collides")
    refused(tmp_path, craft([entry("a/b", b"1"), entry("A", b"2")]), "collides")


def test_session_id_must_be_a_plain_name(tmp_path: Path) -> None:
    for sid in ("../../../../tmp/x", "a/b", "a..b", ".hidden", "-x", "", "x" * 129, "a\0b"):
        refused(
            tmp_path, craft([], manifest=manifest_bytes(session_id=sid)), "not a valid session id"
        )


def test_the_backend_checks_its_own_session_id_shape(tmp_path: Path, settings) -> None:
    # Any plain name passes the reader (another tool's ids need not be UUIDs); Claude Code's
    # are, and an import of anything else is refused before anything is written.
    from commuter import core
    from commuter.model import ImportOptions

    path = tmp_path / "odd.bundle"
    path.write_bytes(craft([], manifest=manifest_bytes(session_id=SID + "0")))
    assert read_manifest(path).session_id == SID + "0"
    with pytest.raises(BundleError, match="not a claude session id"):
        core.import_file(settings, path, ImportOptions(project_dir=tmp_path))
    assert not (settings.home / ".claude").exists()


def test_digest_must_match(tmp_path: Path) -> None:
    refused(tmp_path, craft([entry("a", b"1")], skip="a"), "not listed in the digest")
    ghost = Member("ghost", 1, "0" * 64)
    refused(tmp_path, craft([entry("a", b"1")], list_extra=(ghost,)), "listed in the digest but")
    refused(tmp_path, craft([entry("a", b"1")], digest=None), "no digest.json")
    refused(tmp_path, craft([entry("a", b"1")], digest={"members": 3}), "malformed")
    sha = hashlib.sha256(b"2").hexdigest()
    msha = hashlib.sha256(manifest_bytes()).hexdigest()
    wrong = {
        "manifest_sha256": msha,
        "members": [["a", 1, sha]],
        "root": root_digest(msha, [Member("a", 1, sha)]),
    }
    refused(tmp_path, craft([entry("a", b"1")], digest=wrong), "sha256 mismatch")
    wrong_root = {
        "manifest_sha256": msha,
        "members": [["a", 1, hashlib.sha256(b"1").hexdigest()]],
        "root": "0" * 64,
    }
    refused(tmp_path, craft([entry("a", b"1")], digest=wrong_root), "root sha256")
    bad_manifest = dict(wrong_root, manifest_sha256="0" * 64)
    refused(tmp_path, craft([], digest=bad_manifest), "manifest is corrupt")


def test_members_after_the_digest(tmp_path: Path) -> None:
    buf = io.BytesIO()
    manifest = manifest_bytes()
    msha = hashlib.sha256(manifest).hexdigest()
    digest = orjson.dumps({"manifest_sha256": msha, "members": [], "root": root_digest(msha, [])})
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (("manifest.json", manifest), ("digest.json", digest), ("late", b"x")):
            tar.addfile(entry(name, data)[0], io.BytesIO(data))
    data = MAGIC + zstandard.ZstdCompressor().compress(buf.getvalue())
    refused(tmp_path, data, "after digest.json")


def test_manifest_must_come_first_and_be_well_formed(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.addfile(entry("a", b"1")[0], io.BytesIO(b"1"))
    refused(
        tmp_path,
        MAGIC + zstandard.ZstdCompressor().compress(buf.getvalue()),
        "does not start with manifest.json",
    )
    refused(tmp_path, craft([], manifest=b"{nope"), "not valid JSON")
    refused(tmp_path, craft([], manifest=b"[1, 2]"), "JSON object")
    full = orjson.loads(manifest_bytes())
    for key in (
        "format",
        "backend",
        "session_id",
        "project_dir",
        "created_at",
        "origin",
        "message_count",
        "git",
        "meta",
    ):
        missing = {k: v for k, v in full.items() if k != key}
        refused(tmp_path, craft([], manifest=orjson.dumps(missing)), f"'{key}' is missing")
    for key, value, word in (
        ("format", "2", "integer"),
        ("format", True, "integer"),
        ("message_count", "7", "integer"),
        ("meta", [], "object"),
        ("git", "main", "object or null"),
        ("origin", None, "object"),
        ("session_id", 5, "string"),
        ("project_dir", "", "empty"),
    ):
        refused(tmp_path, craft([], manifest=orjson.dumps(dict(full, **{key: value}))), word)
    origin = dict(full["origin"], hostname=3)
    refused(tmp_path, craft([], manifest=orjson.dumps(dict(full, origin=origin))), "hostname")


def test_newer_format_asks_for_an_upgrade(tmp_path: Path) -> None:
    want = r"bundle format 3 is newer than this commuter supports \(2\); upgrade commuter"
    refused(tmp_path, craft([], magic=b"COMMUTER-BUNDLE 3\n"), want)
    refused(tmp_path, craft([], manifest=manifest_bytes(format=3)), want)


def test_random_bytes_empty_file_and_bad_headers(tmp_path: Path) -> None:
    rng = random.Random(7)
    refused(tmp_path, b"", "empty")
    refused(tmp_path, bytes(rng.getrandbits(8) for _ in range(5000)), "not a commuter bundle")
    refused(tmp_path, MAGIC + bytes(rng.getrandbits(8) for _ in range(5000)), "corrupt")
    refused(tmp_path, MAGIC, "truncated")
    refused(tmp_path, b"COMMUTER-BUNDLE x\n" + b"\0" * 100, "bad COMMUTER-BUNDLE header")
    refused(tmp_path, b"COMMUTER-BUNDLE 2", "header")
    refused(tmp_path, MAGIC + zstandard.ZstdCompressor().compress(b"\x01" * 2048), "bad tar header")


def test_truncated_at_many_points(tmp_path: Path) -> None:
    data = good_bundle(tmp_path)
    for cut in sorted(
        {
            1,
            10,
            len(MAGIC),
            len(MAGIC) + 5,
            100,
            len(data) // 3,
            len(data) // 2,
            len(data) - 100,
            len(data) - 5,
            len(data) - 1,
        }
    ):
        refused(tmp_path, data[:cut])


def test_flipped_bytes_are_caught(tmp_path: Path) -> None:
    data = good_bundle(tmp_path)
    rng = random.Random(11)
    offsets = {
        0,
        3,
        len(MAGIC) - 1,
        len(MAGIC),
        len(MAGIC) + 4,
        len(data) // 2,
        len(data) - 1,
        len(data) - 4,
    }
    offsets |= {rng.randrange(len(MAGIC), len(data)) for _ in range(25)}
    for offset in sorted(offsets):
        bad = bytearray(data)
        bad[offset] ^= 0x5A
        refused(tmp_path, bytes(bad))


def test_trailing_garbage(tmp_path: Path) -> None:
    data = good_bundle(tmp_path)
    refused(tmp_path, data + zstandard.ZstdCompressor().compress(b"x" * 100), "after its end")
    refused(tmp_path, data + b"garbage", "")


def test_limits(tmp_path: Path) -> None:
    data = good_bundle(tmp_path)
    refused(tmp_path, data, "size limits", Limits(max_member=1000))
    refused(tmp_path, data, "size limits", Limits(max_total=50_000))
    refused(tmp_path, data, "more than 2 members", Limits(max_members=2))
    refused(tmp_path, data, "over the 100 byte limit", Limits(max_manifest=100))
    refused(tmp_path, data, "digest", Limits(max_digest=10))


def test_decompression_bomb_stops_at_the_cap(tmp_path: Path) -> None:
    """A tiny file declaring a huge member is stopped by counting, not by memory or disk."""
    zeros = b"\0" * (1 << 20)
    cctx = zstandard.ZstdCompressor(level=3)
    cobj = cctx.compressobj()
    manifest = manifest_bytes()
    header = entry("manifest.json", manifest)[0].tobuf(tarfile.PAX_FORMAT)
    parts = [cobj.compress(header + manifest + b"\0" * (-len(manifest) % 512))]
    big = tarfile.TarInfo("session/big")
    big.size = 200 << 20
    parts.append(cobj.compress(big.tobuf(tarfile.PAX_FORMAT)))
    for _ in range(200):
        parts.append(cobj.compress(zeros))
    parts.append(cobj.flush())
    data = MAGIC + b"".join(parts)
    assert len(data) < 200_000
    limits = Limits(max_total=8 << 20, max_member=8 << 20)
    refused(tmp_path, data, "size limits", limits)


def test_oversized_pax_header(tmp_path: Path) -> None:
    info = tarfile.TarInfo("a")
    info.pax_headers = {"comment": "x" * 70_000}
    refused(tmp_path, craft([(info, b"")]), "pax header")


def test_cli_reports_one_line(tmp_path: Path, home: Path) -> None:
    from commuter.cli import cli

    path = tmp_path / "evil.bundle"
    path.write_bytes(craft([entry("../../../.bashrc", b"echo pwned")]))
    result = CliRunner().invoke(cli, ["import", str(path), "--no-launch", "--yes"])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "'..'" in lines[0]
    assert not (home / ".claude").exists()
    assert not (tmp_path / ".bashrc").exists()
    staging = home / ".local" / "share" / "commuter" / "staging"
    assert [p for p in staging.rglob("*") if not p.is_dir()] == []


def test_big_member_cut_or_corrupted_inside(tmp_path: Path) -> None:
    """Members over 8 MiB are hashed on a worker thread; failures there are caught too."""
    rng = random.Random(3)
    src = tmp_path / "big.jsonl"
    src.write_bytes(b"".join(rng.randbytes(1000).hex().encode() + b"\n" for _ in range(5000)))
    out = io.BytesIO()
    writer = BundleWriter(out, make_manifest())
    writer.add_file(f"session/{SID}.jsonl", src)
    written = writer.close()
    data = out.getvalue()
    good = tmp_path / "good.bundle"
    good.write_bytes(data)
    unpacked = unpack(good, tmp_path / "ok")
    assert (unpacked.root / f"session/{SID}.jsonl").read_bytes() == src.read_bytes()
    assert unpacked.manifest == written
    refused(tmp_path, data[: len(data) * 2 // 3], "truncated")
    bad = bytearray(data)
    bad[len(data) // 2] ^= 1
    refused(tmp_path, bytes(bad))


def test_pax_and_gnu_name_tricks(tmp_path: Path) -> None:
    info = tarfile.TarInfo("harmless")
    info.pax_headers = {"path": "../../evil"}
    refused(tmp_path, craft([(info, b"")]), "'..'")
    info = tarfile.TarInfo("harmless")
    info.pax_headers = {"linkpath": "/etc/passwd"}
    refused(tmp_path, craft([(info, b"")]), "link target")
    buf = io.BytesIO()
    manifest = manifest_bytes()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        tar.addfile(entry("manifest.json", manifest)[0], io.BytesIO(manifest))
        tar.addfile(entry("x" * 200 + "/../../evil", b"")[0])
    refused(tmp_path, MAGIC + zstandard.ZstdCompressor().compress(buf.getvalue()), "GNU long name")


def _size_field(header: bytes, size: int) -> bytes:
    """`header` with its size written base-256 (GNU binary) and its checksum fixed."""
    block = bytearray(header)
    block[124:136] = (
        b"\xff" + ((1 << 88) + size).to_bytes(11, "big")
        if size < 0
        else b"\x80" + size.to_bytes(11, "big")
    )
    return _fix_checksum(block)


def _fix_checksum(block: bytearray) -> bytes:
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def bad_size_bundle(size: int) -> bytes:
    """A bundle whose first member's size field says `size`, followed by 64 MiB of zeros."""
    manifest = manifest_bytes()
    tar = (
        entry("manifest.json", manifest)[0].tobuf(tarfile.PAX_FORMAT)
        + manifest
        + b"\0" * (-len(manifest) % 512)
        + _size_field(tarfile.TarInfo("session/x").tobuf(tarfile.USTAR_FORMAT), size)
    )
    cobj = zstandard.ZstdCompressor(level=3).compressobj()
    parts = [cobj.compress(tar)]
    zeros = b"\0" * (1 << 20)
    parts += [cobj.compress(zeros) for _ in range(64)]
    return MAGIC + b"".join(parts) + cobj.flush()


@pytest.mark.parametrize("size", [-1, -1000, -(1 << 80), 1 << 80])
def test_negative_or_absurd_tar_size_is_refused_in_bounded_memory(
    tmp_path: Path, size: int
) -> None:
    """A base-256 size field can decode to a negative number; it once meant "read it all"."""
    data = bad_size_bundle(size)
    assert len(data) < 10_000
    tracemalloc.start()
    try:
        message = refused(tmp_path, data, "size")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "corrupt" in message
    assert peak < 16 << 20, f"{peak} bytes allocated reading a {len(data)} byte bundle"


def test_pax_size_must_be_ascii_digits_of_sane_length(tmp_path: Path) -> None:
    for value in ("\u00b2", "\u0661", "9" * 5000, "-1", " 1", "99999999999999999"):
        info = tarfile.TarInfo("a")
        info.pax_headers = {"size": value}
        refused(tmp_path, craft([(info, b"")]), "bad size")


def test_tar_header_fuzz_only_ever_raises_commuter_errors(tmp_path: Path) -> None:
    """Seeded random byte changes in the tar headers of a small real bundle: each read either
    succeeds or raises a CommuterError, quickly and in bounded memory."""
    out = io.BytesIO()
    writer = BundleWriter(out, make_manifest())
    writer.add_bytes(f"session/{SID}.jsonl", b'{"type":"user","message":"hello"}\n' * 40)
    writer.add_bytes("project/CLAUDE.md", b"# hi\n" * 200)
    writer.add_bytes("history.jsonl", b'{"display":"x"}\n')
    writer.close()
    tar = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(out.getvalue()[len(MAGIC) :]))
    plain = tar.read()
    headers = [i for i in range(0, len(plain), 512) if plain[i + 257 : i + 262] == b"ustar"]
    assert len(headers) == 5  # manifest, 3 members, digest
    rng = random.Random(20260501)
    path = tmp_path / "fuzz.bundle"
    limits = Limits(max_total=4 << 20, max_member=4 << 20)
    outcomes: collections.Counter[str] = collections.Counter()
    cctx = zstandard.ZstdCompressor(level=1)
    tracemalloc.start()
    started = time.monotonic()
    try:
        for _ in range(400):
            mutated = bytearray(plain)
            touched = set()
            for _ in range(rng.randint(1, 3)):
                at = rng.choice(headers)
                touched.add(at)
                offset = rng.choice(
                    [
                        rng.randrange(512),
                        124 + rng.randrange(12),
                        124,
                        156,
                        rng.randrange(100),
                        345 + rng.randrange(155),
                    ]
                )
                mutated[at + offset] = rng.choice(
                    [
                        0,
                        0x80,
                        0xFF,
                        0x20,
                        ord("-"),
                        ord("7"),
                        ord("/"),
                        ord("."),
                        rng.randrange(256),
                    ]
                )
            if rng.random() < 0.85:  # mostly past the checksum, to reach the parser behind it
                for at in touched:
                    mutated[at : at + 512] = _fix_checksum(mutated[at : at + 512])
            path.write_bytes(MAGIC + cctx.compress(bytes(mutated)))
            try:
                read_manifest(path, limits=limits)
                outcomes["ok"] += 1
            except CommuterError as exc:
                outcomes[type(exc).__name__] += 1
                assert "\n" not in str(exc)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert outcomes["BundleError"] >= 200, outcomes
    assert peak < 32 << 20
    assert time.monotonic() - started < 20


def test_member_name_that_is_not_utf8(tmp_path: Path) -> None:
    """A ustar name with a byte like 0xff decodes to a surrogate; such a name is refused."""
    info = tarfile.TarInfo("project/x.md")
    block = bytearray(info.tobuf(tarfile.USTAR_FORMAT))
    block[8] = 0xFF  # "project/\xff.md"
    manifest = manifest_bytes()
    tar = (
        entry("manifest.json", manifest)[0].tobuf(tarfile.PAX_FORMAT)
        + manifest
        + b"\0" * (-len(manifest) % 512)
        + _fix_checksum(block)
        + bytes(1024)
    )
    refused(tmp_path, MAGIC + zstandard.ZstdCompressor().compress(tar), "not valid UTF-8")
