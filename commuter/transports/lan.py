"""LAN transport: upload straight to a peer's `commuter serve`; receive through its inbox."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

from commuter import progress
from commuter.errors import CommuterError, PeerUnreachable
from commuter.peer.inbox import Inbox, InboxItem
from commuter.peer.peers import Peer, Peers
from commuter.transports import Incoming, Receipt, Transport, TransportContext

PROBE_TIMEOUT = 1.5


class LanTransport(Transport):
    """Sends with PeerClient.upload; `pending` is what `commuter serve` stored in the inbox."""

    scheme = "lan"
    set_aside_damaged = True

    def __init__(
        self,
        ctx: TransportContext,
        *,
        address: str | None = None,
        probe_timeout: float = PROBE_TIMEOUT,
    ) -> None:
        super().__init__(ctx)
        self.address = address
        self.probe_timeout = probe_timeout
        self._found: dict[str, str] = {}
        self._items: dict[str, InboxItem] = {}

    async def _probe(self, peer: Peer, address: str) -> bool:
        from commuter.peer.client import PeerClient

        try:
            async with PeerClient(self.ctx.settings, self.ctx.identity, peer, address) as client:
                info = await asyncio.wait_for(client.info(), self.probe_timeout)
        except (CommuterError, TimeoutError, OSError):
            return False
        return info.get("device_id") == peer.device_id

    async def locate(self, peer: Peer) -> str | None:
        """An address where `peer` answers /v1/info now (explicit, last known, then mDNS)."""
        if peer.device_id in self._found:
            return self._found[peer.device_id]
        tried: set[str] = set()
        for address in (self.address, peer.last_address):
            if address and address not in tried:
                tried.add(address)
                if await self._probe(peer, address):
                    self._found[peer.device_id] = address
                    return address
        from commuter.peer.discovery import resolve

        try:
            found = await resolve(self.ctx.settings, peer, self.ctx.settings.mdns_timeout)
        except OSError:
            found = None
        if found and found not in tried and await self._probe(peer, found):
            self._found[peer.device_id] = found
            return found
        return None

    async def reachable(self, peer: Peer | None) -> str | None:
        if peer is None:
            return "the LAN transport needs a named peer"
        if await self.locate(peer) is None:
            return f"{peer.name} is not answering on the LAN"
        return None

    async def send(self, sealed: Path, to: Sequence[Peer]) -> Receipt:
        """Upload to each peer in turn; PeerUnreachable if one cannot be found."""
        from commuter.peer.client import PeerClient

        if not to:
            raise PeerUnreachable("the LAN transport needs a named peer (push --to PEER)")
        size = (await asyncio.to_thread(sealed.stat)).st_size
        item_id = ""
        where: list[str] = []
        statuses: list[str] = []
        for peer in to:
            address = await self.locate(peer)
            if address is None:
                raise PeerUnreachable(
                    f"{peer.name} is not reachable on the LAN; is `commuter serve` running there?"
                )
            async with PeerClient(self.ctx.settings, self.ctx.identity, peer, address) as client:
                answer = await client.upload(sealed, progress.advance)
            item_id = str(answer.get("id", ""))
            statuses.append(str(answer.get("status", "")))
            where.append(address)
            self._remember(peer, address)
        return Receipt(
            self.scheme, item_id, tuple(p.name for p in to), ", ".join(where), size, tuple(statuses)
        )

    async def send_export(self, export: Callable[[BinaryIO], object], peer: Peer) -> Receipt:
        """Upload a bundle to `peer` while `export(fh)` writes it (on a thread), sealed on
        the way (PeerClient.upload_export): no temp bundle. The receipt's size is the plain
        bundle's; a progress bar gets the bundle writer's counts (the session's bytes)."""
        from commuter.peer.client import PeerClient

        address = await self.locate(peer)
        if address is None:
            raise PeerUnreachable(
                f"{peer.name} is not reachable on the LAN; is `commuter serve` running there?"
            )
        sent = 0

        def count(n: int) -> None:
            nonlocal sent
            sent += n

        async with PeerClient(self.ctx.settings, self.ctx.identity, peer, address) as client:
            answer, _ = await client.upload_export(export, count)
        self._remember(peer, address)
        return Receipt(
            self.scheme,
            str(answer.get("id", "")),
            (peer.name,),
            address,
            sent,
            (str(answer.get("status", "")),),
        )

    def _remember(self, peer: Peer, address: str) -> None:
        peers = Peers.load(self.ctx.settings)
        if peers.by_key(peer.public_key) is not None:
            peers.touch_address(peer.public_key, address)
            peers.save()

    async def pending(self) -> list[Incoming]:
        """Bundles `commuter serve` received and did not import yet."""
        items = await asyncio.to_thread(Inbox(self.ctx.settings).pending)
        self._items = {item.id: item for item in items}
        return [
            Incoming(
                self.scheme,
                item.id,
                f"inbox:{item.id}",
                item.size,
                item.digest,
                True,
                item.sender_device_id,
            )
            for item in items
        ]

    async def fetch(self, item: Incoming, dst_dir: Path) -> Path:
        """The inbox file itself: it is already local and complete."""
        return self._items[item.id].sealed_path

    async def ack(self, item: Incoming) -> None:
        found = self._items.pop(item.id, None)
        if found is not None:
            Inbox(self.ctx.settings).remove(found)
