"""mDNS: advertise `_commuter._tcp` (and pairing invites), browse and resolve peers. A hint only."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from commuter.peer.peers import Peer
from commuter.settings import Settings

SERVICE = "_commuter._tcp.local."
PAIR_SERVICE = "_commuter-pair._tcp.local."
PROTOCOL_VERSION = "1"
ADDRESS_POLL = 5.0

Log = Callable[[str], None]
_logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Seen:
    """A service instance seen on the LAN (unauthenticated)."""

    instance: str
    host: str
    port: int
    properties: dict[str, str] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return format_address(self.host, self.port)

    @property
    def device_id(self) -> str | None:
        return self.properties.get("id")

    @property
    def name(self) -> str:
        return self.properties.get("name") or self.instance.split(".", 1)[0]


def format_address(host: str, port: int) -> str:
    """host:port, with brackets around IPv6 hosts."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def local_addresses(settings: Settings) -> list[str]:
    """Addresses other machines may reach this one at (the mDNS interfaces if narrowed)."""
    if settings.mdns_interfaces:
        return [a for a in settings.mdns_interfaces if _is_ip(a)]
    import ifaddr

    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str):
                addr = ipaddress.ip_address(ip.ip)
                if not addr.is_loopback and not addr.is_link_local:
                    found.append(ip.ip)
    return sorted(set(found)) or ["127.0.0.1"]


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _zeroconf(settings: Settings) -> Any:
    from zeroconf import InterfaceChoice, IPVersion
    from zeroconf.asyncio import AsyncZeroconf

    if settings.mdns_interfaces:
        return AsyncZeroconf(interfaces=list(settings.mdns_interfaces), ip_version=IPVersion.V4Only)
    return AsyncZeroconf(interfaces=InterfaceChoice.All, ip_version=IPVersion.V4Only)


def _instance_label(text: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_ " else "-" for c in text)[:40].strip()
    return cleaned or "commuter"


class Advertiser:
    """Registers one service while open; re-announces when local addresses change.

    Unless COMMUTER_MDNS_INTERFACES pins the interfaces, the mDNS sockets are a snapshot of
    the interfaces at start (zeroconf's InterfaceChoice.All): a new address (DHCP renewal,
    another Wi-Fi) is then neither joined nor answered on, so on a change the zeroconf
    instance is closed and recreated, and the service registered again.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        service_type: str,
        label: str,
        port: int,
        properties: dict[str, str],
        poll_interval: float = ADDRESS_POLL,
        addresses: Callable[[Settings], list[str]] = local_addresses,
        zeroconf: Callable[[Settings], Any] | None = None,
        log: Log | None = None,
    ) -> None:
        self.settings = settings
        self.service_type = service_type
        self.instance = f"{_instance_label(label)}.{service_type}"
        self.port = port
        self.properties = properties
        self.poll_interval = poll_interval
        self._addresses = addresses
        self._new_zeroconf = zeroconf or _zeroconf
        self._log = log or _logger.warning
        self._zc: Any = None
        self._info: Any = None
        self._current: list[str] = []
        self._task: asyncio.Task[None] | None = None
        self._last_error = ""

    def _make_info(self, addrs: list[str]) -> Any:
        from zeroconf.asyncio import AsyncServiceInfo

        packed = [socket.inet_aton(a) for a in addrs if ":" not in a]
        return AsyncServiceInfo(
            self.service_type,
            self.instance,
            port=self.port,
            properties=self.properties,
            addresses=packed,
            server=f"{_instance_label(self.settings.hostname)}-{self.port}.local.",
        )

    async def __aenter__(self) -> Advertiser:
        self._current = self._addresses(self.settings)
        self._zc = self._new_zeroconf(self.settings)
        await self._register(self._make_info(self._current))
        self._task = asyncio.create_task(self._poll())
        return self

    async def _register(self, info: Any) -> None:
        await self._zc.async_register_service(info, allow_name_change=True)
        self._info = info
        self.instance = info.name

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                addrs = self._addresses(self.settings)
                if addrs != self._current:
                    await self._reannounce(addrs)
                    self._current = addrs
                self._last_error = ""
            except Exception as exc:  # a daemon outlives a flaky network: say so, retry
                reason = str(exc) or type(exc).__name__
                if reason != self._last_error:
                    self._log(f"mDNS: cannot re-announce this machine ({reason}); will retry")
                self._last_error = reason

    async def _reannounce(self, addrs: list[str]) -> None:
        info = self._make_info(addrs)
        if self.settings.mdns_interfaces:
            # Pinned interfaces: the same sockets still serve; only the A records change. A
            # goodbye for the old records, then the new ones registered (an update alone left
            # browsers resolving the old address on some zeroconf releases).
            if self._info is not None:
                await self._zc.async_unregister_service(self._info)
            await self._register(info)
            return
        old, self._zc = self._zc, None
        if old is not None:  # None: the previous attempt failed to open new sockets
            await _close(old)
        self._zc = self._new_zeroconf(self.settings)
        await self._register(info)

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._zc is not None:
            await _close(self._zc)


async def _close(azc: Any) -> None:
    """Say goodbye for every service (bounded: an interface may be gone), then close."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(azc.async_unregister_all_services(), 3)
    await azc.async_close()


def advertise_peer(
    settings: Settings, name: str, device_id: str, port: int, log: Log | None = None
) -> Advertiser:
    """The `commuter serve` advertisement: TXT id, name and protocol version."""
    return Advertiser(
        settings,
        service_type=SERVICE,
        label=name,
        port=port,
        properties={"id": device_id, "name": name, "v": PROTOCOL_VERSION},
        log=log,
    )


def advertise_invite(settings: Settings, name: str, nameplate: int, port: int) -> Advertiser:
    """The `commuter pair` advertisement: the code's public nameplate, never the secret words."""
    return Advertiser(
        settings,
        service_type=PAIR_SERVICE,
        label=f"{name}-pair-{nameplate}",
        port=port,
        properties={"nameplate": str(nameplate), "name": name, "v": PROTOCOL_VERSION},
    )


async def browse(
    settings: Settings,
    service_type: str,
    timeout: float,  # noqa: ASYNC109
    stop_when: Callable[[Seen], bool] | None = None,
) -> list[Seen]:
    """Services seen within `timeout` seconds (returns early once `stop_when` matches one)."""
    from zeroconf import ServiceStateChange
    from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo

    found: dict[str, Seen] = {}
    done = asyncio.Event()
    pending: set[asyncio.Task[None]] = set()
    azc = _zeroconf(settings)

    async def lookup(name: str) -> None:
        info = AsyncServiceInfo(service_type, name)
        if not await info.async_request(azc.zeroconf, int(max(timeout, 0.2) * 1000)):
            return
        hosts = info.parsed_addresses()
        if not hosts or not info.port:
            return
        props = {
            k.decode(errors="replace"): (v or b"").decode(errors="replace")
            for k, v in (info.properties or {}).items()
        }
        seen = Seen(name, hosts[0], int(info.port), props)
        found[name] = seen
        if stop_when is not None and stop_when(seen):
            done.set()

    def on_change(**kwargs: Any) -> None:
        if kwargs["state_change"] in (ServiceStateChange.Added, ServiceStateChange.Updated):
            task = asyncio.ensure_future(lookup(kwargs["name"]))
            pending.add(task)
            task.add_done_callback(pending.discard)

    browser = AsyncServiceBrowser(azc.zeroconf, [service_type], handlers=[on_change])
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), timeout)
    finally:
        for task in list(pending):
            task.cancel()
        with contextlib.suppress(Exception):
            await browser.async_cancel()
        await azc.async_close()
    return sorted(found.values(), key=lambda s: s.name)


async def resolve(settings: Settings, peer: Peer, timeout: float) -> str | None:  # noqa: ASYNC109
    """The "host:port" a paired peer advertises now (matched on its device id), or None."""
    found = await browse(settings, SERVICE, timeout, lambda s: s.device_id == peer.device_id)
    return next((s.address for s in found if s.device_id == peer.device_id), None)


async def find_invite(
    settings: Settings,
    nameplate: int,
    timeout: float,  # noqa: ASYNC109
) -> str | None:
    """The address of an open pairing invite with this nameplate, or None."""
    wanted = str(nameplate)
    found = await browse(
        settings, PAIR_SERVICE, timeout, lambda s: s.properties.get("nameplate") == wanted
    )
    return next((s.address for s in found if s.properties.get("nameplate") == wanted), None)
