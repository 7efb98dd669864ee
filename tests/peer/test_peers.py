"""The trust store: add, find by name or device id, remove, persist with 0600."""

from __future__ import annotations

import stat

import pytest

from commuter.errors import ConfigError, NotPaired, PeerError
from commuter.peer.identity import Identity
from commuter.peer.peers import Peer, Peers
from commuter.settings import Settings


@pytest.fixture
def settings(tmp_path):
    return Settings.from_env({"HOME": str(tmp_path)})


def test_add_save_load_roundtrip(settings):
    key = Identity.from_seed(b"o" * 32).public_key
    peers = Peers.load(settings)
    peers.add(Peer.new("office", key, "127.0.0.1:7000"))
    peers.save()
    again = Peers.load(settings)
    office = again.get("office")
    assert office.public_key == key
    assert again.get(office.device_id.lower().replace("-", "")) == office
    assert again.is_trusted(key)
    assert stat.S_IMODE(peers.path.stat().st_mode) == 0o600


def test_unknown_peer_is_not_paired(settings):
    with pytest.raises(NotPaired, match="nobody"):
        Peers.load(settings).get("nobody")


def test_remove_and_touch_address(settings):
    key = Identity.from_seed(b"h" * 32).public_key
    peers = Peers.load(settings)
    peers.add(Peer.new("home", key))
    peers.touch_address(key, "127.0.0.1:9")
    assert peers.get("home").last_address == "127.0.0.1:9"
    peers.remove("home")
    assert peers.all() == []


def test_damaged_store_is_a_config_error(settings):
    settings.config_dir.mkdir(parents=True)
    (settings.config_dir / "peers.json").write_text("{not json")
    with pytest.raises(ConfigError, match="damaged"):
        Peers.load(settings)


def test_a_second_machine_under_a_taken_name_is_refused(settings):
    first = Identity.from_seed(b"h" * 32).public_key
    second = Identity.from_seed(b"i" * 32).public_key
    peers = Peers.load(settings)
    peers.add(Peer.new("home", first, "127.0.0.1:1"))
    with pytest.raises(PeerError, match=r"run `commuter unpair home`"):
        peers.add(Peer.new("home", second))
    assert [p.public_key for p in peers.all()] == [first]
    # The same machine again (new address, or a new name) replaces its entry.
    peers.add(Peer.new("home", first, "127.0.0.1:2"))
    assert peers.get("home").last_address == "127.0.0.1:2"
    peers.add(Peer.new("house", first))
    assert [p.name for p in peers.all()] == ["house"]
