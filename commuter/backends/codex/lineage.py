"""Continuity of Codex rollouts, which carry no entry uuids: each line is known by its
(timestamp, ordinal, type, payload type), which path rewrites and id renames leave alone. The
convergence rule (as Claude's, backends/claude/lineage.py): of two diverged branches, the one
whose first divergent line is earlier keeps the thread id; the other is the fork whose id both
machines derive alike from the thread id and that line."""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

Key = tuple[Any, ...]
_END = object()


def keys(path: Path, offset: int = 0) -> Iterator[Key]:
    """Each rollout line's identity, from byte `offset` (a line boundary) on; read a line at a
    time (a rollout may be hundreds of MB)."""
    with path.open("rb") as fh:
        fh.seek(offset)
        for line in fh:
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                yield (line.rstrip(b"\r\n"),)
                continue
            if isinstance(obj, dict):
                payload = obj.get("payload")
                sub = payload.get("type") if isinstance(payload, dict) else None
                yield (obj.get("timestamp"), obj.get("ordinal"), obj.get("type"), sub)
            else:
                yield (line.rstrip(b"\r\n"),)


def relation(local: Path, incoming: Path) -> str:
    """same | continuation (incoming extends local) | behind (local extends it) | divergent."""
    for a, b in itertools.zip_longest(keys(local), keys(incoming), fillvalue=_END):
        if a is _END:
            return "continuation"
        if b is _END:
            return "behind"
        if a != b:
            return "divergent"
    return "same"


@dataclass(frozen=True, slots=True)
class Divergence:
    """Where two rollouts part: the first line of each side after their common prefix."""

    at: int
    local: Key
    incoming: Key


def divergence(local: Path, incoming: Path) -> Divergence | None:
    """The first differing lines of two rollouts; None when one is a prefix of the other."""
    for i, (a, b) in enumerate(zip(keys(local), keys(incoming), strict=False)):
        if a != b:
            return Divergence(i, a, b)
    return None


def token(key: Key) -> str:
    """A line's identity as text, the same on every machine."""
    if len(key) == 1 and isinstance(key[0], bytes):
        return hashlib.sha256(key[0]).hexdigest()
    try:
        data = orjson.dumps(list(key))
    except TypeError:
        data = repr(key).encode()
    return hashlib.sha256(data).hexdigest()


def key_time(key: Key) -> float:
    """A line's `timestamp` as POSIX time; +inf without one (it never wins over a time)."""
    stamp = key[0] if len(key) == 4 else None
    if not isinstance(stamp, str):
        return math.inf
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return math.inf
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def incoming_keeps_id(div: Divergence) -> bool:
    """The convergence rule, the same on both machines: the branch whose first divergent line
    is earlier keeps the id (no time loses; equal times: the smaller token)."""
    mine = (key_time(div.local), token(div.local))
    theirs = (key_time(div.incoming), token(div.incoming))
    return theirs < mine


def derived_id(namespace: str, name: str, ms: float) -> str:
    """A UUIDv7-shaped id (codex's own kind) that every machine derives alike: the time bits
    from `ms` (milliseconds), the rest from sha256 of `namespace` and `name`."""
    digest = hashlib.sha256(f"commuter-codex\0{namespace}\0{name}".encode()).digest()
    stamp = int(ms) if math.isfinite(ms) and 0 <= ms < 1 << 48 else 0
    raw = bytearray(stamp.to_bytes(6, "big") + digest[:10])
    raw[6] = (raw[6] & 0x0F) | 0x70
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def fork_id(tid: str, first: Key) -> str:
    """The id of the fork holding the branch of thread `tid` that starts with line `first`."""
    return derived_id(tid, token(first), key_time(first) * 1000)


def child_id(fork: str, child: str) -> str:
    """A subagent thread `child` of a fork `fork`, under its own derived id (its time bits)."""
    try:
        ms = float(int(child.replace("-", "")[:12], 16))
    except ValueError:
        ms = 0.0
    return derived_id(fork, child, ms)
