"""Hostile bundles against the readers' bounds: time linear in the input, memory far below the
machine's, every wrong type or nesting refused at the boundary with one BundleError."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import tarfile
import textwrap
import time
import tracemalloc
from pathlib import Path

import pytest
import zstandard
from click.testing import CliRunner
from test_bundle import LEGACY, SID
from test_bundle_hostile import craft, entry, manifest_bytes, refused

import commuter
from commuter.bundle import MAGIC, Limits, read_manifest, unpack
from commuter.errors import BundleError, ConfigError
from commuter.settings import Settings

PLAIN = json.loads((LEGACY / "plain.json").read_text())


def legacy(tmp_path: Path, change: object = None, **config: object) -> Path:
    """plain.json with `config` merged into session.config, after `change(obj)` if given."""
    obj = json.loads(json.dumps(PLAIN))
    obj["session"]["config"].update(config)
    if callable(change):
        change(obj)
    path = tmp_path / "legacy.json"
    path.write_text(json.dumps(obj))
    return path


def refused_legacy(tmp_path: Path, path: Path, match: str) -> str:
    """`path` is refused by unpack and read_manifest, leaving no unpack-* folder."""
    staging = tmp_path / "staging"
    with pytest.raises(BundleError, match=match) as info:
        unpack(path, staging)
    assert list(staging.iterdir()) == []
    with pytest.raises(BundleError, match=match):
        read_manifest(path)
    assert "\n" not in str(info.value)
    return str(info.value)


def peak_rss_mb(script: str, *args: str) -> tuple[float, str]:
    """Run `script` in a fresh interpreter (this commuter on its path); its peak RSS and output."""
    package_root = str(Path(commuter.__file__).resolve().parent.parent)
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent through fork and exec
    code = textwrap.dedent(script) + textwrap.dedent("""
        import re
        status = open("/proc/self/status").read()
        print("PEAK", re.search(r"VmHWM:\\s*(\\d+) kB", status)[1])
    """)
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=90,
        env={"PYTHONPATH": package_root, "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    peak = int(result.stdout.rsplit("PEAK", 1)[1]) / 1024
    return peak, result.stdout


# --- 6: many members ------------------------------------------------------------------------


def test_legacy_duplicate_check_is_linear(tmp_path: Path) -> None:
    """20 000 command files (0.36 MB) took ~20 s: each name was compared with every other."""
    path = legacy(tmp_path, commands={f"c{i}.md": "x" for i in range(20_000)})
    started = time.monotonic()
    manifest = read_manifest(path)
    assert time.monotonic() - started < 10
    assert len(manifest.members) == 20_003


@pytest.mark.timeout(60)
def test_legacy_over_the_member_limit_is_refused_before_writing(tmp_path: Path) -> None:
    path = legacy(tmp_path, commands={f"c{i}.md": "x" for i in range(100_001)})
    started = time.monotonic()
    refused_legacy(tmp_path, path, "more than 100000 members")
    assert time.monotonic() - started < 20


def test_legacy_duplicates_are_still_found(tmp_path: Path) -> None:
    """Names that only differ in case would be one file on a macOS disk."""
    refused_legacy(tmp_path, legacy(tmp_path, commands={"a.md": "1", "A.MD": "2"}), "twice")
    refused_legacy(tmp_path, legacy(tmp_path, commands={"..": "x"}), r"'\.\.'")


def deep_names_bundle(count: int, shared: bool) -> bytes:
    """`count` members named <2040 folders>/f: under one shared tree or each under its own."""
    cobj = zstandard.ZstdCompressor(level=3).compressobj()
    manifest = manifest_bytes()
    parts = [MAGIC]
    for name, data in [("manifest.json", manifest)] + [
        ((f"x/{'a/' * 2040}{i}" if shared else f"x{i}/{'a/' * 2040}f"), b"") for i in range(count)
    ]:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        parts.append(
            cobj.compress(info.tobuf(tarfile.PAX_FORMAT) + data + b"\0" * (-len(data) % 512))
        )
    parts.append(cobj.compress(bytes(1024)) + cobj.flush())
    return b"".join(parts)


def test_deep_member_names_cost_linear_time_and_bounded_memory(tmp_path: Path) -> None:
    """Every folder prefix of every name was kept as a string: 400 names of 2040 folders
    (a 4 KB bundle) took 1.7 GB and 5 s; 100 000 of them would take the machine."""
    path = tmp_path / "deep.bundle"
    path.write_bytes(deep_names_bundle(100, shared=False))
    assert path.stat().st_size < 10_000
    tracemalloc.start()
    try:
        with pytest.raises(BundleError) as info:
            read_manifest(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100 << 20, f"{peak >> 20} MiB"
    assert "more than 100000 folders" in str(info.value)
    path.write_bytes(deep_names_bundle(1000, shared=True))  # took ~15 s
    started = time.monotonic()
    with pytest.raises(BundleError, match=r"no digest\.json"):  # every name was accepted
        read_manifest(path)
    assert time.monotonic() - started < 8


def test_member_names_must_fit_in_the_digest(tmp_path: Path) -> None:
    refused(
        tmp_path,
        craft([entry(f"n{i:03}", b"") for i in range(10)]),
        "digest may hold",
        Limits(max_digest=700),
    )


# --- 7: legacy gzip bomb and memory ---------------------------------------------------------

BOMB = """
    import sys
    from pathlib import Path
    from commuter.bundle import unpack
    from commuter.errors import BundleError
    try:
        unpack(Path(sys.argv[1]), Path(sys.argv[2]))
    except BundleError as exc:
        print("REFUSED", exc)
    else:
        print("ACCEPTED")
"""


def test_legacy_gzip_bomb_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    """~60 KB of gzip expanding to 320 MiB was read whole (peak ~0.6 GB; ~1 GiB took 3.1 GB)."""
    head = b'{"tool": "commuter", "version": "1.0", "pad": "'
    block = gzip.compress(b" " * (16 << 20), compresslevel=9)
    path = tmp_path / "bomb.json.gz"
    path.write_bytes(gzip.compress(head + b" " * (16 << 20), compresslevel=9) + block * 19)
    assert path.stat().st_size < 400_000
    peak, out = peak_rss_mb(BOMB, str(path), str(tmp_path / "staging"))
    assert "REFUSED legacy bundle expands beyond the 268435456 byte limit" in out, out
    assert peak < 300, f"peak RSS {peak:.0f} MB"
    assert list((tmp_path / "staging").iterdir()) == []


def test_legacy_json_is_converted_one_entry_at_a_time(tmp_path: Path) -> None:
    """42 MB of structure-dense conversation: parsed whole it peaked at ~350 MB."""
    obj = json.loads(json.dumps(PLAIN))
    obj["session"]["conversation"] = []
    text = json.dumps(obj).encode()
    dense = b'{"type":"user","a":[' + b",".join([b"[]"] * 1000) + b"]}"
    text = text.replace(
        b'"conversation": []', b'"conversation": [' + b",".join([dense] * 14_000) + b"]"
    )
    path = tmp_path / "dense.json"
    path.write_bytes(text)
    assert len(text) > 40 << 20
    peak, out = peak_rss_mb(BOMB, str(path), str(tmp_path / "staging"))
    assert "ACCEPTED" in out, out
    assert peak < 200, f"peak RSS {peak:.0f} MB"


def test_legacy_decompressed_size_limit(tmp_path: Path) -> None:
    assert Limits().max_legacy == 256 << 20
    with pytest.raises(BundleError, match="expands beyond the 30000 byte limit"):
        unpack(LEGACY / "tools.json.gz", tmp_path / "s", limits=Limits(max_legacy=30000))
    assert list((tmp_path / "s").iterdir()) == []


# --- 11: wrong types and deep nesting, refused at the boundary ------------------------------


@pytest.mark.parametrize(
    ("git", "word"),
    [
        ({"dirty": 5}, "'dirty' must be array"),
        ({"dirty": True}, "'dirty' must be array"),
        ({"dirty": "x.py"}, "'dirty' must be array"),
        ({"dirty": [1]}, "only strings"),
        ({"branch": 3}, "'branch' must be string or null"),
        ({"commit": []}, "'commit'"),
        ({"remote": {}}, "'remote'"),
        ({"root_commit": 1.5}, "'root_commit'"),
        ({"subdir": False}, "'subdir'"),
    ],
)
def test_manifest_git_fields_are_type_checked(
    tmp_path: Path, git: dict[str, object], word: str
) -> None:
    """inspect met `git.dirty` = 5 as len(5): a TypeError traceback."""
    good: dict[str, object] = {"branch": "main", "commit": "a" * 40, "dirty": [], "remote": None}
    refused(tmp_path, craft([], manifest=manifest_bytes(git=dict(good, **git))), word)


@pytest.mark.parametrize(
    ("meta", "word"),
    [
        ({"first_prompt": 5}, "'first_prompt'"),
        ({"file_history": []}, "'file_history'"),
        ({"file_history": {"file-history/x@v1": 3}}, "only strings"),
        ({"plan_slug": ["a"]}, "'plan_slug'"),
        ({"source_claude_dir": 1}, "'source_claude_dir'"),
        ({"last_activity": {}}, "'last_activity'"),
        ({"entrypoint": True}, "'entrypoint'"),
    ],
)
def test_manifest_meta_fields_are_type_checked(
    tmp_path: Path, meta: dict[str, object], word: str
) -> None:
    refused(tmp_path, craft([], manifest=manifest_bytes(meta=meta)), word)


def test_unknown_manifest_fields_may_hold_any_json(tmp_path: Path) -> None:
    """A backend may add its own fields to git and meta; nothing in commuter reads them."""
    path = tmp_path / "ok.bundle"
    path.write_bytes(
        craft(
            [],
            manifest=manifest_bytes(
                git={"branch": None, "commit": None, "dirty": [], "stash": [1, {"x": None}]},
                meta={"plugin": {"n": [1, 2.5, True]}, "file_history": {}},
            ),
        )
    )
    manifest = read_manifest(path)
    assert manifest.git is not None and manifest.git["stash"] == [1, {"x": None}]


def test_inspect_of_a_wrong_git_type_is_one_line(tmp_path: Path) -> None:
    from commuter.cli import cli

    path = tmp_path / "bad.bundle"
    path.write_bytes(craft([], manifest=manifest_bytes(git={"dirty": 5})))
    result = CliRunner().invoke(cli, ["inspect", str(path)])
    assert result.exit_code == 1, result.output
    assert result.stderr.count("\n") == 1 and "'dirty'" in result.stderr, result.stderr


def nested(depth: int) -> object:
    value: object = "x"
    for _ in range(depth):
        value = [value]
    return value


def test_manifest_nested_too_deep_is_refused(tmp_path: Path) -> None:
    refused(
        tmp_path,
        craft([], manifest=manifest_bytes(meta={"x": nested(100)})),
        "nested more than 64 levels",
    )
    deep = b'{"x":' + b"[" * 5000 + b"]" * 5000 + b"}"  # past orjson's own limit too
    refused(tmp_path, craft([], manifest=deep), "manifest")
    path = tmp_path / "ok.bundle"
    path.write_bytes(craft([], manifest=manifest_bytes(meta={"x": nested(60)})))
    read_manifest(path)


@pytest.mark.parametrize("where", ["conversation", "settings_json", "source", "unknown"])
def test_legacy_nested_too_deep_is_refused(tmp_path: Path, where: str) -> None:
    """A conversation entry or settings_json ~1000 deep was a RecursionError traceback."""

    def change(obj: dict[str, object]) -> None:
        deep = nested(1000)
        session = obj["session"]
        assert isinstance(session, dict)
        if where == "conversation":
            session["conversation"].append({"type": "user", "deep": deep})
        elif where == "settings_json":
            session["config"]["settings_json"] = deep
        else:
            obj[where] = deep

    old_limit = sys.getrecursionlimit()
    sys.setrecursionlimit(5000)  # only so that json.dumps can write the test's input
    try:
        path = legacy(tmp_path, change)
    finally:
        sys.setrecursionlimit(old_limit)
    refused_legacy(tmp_path, path, "nested more than 64 levels deep")


def test_legacy_settings_json_text_is_bounded(tmp_path: Path) -> None:
    """json.dumps(indent=2) writes 2 spaces a level on every line: deep lists multiply."""
    wide = nested(60)
    leaf = wide
    for _ in range(59):
        assert isinstance(leaf, list)
        leaf = leaf[0]
    assert isinstance(leaf, list)
    leaf[:] = [0] * 20_000
    refused_legacy(tmp_path, legacy(tmp_path, settings_json=wide), "settings_json")


def test_legacy_field_types(tmp_path: Path) -> None:
    def conversation(obj: dict[str, object]) -> None:
        obj["session"]["conversation"] = {"a": 1}  # type: ignore[index]

    def session(obj: dict[str, object]) -> None:
        obj["session"] = [1]

    def no_session(obj: dict[str, object]) -> None:
        del obj["session"]

    refused_legacy(tmp_path, legacy(tmp_path, conversation), "'conversation' is a dict")
    refused_legacy(tmp_path, legacy(tmp_path, session), "'session' is a list")
    refused_legacy(tmp_path, legacy(tmp_path, no_session), "'session' is missing")
    refused_legacy(tmp_path, legacy(tmp_path, commands=["a"]), "'commands' is not an object")
    refused_legacy(tmp_path, legacy(tmp_path, claude_md=5), "claude_md")


def test_legacy_json_structure_errors(tmp_path: Path) -> None:
    good = (LEGACY / "plain.json").read_bytes()
    for bad, word in (
        (good + b" {}", "after the end"),
        (good.replace(b'"version": "1.0",', b'"version": "1.0" "x": 1,'), "expected ','"),
        (good.replace(b'"conversation": [', b'"conversation": [,'), "not valid JSON"),
        (good.replace(b'"id": "', b'"id": "\\x'), "not valid JSON"),
        (good[:-3], "not valid JSON"),
        (b'{"tool": "commuter", "version": "1.0", "x": "\xff"}', "not valid JSON"),
    ):
        path = tmp_path / "bad.json"
        path.write_bytes(bad)
        refused_legacy(tmp_path, path, word)


def test_legacy_duplicate_keys_take_the_last_value(tmp_path: Path) -> None:
    """As every JSON parser commuter uses does (0.2's json.loads among them)."""
    text = (LEGACY / "plain.json").read_text()
    text = text.replace('"session": {', '"session": {"id": "not-a-uuid", ', 1)
    path = tmp_path / "dup.json"
    path.write_text(text)
    assert read_manifest(path).session_id == SID


# --- the cap on one import ------------------------------------------------------------------


def test_import_size_cap_from_the_environment(tmp_path: Path) -> None:
    assert Settings.from_env({"HOME": str(tmp_path)}).max_import_size == 4 << 30
    for text, size in (
        ("8G", 8 << 30),
        ("500M", 500 << 20),
        ("64k", 64 << 10),
        ("1000", 1000),
        ("2GiB", 2 << 30),
    ):
        env = {"HOME": str(tmp_path), "COMMUTER_MAX_IMPORT_SIZE": text}
        assert Settings.from_env(env).max_import_size == size
    for text in ("0", "-1", "lots", "1.5G"):
        with pytest.raises(ConfigError, match="COMMUTER_MAX_IMPORT_SIZE"):
            Settings.from_env({"HOME": str(tmp_path), "COMMUTER_MAX_IMPORT_SIZE": text})


def test_import_size_cap_counts_declared_and_decompressed_bytes(tmp_path: Path) -> None:
    limits = Limits().for_import(50_000)
    assert (limits.max_total, limits.max_member) == (50_000, 50_000)
    message = refused(
        tmp_path,
        craft([entry("a", b"x" * 30_000), entry("b", b"y" * 30_000)]),
        "size limits",
        limits,
    )
    assert "50000 in all" in message and "COMMUTER_MAX_IMPORT_SIZE" in message
