"""The project's auto-memory (`~/.claude/projects/<folder>/memory/`): merged, never overwritten.

Claude Code 2.1.x keeps one memory per project folder: `MEMORY.md` (the index it loads into
every session, one `- [Title](file.md) — hook` line per memory) and the files it links. An
incoming file is written where it is missing and left where it is identical. Where it differs,
the local file stays and the incoming one is placed beside it as `<stem>.from-<host>.md`
(written again only when that copy changes), linked once from the local `MEMORY.md`. An
incoming `MEMORY.md` that differs adds only its links the local one lacks. Memory text is
prose: it is never path-rewritten. It steers the agent like CLAUDE.md, so from a bundle not
sealed by a paired peer it is written only with consent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from commuter.backends.claude.paths import is_safe_name

if TYPE_CHECKING:
    from commuter.backends import ImportSource
    from commuter.model import ImportOptions

INDEX = "MEMORY.md"
MAX_MEMORY_MEMBER = 1 << 20
MAX_MEMORY_FILES = 500
MAX_MEMORY_DEPTH = 3
_LINK = re.compile(rb"\]\(([^)\s]+)\)")
_BESIDE = re.compile(r"\.from-([A-Za-z0-9-]+)\.md\Z")


@dataclass(frozen=True, slots=True)
class MemoryWrite:
    dest: Path
    data: bytes


@dataclass(slots=True)
class MemoryPlan:
    writes: list[MemoryWrite] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def host_tag(name: str) -> str:
    """A machine's name as it may appear in a file name (`from-<tag>`)."""
    tag = re.sub(r"[^A-Za-z0-9-]+", "-", name).strip("-")[:40].strip("-")
    return tag or "elsewhere"


def origin_tag(origin: str) -> str:
    """The tag of the machine a bundle came from (`user@host time` → host)."""
    who = origin.split(" ", 1)[0]
    return host_tag(who.rpartition("@")[2] if who else "")


def plan_memory(
    source: ImportSource,
    memory_dir: Path,
    options: ImportOptions,
    *,
    local_tag: str = "",
    dry_run: bool = False,
) -> MemoryPlan:
    """What to write into this project's memory folder for `source` (nothing is written)."""
    plan = MemoryPlan()
    incoming = _incoming(source, plan.warnings)
    if not incoming:
        return plan
    tag = origin_tag(source.origin)
    if tag == local_tag:
        tag = f"{tag}-2"  # a bundle from a machine of the same name must not look like ours
    writes: dict[Path, bytes] = {}
    links: list[tuple[str, str]] = []
    for rel, data in incoming.items():
        if rel == INDEX:
            continue
        own = _BESIDE.search(rel)
        if own and own[1] == local_tag:
            continue  # this machine's own version, set aside over there, coming back
        dest = memory_dir / rel
        try:
            local = _local(memory_dir, dest)
            beside = f"{rel[:-3]}.from-{tag}.md"
            theirs = None if local in (None, data) else _local(memory_dir, memory_dir / beside)
        except _NotPlain as exc:
            plan.warnings.append(f"did not write memory/{rel}: {exc}")
            continue
        if local is None:
            writes[dest] = data
        elif local != data:
            if theirs != data:
                writes[memory_dir / beside] = data
            links.append((rel, beside))
            plan.warnings.append(
                f"memory/{rel} differs from the local one: kept yours, the "
                f"bundle's is memory/{beside} (linked from {INDEX})"
            )
    index = _index(memory_dir, incoming.get(INDEX), links, plan.warnings)
    if index is not None:
        writes[memory_dir / INDEX] = index
    if not writes:
        return plan
    if not options.sender_verified and not _consent(options, len(writes), dry_run):
        did = "import writes" if dry_run else "did not write"
        plan.warnings.append(
            f"{did} the bundle's project memory ({len(writes)} file(s)) "
            "only with --yes: the bundle is not sealed by a paired peer"
            if dry_run
            else f"{did} the bundle's project memory ({len(writes)} file(s)): "
            "the bundle is not sealed by a paired peer (--yes takes it)"
        )
        return plan
    plan.writes = [MemoryWrite(dest, data) for dest, data in writes.items()]
    return plan


def _incoming(source: ImportSource, warnings: list[str]) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for member in source.members:
        if not member.startswith("memory/"):
            continue
        rel = member[len("memory/") :]
        parts = rel.split("/")
        if (
            not rel.endswith(".md")
            or len(parts) > MAX_MEMORY_DEPTH + 1
            or not all(is_safe_name(p) for p in parts)
        ):
            continue
        if len(found) >= MAX_MEMORY_FILES:
            warnings.append(f"skipped the bundle's memory files beyond {MAX_MEMORY_FILES}")
            break
        path = source.member(member)
        if path.is_symlink() or not path.is_file():
            continue
        if path.stat().st_size > MAX_MEMORY_MEMBER:
            warnings.append(f"did not write the bundle's memory/{rel}: larger than 1 MiB")
            continue
        found[rel] = path.read_bytes()
    return found


class _NotPlain(Exception):
    """A memory path that is a symlink, or not a regular file or folder: never written."""


def _local(memory_dir: Path, dest: Path) -> bytes | None:
    """The local file's bytes, or None if it is missing; _NotPlain if it must not be written."""
    at = dest
    while at != memory_dir:
        if at.is_symlink():
            raise _NotPlain(f"{at} is a symlink")
        if at != dest and at.exists() and not at.is_dir():
            raise _NotPlain(f"{at} is not a folder")
        at = at.parent
    if not dest.exists():
        return None
    if not dest.is_file():
        raise _NotPlain("the local one is not a regular file")
    return dest.read_bytes()


def _index(
    memory_dir: Path, incoming: bytes | None, links: list[tuple[str, str]], warnings: list[str]
) -> bytes | None:
    """The new MEMORY.md, or None to leave it: the local one plus the incoming one's links it
    lacks and a link to each file placed beside a local one."""
    try:
        local = _local(memory_dir, memory_dir / INDEX)
    except _NotPlain as exc:
        warnings.append(f"did not change memory/{INDEX}: {exc}")
        return None
    base = local if local is not None else (incoming or b"")
    linked = set(_LINK.findall(base))
    added: list[bytes] = []
    if local is not None and incoming is not None and incoming != local:
        for line in incoming.splitlines():
            targets = _LINK.findall(line)
            if targets and not linked.intersection(targets):
                added.append(line)
                linked.update(targets)
    for rel, beside in links:
        if beside.encode() not in linked:
            added.append(
                f"- [{rel} ({beside.split('.from-')[-1][:-3]})]({beside}) — that "
                f"machine's version of {rel}, which differs from this one's".encode()
            )
            linked.add(beside.encode())
    if not added:
        return None if local is not None or incoming is None else incoming
    if base and not base.endswith(b"\n"):
        base += b"\n"
    return base + b"\n".join(added) + b"\n"


def _consent(options: ImportOptions, count: int, dry_run: bool) -> bool:
    if options.assume_yes:
        return True
    if dry_run or not (options.interactive and options.ask is not None):
        return False
    question = (
        f"the bundle (not sealed by a paired peer) brings {count} project memory "
        "file(s), which steer claude; write them?"
    )
    return options.ask(question, ("no", "yes")) == "yes"
