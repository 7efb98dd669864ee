"""mDNS on loopback: advertise, browse, resolve by device id, re-announce on address change."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from peerhelp import ALICE, BOB, machine

from commuter.peer import discovery
from commuter.peer.peers import Peer

pytestmark = pytest.mark.mdns


async def test_resolve_matches_device_id_only(tmp_path):
    settings = machine(tmp_path / "a")
    async with discovery.advertise_peer(settings, "office", ALICE.device_id, 40111):
        assert await discovery.resolve(settings, Peer.new("x", ALICE.public_key), 3) == (
            "127.0.0.1:40111"
        )
        # Same name, other key: never matched.
        assert await discovery.resolve(settings, Peer.new("office", BOB.public_key), 0.5) is None
        seen = await discovery.browse(
            settings, discovery.SERVICE, 5.0, stop_when=lambda s: s.device_id == ALICE.device_id
        )
        assert [(s.name, s.device_id) for s in seen] == [("office", ALICE.device_id)]
        assert seen[0].properties == {"id": ALICE.device_id, "name": "office", "v": "1"}


async def test_invite_is_found_by_nameplate(tmp_path):
    settings = machine(tmp_path / "a")
    async with discovery.advertise_invite(settings, "office", 42, 40112):
        assert await discovery.find_invite(settings, 42, 3) == "127.0.0.1:40112"
        [seen] = await discovery.browse(settings, discovery.PAIR_SERVICE, 3, lambda _s: True)
        assert seen.properties == {"nameplate": "42", "name": "office", "v": "1"}
        assert await discovery.find_invite(settings, 43, 0.5) is None


async def test_readvertises_when_addresses_change(tmp_path):
    settings = machine(tmp_path / "a")
    current = ["127.0.0.2"]
    advert = discovery.Advertiser(
        settings,
        service_type=discovery.SERVICE,
        label="moving",
        port=40113,
        properties={"id": ALICE.device_id},
        poll_interval=0.1,
        addresses=lambda _s: list(current),
    )
    async with advert:
        peer = Peer.new("moving", ALICE.public_key)
        assert await discovery.resolve(settings, peer, 3) == "127.0.0.2:40113"
        current[:] = ["127.0.0.3"]
        for _ in range(30):
            await asyncio.sleep(0.2)
            if await discovery.resolve(settings, peer, 1) == "127.0.0.3:40113":
                break
        else:
            pytest.fail("new address was never announced")


async def _announced(settings, peer, address: str) -> None:
    """Wait (bounded) until `peer` resolves to `address`."""
    for _ in range(30):
        if await discovery.resolve(settings, peer, 1) == address:
            return
        await asyncio.sleep(0.2)
    pytest.fail(f"{address} was never announced")


async def test_recreates_its_mdns_sockets_when_unpinned_addresses_change(tmp_path):
    """Without COMMUTER_MDNS_INTERFACES the sockets are a snapshot of the machine's interfaces:
    a new address needs new sockets. (The test's sockets are still on loopback only.)"""
    from zeroconf import IPVersion
    from zeroconf.asyncio import AsyncZeroconf

    pinned = machine(tmp_path / "a")
    unpinned = dataclasses.replace(pinned, mdns_interfaces=None)
    made: list[AsyncZeroconf] = []

    def loopback_zeroconf(_settings):
        made.append(AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only))
        return made[-1]

    current = ["127.0.0.2"]
    advert = discovery.Advertiser(
        unpinned,
        service_type=discovery.SERVICE,
        label="roaming",
        port=40114,
        properties={"id": ALICE.device_id},
        poll_interval=0.1,
        addresses=lambda _s: list(current),
        zeroconf=loopback_zeroconf,
    )
    peer = Peer.new("roaming", ALICE.public_key)
    async with advert:
        await _announced(pinned, peer, "127.0.0.2:40114")
        assert len(made) == 1
        current[:] = ["127.0.0.3"]
        await _announced(pinned, peer, "127.0.0.3:40114")
        assert len(made) == 2
        assert made[0].zeroconf.done and not made[1].zeroconf.done
    assert made[1].zeroconf.done


async def test_a_failing_address_poll_is_logged_once_and_polling_goes_on(tmp_path):
    settings = machine(tmp_path / "a")
    current = ["127.0.0.2"]
    failures = [0]
    logged: list[str] = []

    def addresses(_s):
        if failures[0]:
            failures[0] -= 1
            raise OSError("no adapters")
        return list(current)

    advert = discovery.Advertiser(
        settings,
        service_type=discovery.SERVICE,
        label="flaky",
        port=40115,
        properties={"id": ALICE.device_id},
        poll_interval=0.05,
        addresses=addresses,
        log=logged.append,
    )
    peer = Peer.new("flaky", ALICE.public_key)
    async with advert:
        await _announced(settings, peer, "127.0.0.2:40115")
        failures[0] = 3
        for _ in range(100):
            if not failures[0]:
                break
            await asyncio.sleep(0.05)
        current[:] = ["127.0.0.3"]
        await _announced(settings, peer, "127.0.0.3:40115")
    assert logged == ["mDNS: cannot re-announce this machine (no adapters); will retry"]


async def test_new_sockets_that_fail_to_open_are_retried(tmp_path):
    from zeroconf import IPVersion
    from zeroconf.asyncio import AsyncZeroconf

    pinned = machine(tmp_path / "a")
    made: list[AsyncZeroconf] = []
    refuse = [0]
    logged: list[str] = []

    def loopback_zeroconf(_settings):
        if refuse[0]:
            refuse[0] -= 1
            raise OSError("interface is gone")
        made.append(AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only))
        return made[-1]

    current = ["127.0.0.2"]
    advert = discovery.Advertiser(
        dataclasses.replace(pinned, mdns_interfaces=None),
        service_type=discovery.SERVICE,
        label="retry",
        port=40116,
        properties={"id": ALICE.device_id},
        poll_interval=0.05,
        addresses=lambda _s: list(current),
        zeroconf=loopback_zeroconf,
        log=logged.append,
    )
    peer = Peer.new("retry", ALICE.public_key)
    async with advert:
        await _announced(pinned, peer, "127.0.0.2:40116")
        refuse[0] = 2
        current[:] = ["127.0.0.3"]
        await _announced(pinned, peer, "127.0.0.3:40116")
    assert logged == ["mDNS: cannot re-announce this machine (interface is gone); will retry"]
    assert len(made) == 2 and all(zc.zeroconf.done for zc in made)
