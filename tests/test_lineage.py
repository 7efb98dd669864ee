"""Continuity by the uuid chain."""

from __future__ import annotations

import json
from pathlib import Path

from commuter.backends.claude.lineage import Relation, compare_chains, compare_files, uuid_chain


def _write(path: Path, uuids: list[str]) -> Path:
    lines = [
        json.dumps(
            {"type": "user", "uuid": u, "message": {"content": '"uuid":"x"'}}, separators=(",", ":")
        )
        for u in uuids
    ]
    path.write_text("\n".join([*lines, '{"type":"last-prompt"}']) + "\n")
    return path


U = [f"00000000-0000-4000-8000-00000000000{i}" for i in range(6)]


def test_chain_reads_top_level_uuids(tmp_path: Path) -> None:
    assert uuid_chain(_write(tmp_path / "a", U[:3])) == [u.encode() for u in U[:3]]


def test_relations(tmp_path: Path) -> None:
    a = _write(tmp_path / "a", U[:3])
    assert compare_files(a, _write(tmp_path / "b", U[:3])) is Relation.IDENTICAL
    assert compare_files(a, _write(tmp_path / "c", U[:5])) is Relation.CONTINUED
    assert compare_files(_write(tmp_path / "d", U[:5]), a) is Relation.LOCAL_NEWER
    assert compare_files(a, _write(tmp_path / "e", [*U[:2], U[5]])) is Relation.DIVERGENT
    assert compare_chains([], [b"x"]) is Relation.CONTINUED
