"""Delta bundles: only what a peer lacks of a session it imported before.

A delta is the normal bundle format (bundle/model.py) whose manifest has a `delta` object:

    "delta": {
      "transcript": {"member": "session/<sid>.jsonl",
                     "base_size": N, "base_sha256": H,   # the prefix the receiver holds
                     "size": M, "sha256": H2},           # the whole transcript after it
      "base": {"<member>": {"size": n, "sha256": h}, ...}  # left out: unchanged since the base
    }

The transcript travels as the member `delta/<transcript member>`: its bytes after the first
`base_size` (whole lines). A reader that knows no deltas finds no transcript and refuses the
bundle; nothing can mistake the suffix for a whole session. Members that changed or are new
travel whole; members of the base that are gone are simply not listed (a receiver never deletes).

`plan` builds the member list of a delta from an export plan and an acknowledged state, or says
the base no longer prefixes the session (then the sender sends it whole). `spec_of` checks a
received manifest's `delta` object before anything uses it: every name, size and digest.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from commuter.bundle.model import DEFAULT_LIMITS, Limits, check_member_name
from commuter.errors import BundleError
from commuter.fsutil import CHUNK
from commuter.model import Manifest

SUFFIX_DIR = "delta/"
# An increment larger than this (or than half the session) goes whole: the saving is small
# and the suffix is held in memory.
MAX_SUFFIX = 64 << 20
_SHA_RE = re.compile(r"[0-9a-f]{64}")

Members = Mapping[str, tuple[int, str]]


@dataclass(frozen=True, slots=True)
class Spec:
    """A checked `delta` object."""

    transcript: str
    base_size: int
    base_sha256: str
    size: int
    sha256: str
    base: dict[str, tuple[int, str]]

    @property
    def suffix_member(self) -> str:
        return SUFFIX_DIR + self.transcript

    def to_dict(self) -> dict[str, Any]:
        return {
            "transcript": {
                "member": self.transcript,
                "base_size": self.base_size,
                "base_sha256": self.base_sha256,
                "size": self.size,
                "sha256": self.sha256,
            },
            "base": {k: {"size": v[0], "sha256": v[1]} for k, v in sorted(self.base.items())},
        }

    def whole(self, sent: Members) -> dict[str, tuple[int, str]]:
        """The session's whole state: the base's unchanged members, those sent, and the
        transcript as a whole (not its suffix member)."""
        state = dict(self.base)
        state.update({k: v for k, v in sent.items() if k != self.suffix_member})
        state[self.transcript] = (self.size, self.sha256)
        return state


def _int(obj: dict[str, Any], key: str, where: str) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BundleError(f"delta bundle {where} field {key!r} must be a non-negative integer")
    return value


def _sha(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not _SHA_RE.fullmatch(value):
        raise BundleError(f"delta bundle {where} field {key!r} must be a sha256 in hex")
    return value


def spec_of(manifest: Manifest, limits: Limits = DEFAULT_LIMITS) -> Spec:
    """The manifest's delta object, every field checked; BundleError names the bad one."""
    obj = manifest.delta
    if not isinstance(obj, dict):
        raise BundleError("bundle is not a delta")
    t = obj.get("transcript")
    base = obj.get("base")
    if not isinstance(t, dict) or not isinstance(base, dict):
        raise BundleError("delta bundle needs a 'transcript' object and a 'base' object")
    member = t.get("member")
    if not isinstance(member, str) or member != f"session/{manifest.session_id}.jsonl":
        raise BundleError("delta bundle transcript member is not the session's transcript")
    base_size, size = _int(t, "base_size", "transcript"), _int(t, "size", "transcript")
    if not 0 < base_size <= size or size > limits.max_member:
        raise BundleError("delta bundle transcript sizes are out of range")
    if len(base) > limits.max_members:
        raise BundleError(f"delta bundle base lists more than {limits.max_members} members")
    unchanged: dict[str, tuple[int, str]] = {}
    for name, entry in base.items():
        check_member_name(name)
        if name == member or name.startswith(SUFFIX_DIR) or not isinstance(entry, dict):
            raise BundleError(f"delta bundle base entry {name[:200]!r} is not a member state")
        unchanged[name] = (_int(entry, "size", "base"), _sha(entry, "sha256", "base"))
    spec = Spec(
        member,
        base_size,
        _sha(t, "base_sha256", "transcript"),
        size,
        _sha(t, "sha256", "transcript"),
        unchanged,
    )
    sent = {m.name: m for m in manifest.members}
    suffix = sent.get(spec.suffix_member)
    if suffix is None or suffix.size != size - base_size:
        raise BundleError("delta bundle suffix member is missing or its size disagrees")
    if member in sent or any(name in sent for name in unchanged):
        raise BundleError("delta bundle lists a member both as sent and as unchanged")
    if any(name.startswith(SUFFIX_DIR) and name != spec.suffix_member for name in sent):
        raise BundleError("delta bundle has a member under delta/ that is not its suffix")
    return spec


def prefix_sha256(path: Path, size: int) -> str | None:
    """sha256 hex of the first `size` bytes of `path`; None if it is shorter."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        left = size
        while left:
            chunk = fh.read(min(CHUNK, left))
            if not chunk:
                return None
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest()


def _hash(src: Path | bytes) -> tuple[int, str]:
    if isinstance(src, bytes):
        return len(src), hashlib.sha256(src).hexdigest()
    h = hashlib.sha256()
    size = 0
    with src.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def _suffix(path: Path, base_size: int, base_sha: str) -> tuple[bytes, int, str] | None:
    """(suffix, whole size, whole sha256) if the transcript still begins with the base and
    ends past it on a whole line; None otherwise."""
    with path.open("rb") as fh:
        size = fh.seek(0, 2)
        if size < base_size or size - base_size > min(MAX_SUFFIX, size // 2 + CHUNK):
            return None
        fh.seek(0)
        h = hashlib.sha256()
        left = base_size
        last = b""
        while left:
            chunk = fh.read(min(CHUNK, left))
            if not chunk:
                return None
            h.update(chunk)
            last = chunk
            left -= len(chunk)
        if h.hexdigest() != base_sha or not last.endswith(b"\n"):
            return None
        rest = fh.read(size - base_size)
    cut = rest.rfind(b"\n") + 1  # a line being written now waits for the next send
    rest = rest[:cut]
    h.update(rest)
    return rest, base_size + len(rest), h.hexdigest()


@dataclass(frozen=True, slots=True)
class Planned:
    """The members of a delta and its spec."""

    members: list[tuple[str, Path | bytes]]
    spec: Spec


def plan(
    members: Sequence[tuple[str, Path | bytes]], transcript: str, acked: Members
) -> Planned | None:
    """A delta of `members` (an export plan's) against the state a peer acknowledged, or None
    when that state no longer prefixes the session (the transcript was rewritten, shrank, or
    the peer's state has no transcript)."""
    base = acked.get(transcript)
    sources = dict(members)
    src = sources.get(transcript)
    if base is None or not isinstance(src, Path):
        return None
    cut = _suffix(src, *base)
    if cut is None:
        return None
    suffix, size, sha = cut
    out: list[tuple[str, Path | bytes]] = [(SUFFIX_DIR + transcript, suffix)]
    unchanged: dict[str, tuple[int, str]] = {}
    for name, data in members:
        if name == transcript:
            continue
        state = acked.get(name)
        if state is not None and _hash(data) == state:
            unchanged[name] = state
        else:
            out.append((name, data))
    return Planned(out, Spec(transcript, base[0], base[1], size, sha, unchanged))
