"""mDNS on loopback: advertise, browse, resolve by device id, re-announce on address change."""

from __future__ import annotations

import asyncio

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


async def test_invite_is_found_by_nameplate(tmp_path):
    settings = machine(tmp_path / "a")
    async with discovery.advertise_invite(settings, "office", 42, 40112):
        assert await discovery.find_invite(settings, 42, 3) == "127.0.0.1:40112"
        assert await discovery.find_invite(settings, 43, 0.5) is None


async def test_readvertises_when_addresses_change(tmp_path):
    settings = machine(tmp_path / "a")
    current = ["127.0.0.2"]
    advert = discovery.Advertiser(
        settings, service_type=discovery.SERVICE, label="moving", port=40113,
        properties={"id": ALICE.device_id}, poll_interval=0.1, addresses=lambda _s: list(current),
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
