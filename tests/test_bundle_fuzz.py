"""Seeded mutation fuzzing of the bundle readers.

Valid bundles (exported from the real-shaped sessions in tests/data/claude, and the commuter 0.2
JSON bundles in tests/data/legacy) are mutated: bytes flipped, cut, inserted; tar headers
changed; manifest fields given other types; members renamed to path tricks, duplicated or given
huge sizes; JSON nested deep. Every case goes through read_manifest, inspect's lines, unpack
and (for the ones that verify) core.import_file into a temp HOME. Each may succeed or raise a
CommuterError, never anything else, and nothing may appear or change outside the folders the
call is allowed to write. A failure lists the first cases that broke a rule, to replay by seed.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import os
import random
import shutil
import tarfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard
from claude_home import PLAN, SUBAGENT, TOOLS, install
from conftest import settings_for
from test_bundle_hostile import _fix_checksum

from commuter import core
from commuter.bundle import MAGIC, Member, describe, read_manifest, root_digest, unpack
from commuter.errors import CommuterError
from commuter.model import ImportOptions

LEGACY = Path(__file__).parent / "data" / "legacy"
ESCAPE = "cm-fuzz-escape"  # the file name every path trick aims to create
HOSTILE_NAMES = (
    f"../{ESCAPE}",
    f"../../../../../../../../tmp/{ESCAPE}",
    f"/tmp/{ESCAPE}",
    f"C:/{ESCAPE}",
    f"a/../../{ESCAPE}",
    f"session/../../{ESCAPE}",
    f"project/../../{ESCAPE}",
    f"project/.claude/../../../{ESCAPE}",
    f"a\\..\\{ESCAPE}",
    f"./{ESCAPE}",
    f"a//{ESCAPE}",
    f"{ESCAPE}\x00.txt",
    f"{ESCAPE}\n",
    "",
    ".",
    "..",
    "manifest.json",
    "digest.json",
    "x" * 300,
    "/".join(["d"] * 3000),
    f"file-history/../../{ESCAPE}",
    f"tasks/../{ESCAPE}",
    f"plans/../../{ESCAPE}.md",
    f"session/{TOOLS}/subagents/../../../../{ESCAPE}",
    f"project/\udcff{ESCAPE}",
)
ODD_NAMES = (  # names the reader accepts: what the import makes of them is checked
    "project/.git/hooks/pre-commit",
    "project/.claude/settings.local.json",
    "project/.envrc",
    "project/.claude/commands/deep/x/y.md",
    f"session/{TOOLS}/subagents/{ESCAPE}.jsonl",
    f"session/{TOOLS}/tool-results/a b.txt",
    "file-history/zzzz@v1",
    "tasks/9.json",
    "plans/other-plan.md",
    "history.jsonl",
    "project/CLAUDE.md",
    "project/café/日本.md",
    f"session/{PLAN}.jsonl",
    "tasks/x.txt",
    "unknown/thing",
    "project/.claude/settings.json",
)
ODD_VALUES: tuple[object, ...] = (
    None,
    True,
    False,
    0,
    -1,
    1 << 62,
    1.5,
    1e308,
    "",
    "x" * 5000,
    f"../../{ESCAPE}",
    f"/tmp/{ESCAPE}",
    "C:\\x",
    [],
    {},
    [None, 1, "a"],
    {"": None, "k": [{}]},
    "\u2028\x1b[2J",
    "\ud800",
    "0" * 40,
    "00000000-0000-0000-0000-000000000000",
)
BIG_NUMBER = b"1" + b"0" * 30  # over 64 bits: orjson refuses it, the stdlib parses it


@dataclasses.dataclass
class Seeds:
    plain: list[tuple[bytes, list[tuple[str, bytes]]]]  # (manifest.json, members) per bundle
    raw: list[bytes]  # the exported bundle files
    legacy: list[bytes]  # 0.2 JSON text


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> Seeds:
    source = install(tmp_path_factory.mktemp("source") / "home")
    settings = settings_for(source)
    raw, plain = [], []
    for sid in (TOOLS, PLAN, SUBAGENT):
        out = io.BytesIO()
        core.export_to(settings, out, session=sid, cwd=source / "projects" / "my.app")
        raw.append(out.getvalue())
        tar = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw[-1][len(MAGIC) :])).read()
        with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
            files = [
                (i.name, archive.extractfile(i).read())  # type: ignore[union-attr]
                for i in archive.getmembers()
            ]
        assert files[0][0] == "manifest.json" and files[-1][0] == "digest.json"
        members = [
            *files[1:-1],
            ("project/CLAUDE.md", b"# hi\n"),
            ("project/.claude/commands/t.md", b"run\n"),
            ("project/.claude/settings.json", b"{}\n"),
        ]
        manifest = orjson.loads(files[0][1])
        assert manifest["git"] is None  # the fixture project is no git repository: give it one
        manifest["git"] = {
            "branch": "main",
            "commit": "a" * 40,
            "dirty": ["x.py"],
            "remote": "git@example.com:a/b.git",
            "root_commit": "b" * 40,
            "subdir": ".",
        }
        plain.append((orjson.dumps(manifest, option=orjson.OPT_INDENT_2), members))
    legacy = [
        (LEGACY / "plain.json").read_bytes(),
        (LEGACY / "unicode.json").read_bytes(),
        gzip.decompress((LEGACY / "tools.json.gz").read_bytes()),
    ]
    return Seeds(plain, raw, legacy)


class Harness:
    """A temp root holding the inputs, a staging folder, a HOME to import into, a project and
    files nobody may touch; runs each case through every reader and checks the rules."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.inputs = root / "in"
        self.staging = root / "staging"
        self.home = root / "home"
        self.project = root / "project"
        for folder in (self.inputs, self.staging, self.home / ".config", self.project):
            folder.mkdir(parents=True)
        for keep in (
            self.home / ".bashrc",
            self.home / ".config" / "keep",
            self.project / "README",
            root / "outside",
        ):
            keep.write_text("keep\n")
        self.settings = settings_for(self.home)
        # what an import may write: Claude's session folders and commuter's data, and in the
        # project only its Claude config
        self.allowed = tuple(
            str(p) + os.sep
            for p in (
                self.home / ".claude" / "projects",
                self.home / ".claude" / "file-history",
                self.home / ".claude" / "tasks",
                self.home / ".claude" / "plans",
                self.home / ".local" / "share" / "commuter",
                self.project / ".claude",
            )
        )
        self.allowed_files = {
            str(self.home / ".claude" / "history.jsonl"),
            str(self.project / "CLAUDE.md"),
        }
        self.outcomes: Counter[str] = Counter()
        self.failures: list[str] = []

    def snapshot(self) -> dict[str, tuple[int, int, int]]:
        """Every path under the root but the inputs: mode, and size and mtime of files."""
        found = {}
        for top, dirs, files in os.walk(self.root):
            if top == str(self.root):
                dirs.remove("in")
            for name in dirs:
                found[os.path.join(top, name)] = (os.lstat(os.path.join(top, name)).st_mode, 0, 0)
            for name in files:
                st = os.lstat(os.path.join(top, name))
                found[os.path.join(top, name)] = (st.st_mode, st.st_size, st.st_mtime_ns)
        return found

    def _changed(self, before: dict[str, tuple[int, int, int]], importing: bool) -> list[str]:
        after = self.snapshot()
        changed = [p for p in set(before) | set(after) if before.get(p) != after.get(p)]
        if not importing:
            return changed
        return [
            p
            for p in changed
            if not (p + os.sep).startswith(self.allowed)
            and p not in self.allowed_files
            and not any(a.startswith(p + os.sep) for a in self.allowed)
        ]  # their parents

    def run(self, label: str, data: bytes, *, importing: bool = False) -> None:
        path = self.inputs / "case.bundle"
        path.write_bytes(data)
        before = self.snapshot()
        outcome = "refused"
        try:
            outcome = self._read(path, importing)
        except CommuterError as exc:
            if "\n" in str(exc) or not str(exc):
                self.failures.append(f"{label}: error message {str(exc)[:200]!r}")
        except Exception:
            self.failures.append(f"{label}: {traceback.format_exc(limit=-4)}")
            outcome = "TRACEBACK"
        self.outcomes[outcome] += 1
        changed = self._changed(before, importing)
        if changed:
            self.failures.append(f"{label}: changed outside the allowed folders: {changed[:5]}")

    def _read(self, path: Path, importing: bool) -> str:
        manifest = read_manifest(path)
        str(describe(manifest))
        unpacked = unpack(path, self.staging)
        try:
            if not unpacked.root.is_relative_to(self.staging):
                raise AssertionError(f"unpacked into {unpacked.root}")
            names = {
                p.relative_to(unpacked.root).as_posix()
                for p in unpacked.root.rglob("*")
                if not p.is_dir()
            }
            if names != {m.name for m in manifest.members}:
                raise AssertionError(f"unpacked {sorted(names)[:5]}, manifest lists others")
        finally:
            shutil.rmtree(unpacked.root)
        if not importing:
            return "read"
        core.import_file(
            self.settings,
            path,
            ImportOptions(project_dir=self.project, assume_yes=True, replace=True),
        )
        return "imported"

    def check(self, least_ok: int) -> None:
        """No rule broken, no path trick landed anywhere, and enough cases got all the way."""
        for parent in (self.root, *self.root.parents, Path("/tmp")):
            assert not (parent / ESCAPE).exists(), parent
        assert not self.failures, f"{len(self.failures)} bad cases; first:\n" + "\n".join(
            self.failures[:8]
        )
        assert self.outcomes["read"] + self.outcomes["imported"] >= least_ok, self.outcomes


# --- mutators -------------------------------------------------------------------------------


def flip(rng: random.Random, data: bytes, start: int = 0) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(start, len(out))
        out[at] = rng.choice([out[at] ^ (1 << rng.randrange(8)), 0, 0xFF, rng.randrange(256)])
    return bytes(out)


def cut_or_insert(rng: random.Random, data: bytes, start: int = 0) -> bytes:
    at = rng.randrange(start, len(data) + 1)
    kind = rng.randrange(4)
    if kind == 0:
        return data[:at]
    if kind == 1:
        chunk = rng.choice(
            [
                rng.randbytes(rng.randint(1, 600)),
                b"\0" * 512,
                data[:512],
                b"[" * 200,
                b'"',
                b"\\",
                b"{" + b'"a":' * 50,
            ]
        )
        return data[:at] + chunk + data[at:]
    if kind == 2:
        end = min(len(data), at + rng.randint(1, 2000))
        return data[:at] + data[at:end] + data[at:]  # a slice repeated
    return data[:at] + data[at + rng.randint(1, 100) :]


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def odd_value(rng: random.Random) -> object:
    return rng.choice(ODD_VALUES)


def json_text(obj: object, rng: random.Random) -> bytes:
    """`obj` as JSON, with the placeholders DEEP:n and BIG replaced by raw JSON."""
    text = json.dumps(obj, ensure_ascii=rng.random() < 0.7).encode("utf-8", "surrogatepass")
    text = text.replace(b'"BIG"', BIG_NUMBER)
    for depth in (63, 64, 65, 300, 1000, 5000):
        text = text.replace(f'"DEEP:{depth}"'.encode(), nested(depth).encode())
    return text


def containers(obj: object, depth: int = 0) -> list[tuple[Any, Any]]:
    """(container, key) for every value inside `obj`, a few levels down."""
    found: list[tuple[Any, Any]] = []
    items = (
        obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    )
    for key, value in items:
        found.append((obj, key))
        if depth < 4:
            found += containers(value, depth + 1)
    return found


def mutate_json(rng: random.Random, obj: Any) -> Any:
    """A copy of `obj` with one to three values replaced, deleted, deepened or added."""
    obj = json.loads(json.dumps(obj))
    for _ in range(rng.randint(1, 3)):
        spots = containers(obj)
        if not spots:
            break
        parent, key = rng.choice(spots)
        kind = rng.randrange(6)
        if kind == 0 and isinstance(parent, dict):
            del parent[key]
        elif kind == 1:
            parent[key] = rng.choice(
                ["DEEP:63", "DEEP:64", "DEEP:65", "DEEP:300", "DEEP:1000", "DEEP:5000"]
            )
        elif kind == 2:
            parent[key] = "BIG"
        elif kind == 3 and isinstance(parent, dict):
            parent[rng.choice(["extra", "dirty", "branch", "file_history", "x" * 300])] = odd_value(
                rng
            )
        else:
            parent[key] = odd_value(rng)
    return obj


def rebuild(
    manifest: bytes, members: list[tuple[str, bytes]], rng: random.Random, digest: object = "auto"
) -> bytes:
    """A bundle with these contents whose digest is right (unless `digest` says otherwise)."""
    msha = hashlib.sha256(manifest).hexdigest()
    if digest == "auto":
        listed = [Member(n, len(d), hashlib.sha256(d).hexdigest()) for n, d in members]
        digest = {
            "manifest_sha256": msha,
            "members": [[m.name, m.size, m.sha256] for m in listed],
            "root": root_digest(msha, listed),
        }
    pax = rng.random() < 0.3  # a PAX path record even for short names, as for long ones
    buf = io.BytesIO()
    with tarfile.open(
        fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, errors="surrogateescape"
    ) as tar:
        for name, data in [
            ("manifest.json", manifest),
            *members,
            ("digest.json", json.dumps(digest).encode()),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            if pax:
                info.pax_headers = {"path": name}
            tar.addfile(info, io.BytesIO(data))
    return MAGIC + zstandard.ZstdCompressor(level=1).compress(buf.getvalue())


def structured(rng: random.Random, manifest: bytes, members: list[tuple[str, bytes]]) -> bytes:
    """One structured change to a valid bundle, still carrying a right digest mostly."""
    members = list(members)
    obj = orjson.loads(manifest)
    kind = rng.randrange(9)
    if kind <= 2:
        return rebuild(json_text(mutate_json(rng, obj), rng), members, rng)
    if kind == 3:
        i = rng.randrange(len(members))
        members[i] = (rng.choice(HOSTILE_NAMES), members[i][1])
    elif kind == 4:
        members.append((rng.choice(ODD_NAMES), rng.choice([b"", b"x\n", b"\0\xff" * 100])))
    elif kind == 5:
        name, data = rng.choice(members)
        other = rng.choice([name, name.upper(), name + "/x", name.rsplit("/", 1)[0]])
        members.insert(rng.randrange(len(members) + 1), (other, data))
    elif kind == 6:  # the transcript's content
        sid = obj["session_id"]
        line = rng.choice(
            [
                b'{"type":"user","deep":' + nested(rng.choice([60, 300, 1100])).encode() + b"}",
                b"not json",
                b"\xff\xfe\0",
                b'{"type":"user","cwd":"/etc","sessionId":"x"}',
                b'{"type":"user","message":{"content":"' + b"y" * 200_000 + b'"}}',
                b'{"a":' + BIG_NUMBER + b"}",
                b"",
                b"[]",
                b'"\\ud800"',
            ]
        )
        members = [(n, d + line + b"\n" if n == f"session/{sid}.jsonl" else d) for n, d in members]
    elif kind == 7:  # the digest, made by hand
        msha = hashlib.sha256(manifest).hexdigest()
        listed = [Member(n, len(d), hashlib.sha256(d).hexdigest()) for n, d in members]
        digest: dict[str, Any] = {
            "manifest_sha256": msha,
            "members": [[m.name, m.size, m.sha256] for m in listed],
            "root": root_digest(msha, listed),
        }
        return rebuild(manifest, members, rng, digest=mutate_json(rng, digest))
    else:  # a declared size that is not the data's
        data = rebuild(manifest, members, rng)
        tar = bytearray(
            zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data[len(MAGIC) :])).read()
        )
        heads = [i for i in range(0, len(tar), 512) if tar[i + 257 : i + 262] == b"ustar"]
        at = rng.choice(heads)
        size = rng.choice([0, 1, 511, 1 << 33, (1 << 63) - 1, -1])
        tar[at + 124 : at + 136] = b"\x80" + size.to_bytes(11, "big") if size >= 0 else b"\xff" * 12
        tar[at : at + 512] = _fix_checksum(tar[at : at + 512])
        return MAGIC + zstandard.ZstdCompressor(level=1).compress(bytes(tar))
    return rebuild(manifest, members, rng)


def tar_level(rng: random.Random, data: bytes) -> bytes:
    """Bytes of the tar stream changed (header checksums mostly fixed), then recompressed."""
    tar = bytearray(
        zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data[len(MAGIC) :])).read()
    )
    heads = [i for i in range(0, len(tar), 512) if tar[i + 257 : i + 262] == b"ustar"]
    if rng.random() < 0.5:
        at = rng.choice(heads)
        for _ in range(rng.randint(1, 3)):
            tar[
                at
                + rng.choice([rng.randrange(512), 124 + rng.randrange(12), 156, rng.randrange(100)])
            ] = rng.randrange(256)
        if rng.random() < 0.85:
            tar[at : at + 512] = _fix_checksum(tar[at : at + 512])
        changed = bytes(tar)
    else:
        changed = cut_or_insert(rng, bytes(tar))
    return MAGIC + zstandard.ZstdCompressor(level=1).compress(changed)


# --- the fuzz runs --------------------------------------------------------------------------


def run_cases(
    harness: Harness, count: int, seed: int, make: Callable[[random.Random], tuple[bytes, bool]]
) -> None:
    started = time.monotonic()
    for case in range(count):
        rng = random.Random(seed * 100_000 + case)
        data, importing = make(rng)
        harness.run(f"seed {seed} case {case}", data, importing=importing)
    assert time.monotonic() - started < 100


def test_fuzz_plain_bundles(seeds: Seeds, tmp_path: Path) -> None:
    harness = Harness(tmp_path / "fuzz")

    def make(rng: random.Random) -> tuple[bytes, bool]:
        i = rng.randrange(len(seeds.raw))
        manifest, members = seeds.plain[i]
        layer = rng.randrange(10)
        if layer <= 1:
            return flip(rng, seeds.raw[i], rng.choice([0, len(MAGIC)])), False
        if layer == 2:
            return cut_or_insert(rng, seeds.raw[i]), False
        if layer <= 4:
            return tar_level(rng, seeds.raw[i]), False
        return structured(rng, manifest, members), True

    run_cases(harness, 1800, 1, make)
    harness.check(least_ok=150)


def test_fuzz_legacy_bundles(seeds: Seeds, tmp_path: Path) -> None:
    harness = Harness(tmp_path / "fuzz")

    def make(rng: random.Random) -> tuple[bytes, bool]:
        text = rng.choice(seeds.legacy)
        layer = rng.randrange(10)
        if layer <= 1:
            head = text.index(b'"tool"') + 20  # past the sniffed part, mostly
            data = flip(rng, text, rng.choice([0, head, head]))
        elif layer <= 3:
            data = cut_or_insert(rng, text, text.index(b'"tool"') + 20)
        else:
            obj = json.loads(text)
            config = obj["session"].setdefault("config", {})
            if layer == 4:
                config.setdefault("commands", {})[rng.choice(HOSTILE_NAMES + ODD_NAMES)] = "x"
            elif layer == 5:
                obj["session"]["conversation"].append(
                    rng.choice(
                        [
                            "DEEP:64",
                            "DEEP:1000",
                            {"type": "user", "d": "DEEP:65"},
                            "BIG",
                            5,
                            None,
                            {"type": "user", "big": "BIG"},
                            {"type": "user", "s": "\ud83d"},
                        ]
                    )
                )
            else:
                obj = mutate_json(rng, obj)
            data = json_text(obj, rng)
        if rng.random() < 0.25:
            data = gzip.compress(data, compresslevel=1)
            if rng.random() < 0.3:
                data = cut_or_insert(rng, data, 20)
        return data, layer >= 4

    run_cases(harness, 1500, 2, make)
    harness.check(least_ok=150)


def test_the_harness_sees_writes_out_of_place(tmp_path: Path) -> None:
    """The fuzz runs prove something only if a stray write would be noticed."""
    harness = Harness(tmp_path / "fuzz")
    before = harness.snapshot()
    left = harness.staging / "unpack-left"
    left.mkdir()
    assert harness._changed(before, importing=False) == [str(left)]
    assert harness._changed(before, importing=True) == [str(left)]
    left.rmdir()
    (harness.home / ".claude" / "projects" / "p").mkdir(parents=True)
    (harness.home / ".claude" / "projects" / "p" / "s.jsonl").write_text("{}\n")
    assert harness._changed(before, importing=True) == []
    assert len(harness._changed(before, importing=False)) == 4
    (harness.home / ".bashrc").write_text("changed\n")
    (harness.home / ".claude" / "settings.json").write_text("{}")
    (harness.project / ".git").mkdir()
    assert sorted(harness._changed(before, importing=True)) == [
        str(harness.home / ".bashrc"),
        str(harness.home / ".claude" / "settings.json"),
        str(harness.project / ".git"),
    ]
