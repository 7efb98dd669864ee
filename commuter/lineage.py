"""Session continuity by the uuid chain: same, continued, older, or divergent."""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path

# The top-level "uuid" key; an escaped quote (inside a string) cannot match because of the
# lookbehind, and "parentUuid" ends in `Uuid"`, not `"uuid"`.
_UUID_RE = re.compile(rb'(?<!\\)"uuid":\s?"([0-9a-fA-F-]{36})"')


class Relation(Enum):
    """How a local transcript relates to an incoming one."""

    IDENTICAL = "identical"
    CONTINUED = "continued"  # local is a prefix of incoming: incoming continues it
    LOCAL_NEWER = "local-newer"  # incoming is a prefix of local
    DIVERGENT = "divergent"


def uuid_chain(path: Path) -> list[bytes]:
    """The entry uuids of a transcript in file order (first uuid of each line)."""
    chain: list[bytes] = []
    with path.open("rb") as fh:
        for line in fh:
            match = _UUID_RE.search(line)
            if match:
                chain.append(match.group(1))
    return chain


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
