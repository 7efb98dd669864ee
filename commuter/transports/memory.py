"""In-process transport for tests and flows: mailboxes in a shared dict (like httpx's mock)."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from commuter.errors import TransportError
from commuter.peer.peers import Peer
from commuter.transports import Incoming, Receipt, Transport, TransportContext


@dataclass
class MemoryHub:
    """Mailboxes by recipient device id: item id -> bytes."""

    boxes: dict[str, dict[str, bytes]] = field(default_factory=dict)
    down: bool = False

    def clear(self) -> None:
        self.boxes.clear()
        self.down = False


DEFAULT_HUB = MemoryHub()


class MemoryTransport(Transport):
    """Every MemoryTransport on the same hub sees the others' sends."""

    scheme = "memory"

    def __init__(self, ctx: TransportContext, hub: MemoryHub | None = None) -> None:
        super().__init__(ctx)
        self.hub = DEFAULT_HUB if hub is None else hub

    def _check(self) -> None:
        if self.hub.down:
            raise TransportError("memory transport is down")

    async def reachable(self, peer: Peer | None) -> str | None:
        return "memory hub is down" if self.hub.down else None

    async def send(self, sealed: Path, to: Sequence[Peer]) -> Receipt:
        self._check()
        if not to:
            raise TransportError("the memory transport needs at least one recipient")
        data = await asyncio.to_thread(sealed.read_bytes)
        item_id = secrets.token_hex(8)
        for peer in to:
            self.hub.boxes.setdefault(peer.device_id, {})[item_id] = data
        return Receipt(self.scheme, item_id, tuple(p.name for p in to), "memory", len(data))

    async def pending(self) -> list[Incoming]:
        self._check()
        box = self.hub.boxes.get(self.ctx.identity.device_id, {})
        return [
            Incoming(
                self.scheme,
                item_id,
                f"memory:{item_id}",
                len(data),
                hashlib.sha256(data).hexdigest(),
            )
            for item_id, data in box.items()
        ]

    async def fetch(self, item: Incoming, dst_dir: Path) -> Path:
        self._check()
        data = self.hub.boxes.get(self.ctx.identity.device_id, {}).get(item.id)
        if data is None:
            raise TransportError(f"memory item {item.id} is gone")
        dst = dst_dir / f"{item.id}.sealed"
        await asyncio.to_thread(dst.write_bytes, data)
        return dst

    async def ack(self, item: Incoming) -> None:
        self._check()
        self.hub.boxes.get(self.ctx.identity.device_id, {}).pop(item.id, None)
