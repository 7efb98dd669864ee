"""Transport base class, the values transports exchange, and the registry of transports."""

from __future__ import annotations

import abc
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Self

from commuter import plugins
from commuter.errors import UnknownTransport

if TYPE_CHECKING:
    from commuter.config import Config
    from commuter.peer.identity import Identity
    from commuter.peer.peers import Peer, Peers
    from commuter.settings import Settings

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "commuter.transports.v1"
BUILTIN: dict[str, str] = {
    "folder": "commuter.transports.folder:FolderTransport",
    "lan": "commuter.transports.lan:LanTransport",
    "relay": "commuter.transports.relay:RelayTransport",
}
# `memory.MemoryTransport` (one process's dict) is for tests and as a model: not a `--via` name.
# `--via auto` tries these in order: direct first, then the mailbox, then the shared folder.
AUTO_ORDER: tuple[str, ...] = ("lan", "relay", "folder")
SEALED_SUFFIX = ".sealed"
PLAIN_SUFFIX = ".commuter"


@dataclass(frozen=True, slots=True)
class TransportContext:
    """What every transport is built from: this machine, its key, config and trust store."""

    settings: Settings
    identity: Identity
    config: Config
    peers: Peers

    @classmethod
    def load(cls, settings: Settings) -> TransportContext:
        """Read config, identity (created on first use) and the trust store."""
        from commuter import config
        from commuter.peer.identity import Identity
        from commuter.peer.peers import Peers

        return cls(
            settings, Identity.load_or_create(settings), config.load(settings), Peers.load(settings)
        )


@dataclass(frozen=True, slots=True)
class Receipt:
    """What a send did: where the bundle went and under which id."""

    transport: str
    item_id: str
    recipients: tuple[str, ...]
    location: str
    size: int
    # Per recipient, in order, what its end said it did ("imported", "stored", ...), where the
    # transport hears back at once (LAN); empty where it cannot (relay, folder).
    statuses: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Incoming:
    """One bundle waiting for this machine on some transport (not yet fetched)."""

    transport: str
    id: str
    label: str
    size: int
    digest: str
    sealed: bool = True
    sender: str | None = None
    legacy: bool = False


class Transport(abc.ABC):
    """Moves sealed bundle files between machines; use `async with`."""

    scheme: ClassVar[str]
    # True where the sender is known before fetching and a stranger's item costs this machine
    # quota it shares (relay): `pull` deletes items from unpaired devices instead of keeping them.
    discard_strangers: ClassVar[bool] = False
    # True where every item is this machine's alone, local and complete (the LAN inbox): one
    # whose seal fails authentication never heals, so `pull` moves it to settings.rejected_dir
    # instead of retrying it on every pull. Not for a shared folder, where a file can still be
    # syncing, nor the relay, which deletes only after a successful import.
    set_aside_damaged: ClassVar[bool] = False

    def __init__(self, ctx: TransportContext) -> None:
        self.ctx = ctx
        # Things a person should see (skipped files, unreachable mailboxes); the CLI prints them.
        self.warnings: list[str] = []

    @abc.abstractmethod
    async def send(self, sealed: Path, to: Sequence[Peer]) -> Receipt:
        """Deliver a sealed file to every peer in `to` (its seal must name them all)."""

    @abc.abstractmethod
    async def pending(self) -> list[Incoming]:
        """Bundles waiting for this machine, oldest first."""

    @abc.abstractmethod
    async def fetch(self, item: Incoming, dst_dir: Path) -> Path:
        """A local copy of `item` inside `dst_dir` (or a stable path of the transport's own)."""

    @abc.abstractmethod
    async def ack(self, item: Incoming) -> None:
        """`item` was imported: drop it from the mailbox (or remember it was done)."""

    async def reachable(self, peer: Peer | None) -> str | None:
        """None if a send to `peer` can work now, else the reason it cannot (for --via auto)."""
        return None

    async def aclose(self) -> None:
        """Release sockets, files, subprocesses."""
        return

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def names() -> list[str]:
    """Every transport name: built-ins first, then plug-ins."""
    return plugins.names(BUILTIN, ENTRY_POINT_GROUP)


def transport_class(name: str) -> type[Transport]:
    """The Transport class registered as `name` (built-ins win over plug-ins)."""
    spec = plugins.spec_of(BUILTIN, ENTRY_POINT_GROUP, name)
    if spec is None:
        raise UnknownTransport(f"unknown transport {name!r} (known: {', '.join(names())})")
    try:
        cls = plugins.load(spec)
    except (ImportError, AttributeError) as exc:
        log.warning("transport %s (%s) failed to load: %s", name, spec, exc)
        raise UnknownTransport(f"transport {name!r} failed to load ({exc})") from exc
    if not (isinstance(cls, type) and issubclass(cls, Transport)):
        raise UnknownTransport(f"transport {name!r} ({spec}) is not a Transport")
    return cls


def create(name: str, ctx: TransportContext) -> Transport:
    """An instance of the transport registered as `name`."""
    return transport_class(name)(ctx)
