"""Session continuity by the uuid chain: same, continued, older, or divergent."""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path

from commuter.fsutil import CHUNK

# `"uuid":"` cannot match inside a JSON string (its quotes would be escaped there), and
# "parentUuid" ends in `Uuid"`, not `"uuid"`.
_UUID_RE = re.compile(rb'"uuid":"([0-9a-fA-F-]{36})"')


class Relation(Enum):
    """How a local transcript relates to an incoming one."""

    IDENTICAL = "identical"
    CONTINUED = "continued"  # local is a prefix of incoming: incoming continues it
    LOCAL_NEWER = "local-newer"  # incoming is a prefix of local
    DIVERGENT = "divergent"


def uuid_chain(path: Path) -> list[bytes]:
    """The entry uuids of a transcript in file order (read in chunks, never split lines)."""
    chain: list[bytes] = []
    tail = b""
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            data = tail + chunk if tail else chunk
            cut = data.rfind(b"\n") + 1
            tail = data[cut:]
            chain += _UUID_RE.findall(data, 0, cut)
    chain += _UUID_RE.findall(tail)
    return chain


def first_uuid(path: Path, limit: int = CHUNK) -> bytes | None:
    """The first entry uuid of a transcript (from its first `limit` bytes), or None."""
    with path.open("rb") as fh:
        head = fh.read(limit)
    match = _UUID_RE.search(head, 0, head.rfind(b"\n") + 1 or len(head))
    return match.group(1) if match else None


def compare_chains(local: list[bytes], incoming: list[bytes]) -> Relation:
    """Relate two uuid chains."""
    if local == incoming:
        return Relation.IDENTICAL
    n = min(len(local), len(incoming))
    if local[:n] == incoming[:n]:
        return Relation.CONTINUED if len(local) < len(incoming) else Relation.LOCAL_NEWER
    return Relation.DIVERGENT


def compare_files(local: Path, incoming: Path) -> Relation:
    """Relate two transcripts by their uuid chains."""
    return compare_chains(uuid_chain(local), uuid_chain(incoming))
