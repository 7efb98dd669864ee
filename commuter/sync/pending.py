"""What waits for this machine on every transport, with each item's label (sender, session,
project, size, age), read without downloading an item: `status` and `pull --dry-run`."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from commuter.errors import CommuterError

if TYPE_CHECKING:
    from commuter.sync.state import SyncState
    from commuter.transports import Incoming, TransportContext

_STAMP = re.compile(r"(?:^|/)(\d{8}T\d{6})")
_EPOCH = re.compile(r"^(\d{10})-")


@dataclass(frozen=True, slots=True)
class PendingItem:
    transport: str
    id: str
    sender: str  # the paired peer's name, else the device id the transport names, else "?"
    sender_id: str | None
    session_id: str | None
    project: str | None
    agent: str | None
    size: int
    age: float | None  # seconds since it was dropped, where the transport says
    sealed: bool
    waiting: str | None = None  # why the sync daemon has not imported it yet
    refusal: bool = False  # the sender asks for the whole session (sync/nack.py), no bundle

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _age(item: Incoming) -> float | None:
    now = time.time()
    if item.transport == "relay":
        found = _EPOCH.match(item.id)
        return max(0.0, now - int(found.group(1))) if found else None
    found = _STAMP.search(item.id)
    if not found:
        return None
    try:
        when = datetime.strptime(found.group(1), "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None
    return max(0.0, now - when.timestamp())


async def list_pending(
    ctx: TransportContext,
    *,
    via: str = "auto",
    cache: SyncState | None = None,
    warn: Callable[[str], None] = lambda _m: None,
) -> list[PendingItem]:
    """Every item waiting here on `via` (every configured transport for auto)."""
    from commuter.pipeline import pull_order
    from commuter.sync.label import label_of
    from commuter.transports import create

    waiting = cache.waiting() if cache is not None else {}
    names = {p.device_id: p.name for p in ctx.peers.all()}
    out: list[PendingItem] = []
    for name in pull_order(ctx, via):
        async with create(name, ctx) as transport:
            try:
                items = await transport.pending()
            except CommuterError as exc:
                if via != "auto":
                    raise
                warn(f"{name}: {exc}")
                continue
            finally:
                for message in transport.warnings:
                    warn(message)
                transport.warnings.clear()
            for item in items:
                label = (
                    await label_of(ctx, transport, item, cache)
                    if item.sealed or (name == "folder")
                    else None
                )
                sender = names.get(item.sender or "", item.sender or "?")
                w = waiting.get(f"{name}:{item.id}")
                out.append(
                    PendingItem(
                        name,
                        item.id,
                        sender,
                        item.sender,
                        label.session_id if label else None,
                        label.project if label else None,
                        label.agent if label else None,
                        item.size,
                        _age(item),
                        item.sealed,
                        w.reason if w is not None else None,
                        bool(label and label.refusal),
                    )
                )
    return out


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def human_age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"


def dry_run_lines(ctx: TransportContext, via: str, *, warn: Callable[[str], None]) -> list[str]:
    """What `pull --dry-run` prints: one line per waiting item, from its label; nothing is
    downloaded, opened past its first frame, imported or acknowledged."""
    import asyncio

    from commuter import core
    from commuter.commands._app import safe_text

    items = asyncio.run(list_pending(ctx, via=via, warn=warn))
    if not items:
        return ["nothing to pull"]
    paired = {p.device_id for p in ctx.peers.all()}
    local = {(r.backend, r.session_id) for r in core.list_sessions(ctx.settings)}
    lines = []
    for item in items:
        where = f"via {item.transport}, {human_size(item.size)}, {human_age(item.age)} old"
        who = safe_text(item.sender)
        if item.transport == "relay" and item.sender_id and item.sender_id not in paired:
            lines.append(f"{item.id}: from unpaired device {who}; a pull would delete it")
            continue
        if item.session_id is None:
            lines.append(
                f"would import {safe_text(item.id)} from {who} {where} "
                "(session unknown until it is opened)"
            )
            continue
        if item.refusal:
            lines.append(
                f"{who} could not apply an increment of {item.session_id} ({item.agent}) "
                f"{where}: a pull notes it, the next push of it is whole"
            )
            continue
        known = (item.agent or "", item.session_id) in local
        what = (
            "update of the local session (or a fork if both sides went on)" if known else "new here"
        )
        lines.append(
            f"would import {item.session_id} ({item.agent}, {safe_text(item.project or '?')}) "
            f"from {who} {where}: {what}"
        )
    return lines
