"""Session continuity by the uuid chain: same, continued, older, or divergent; and the
convergence rule that decides, alike on both machines, which branch of a divergence keeps the
session id and what the other one's fork is called."""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path

import orjson

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


# --- convergence: which branch of a divergence keeps the session id -------------------------


@dataclass(frozen=True, slots=True)
class Divergence:
    """Where two uuid chains part: the first entry of each side after their common prefix."""

    at: int
    local: bytes
    incoming: bytes


def divergence(local: list[bytes], incoming: list[bytes]) -> Divergence | None:
    """The first differing entries of two chains; None when one is a prefix of the other."""
    for i, (a, b) in enumerate(zip(local, incoming, strict=False)):
        if a != b:
            return Divergence(i, a, b)
    return None


def entry_time(path: Path, entry: bytes) -> float:
    """The `timestamp` of the entry with uuid `entry` as POSIX time; +inf without one (a
    branch whose first entry has no time never wins over one that has)."""
    needle = b'"uuid":"' + entry + b'"'
    tail = b""
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            data = tail + chunk
            at = data.find(needle)
            if at >= 0:
                start = data.rfind(b"\n", 0, at) + 1
                end = data.find(b"\n", at)
                while end < 0:
                    more = fh.read(CHUNK)
                    if not more:
                        end = len(data)
                        break
                    data += more
                    end = data.find(b"\n", at)
                return _time_of(data[start:end])
            cut = data.rfind(b"\n") + 1
            tail = data[cut:]
    return math.inf


def _time_of(line: bytes) -> float:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return math.inf
    stamp = obj.get("timestamp") if isinstance(obj, dict) else None
    if not isinstance(stamp, str):
        return math.inf
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return math.inf
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def incoming_keeps_id(local: Path, incoming: Path, div: Divergence) -> bool:
    """The convergence rule, the same on both machines: of the two branches, the one whose
    first divergent entry is earlier keeps the session id (no time loses; equal times: the
    smaller entry uuid). The other becomes the fork `fork_id(sid, its first entry)`."""
    mine = (entry_time(local, div.local), div.local.lower())
    theirs = (entry_time(incoming, div.incoming), div.incoming.lower())
    return theirs < mine


def fork_id(sid: str, first_entry: bytes) -> str:
    """The id of the fork that holds a branch of `sid` starting at entry `first_entry`:
    uuid5(namespace = the session id, name = that entry's uuid), so both machines name the
    same fork alike."""
    try:
        namespace = uuid.UUID(sid)
    except ValueError:
        namespace = uuid.NAMESPACE_URL
    return str(uuid.uuid5(namespace, first_entry.decode("ascii").lower()))
