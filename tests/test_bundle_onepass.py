"""One pass over each file: the writer's observer and late manifest fields, the reader's
routed members, and the Claude export scan that feeds them (issue 17)."""

from __future__ import annotations

import hashlib
import io
import random
from pathlib import Path

import orjson
import pytest
from test_bundle import SID, make_manifest

from commuter.backends.claude import TranscriptScan
from commuter.backends.claude.rewrite import BackupSources, backup_sources
from commuter.bundle import BundleWriter, read_manifest, unpack
from commuter.bundle.model import DIGEST_NAME, MAGIC, _padding, _tar_header
from commuter.errors import BundleError


def _bundle(path: Path, data: bytes, late: dict[str, object] | None) -> None:
    src = path.with_suffix(".src")
    src.write_bytes(data)
    seen: list[bytes] = []
    with path.open("wb") as out:
        writer = BundleWriter(out, make_manifest(message_count=0))
        writer.add_file(f"session/{SID}.jsonl", src, observe=seen.append)
        manifest = writer.close(late)
    assert b"".join(seen) == data  # the observer saw every byte, in order
    if late and "message_count" in late:
        assert manifest.message_count == late["message_count"]


def test_late_fields_travel_in_the_digest(tmp_path: Path) -> None:
    path = tmp_path / "a.bundle"
    late = {"message_count": 41, "meta": {"plan_slug": "p-1", "file_history": {"a": "/b"}}}
    _bundle(path, b'{"type":"user"}\n' * 1000, late)
    got = read_manifest(path)
    assert got.message_count == 41
    assert got.meta["plan_slug"] == "p-1"
    assert got.meta["file_history"] == {"a": "/b"}
    assert got.meta["first_prompt"] == "hello"  # the manifest's own meta stays


def test_without_late_fields_the_manifest_is_as_written(tmp_path: Path) -> None:
    path = tmp_path / "a.bundle"
    _bundle(path, b"x\n", None)
    assert read_manifest(path).message_count == 0


def _hand_made(late: object) -> bytes:
    """A bundle whose digest.json carries `late` as given (the writer refuses bad ones)."""
    import zstandard

    from commuter.bundle.model import manifest_to_dict, root_digest

    data = orjson.dumps(manifest_to_dict(make_manifest()))
    msha = hashlib.sha256(data).hexdigest()
    digest = orjson.dumps(
        {"manifest_sha256": msha, "members": [], "root": root_digest(msha, []), "late": late}
    )
    tar = (
        _tar_header("manifest.json", len(data))
        + data
        + bytes(_padding(len(data)))
        + _tar_header(DIGEST_NAME, len(digest))
        + digest
        + bytes(_padding(len(digest)) + 1024)
    )
    return MAGIC + zstandard.ZstdCompressor(write_checksum=True).compress(tar)


def _deep(n: int) -> object:
    value: object = []
    for _ in range(n):
        value = [value]
    return value


@pytest.mark.parametrize(
    "late",
    [
        {"message_count": "many"},
        {"message_count": -1},
        {"meta": {"plan_slug": 3}},
        {"meta": {"file_history": {"a": 1}}},
        {"meta": []},
        {"other": 1},
        [],
        {"meta": {"x": _deep(70)}},
    ],
)
def test_bad_late_fields_are_refused(tmp_path: Path, late: object) -> None:
    path = tmp_path / "bad.bundle"
    path.write_bytes(_hand_made(late))
    with pytest.raises(BundleError):
        read_manifest(path)
    with pytest.raises(BundleError):
        unpack(path, tmp_path / "staging")
    assert not any((tmp_path / "staging").iterdir())


def test_a_good_hand_made_late_field_is_read(tmp_path: Path) -> None:
    path = tmp_path / "good.bundle"
    path.write_bytes(_hand_made({"message_count": 3}))
    assert read_manifest(path).message_count == 3


def test_writer_refuses_unknown_late_fields() -> None:
    writer = BundleWriter(io.BytesIO(), make_manifest())
    with pytest.raises(BundleError):
        writer.close({"nope": 1})


def test_an_observer_error_fails_the_member(tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"a" * (3 << 20))

    def boom(_chunk: bytes) -> None:
        raise BundleError("scan failed")

    writer = BundleWriter(io.BytesIO(), make_manifest())
    with pytest.raises(BundleError, match="scan failed"):
        writer.add_file("session/x.jsonl", src, observe=boom)


def _transcript(rng: random.Random, lines: int) -> bytes:
    out = []
    for i in range(lines):
        kind = rng.choice(["user", "assistant", "system", "snap", "delta"])
        if kind == "snap":
            out.append(
                orjson.dumps(
                    {
                        "type": "file-history-snapshot",
                        "snapshot": {
                            "trackedFileBackups": {
                                f"src/f{i}.py": {"backupFileName": f"{i:016x}@v1"},
                                f"/abs/g{i}.py": {"backupFileName": f"{i + 1:016x}@v2"},
                            }
                        },
                    }
                )
            )
        elif kind == "delta":
            out.append(
                orjson.dumps(
                    {
                        "type": "file-history-delta",
                        "trackingPath": f"/abs/d{i}.py",
                        "backup": {"backupFileName": f"{i + 7:016x}@v3"},
                    }
                )
            )
        else:
            pad = "x" * rng.randrange(0, 3000)
            out.append(orjson.dumps({"type": kind, "uuid": str(i), "pad": pad, "slug": "my-plan"}))
    return b"\n".join(out) + b"\n"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_streaming_scan_equals_the_whole_file_scan(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    data = _transcript(rng, 400)
    path = tmp_path / "t.jsonl"
    path.write_bytes(data)
    whole = backup_sources(path, "/proj")
    assert whole  # the transcript has records to find
    names = sorted(whole)
    scan = TranscriptScan(f"session/{SID}.jsonl", "/proj", names, _NoDirs())  # type: ignore[arg-type]
    sources = BackupSources("/proj")
    pos = 0
    while pos < len(data):  # chunks of any size, cutting lines and patterns anywhere
        step = rng.choice([1, 7, 13, 100, 4096, 65536])
        scan.feed(data[pos : pos + step])
        sources.feed(data[pos : pos + step])
        pos += step
    assert sources.finish() == whole
    late = scan.late()
    assert late["message_count"] == data.count(b'"type":"user"') + data.count(b'"type":"assistant"')
    assert late["meta"]["file_history"] == {f"file-history/{n}": whole[n] for n in names}
    assert late["meta"]["plan_slug"] == "my-plan"


class _NoDirs:
    def plan(self, slug: str) -> Path:
        return Path("/nonexistent") / f"{slug}.md"


def test_the_message_count_of_a_chunk_counts_each_record_once_at_any_offset() -> None:
    # _messages counts in windows (so the GIL is let go between): a record that starts just
    # before, at or after a window's edge is counted once.
    from commuter.backends.claude import _WINDOW, _messages

    for pattern in (b'"type":"user"', b'"type":"assistant"'):
        for edge in range(_WINDOW - len(pattern) - 1, _WINDOW + 2):
            data = b"x" * edge + pattern + b"y" * 100 + pattern + b"z" * (2 * _WINDOW)
            assert _messages(data) == 2, (pattern, edge)
    rng = random.Random(17)
    parts = [rng.choice([b'"type":"user"', b'"type":"assistant"', b"a" * rng.randint(0, 900)])
             for _ in range(3000)]  # fmt: skip
    data = b"".join(parts)
    assert _messages(data) == data.count(b'"type":"user"') + data.count(b'"type":"assistant"')
    assert _messages(b"") == 0
