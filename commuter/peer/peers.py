"""The trust store: paired peers (name, device id, public key, last address) in peers.json."""

from __future__ import annotations

import base64
import difflib
import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from commuter.errors import ConfigError, PeerError, UnknownPeer
from commuter.fsutil import atomic_write_text
from commuter.peer.identity import device_id_for, normalize_device_id
from commuter.settings import Settings

PEERS_FILE = "peers.json"
_STORE_VERSION = 1


@dataclass(frozen=True, slots=True)
class Peer:
    """A machine this one trusts: its Ed25519 public key is the identity, the name a label."""

    name: str
    device_id: str
    public_key: bytes
    last_address: str | None = None
    paired_at: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "device_id": self.device_id,
            "public_key": base64.b64encode(self.public_key).decode(),
            "last_address": self.last_address,
            "paired_at": self.paired_at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Peer:
        key = base64.b64decode(data["public_key"], validate=True)
        if len(key) != 32:
            raise ValueError("public key is not 32 bytes")
        return cls(
            name=str(data["name"]),
            device_id=device_id_for(key),
            public_key=key,
            last_address=data.get("last_address"),
            paired_at=str(data.get("paired_at", "")),
        )

    @classmethod
    def new(cls, name: str, public_key: bytes, last_address: str | None = None) -> Peer:
        """A freshly paired peer, stamped now."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        return cls(name, device_id_for(public_key), public_key, last_address, now)


class Peers:
    """Load, query and atomically save the trust store (config_dir/peers.json, 0600)."""

    def __init__(self, path: Path, peers: list[Peer]) -> None:
        self.path = path
        self._peers = peers

    @classmethod
    def load(cls, settings: Settings) -> Peers:
        """Read the trust store; a missing file is an empty store."""
        path = settings.config_dir / PEERS_FILE
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            peers = [Peer.from_json(item) for item in raw.get("peers", [])]
        except FileNotFoundError:
            peers = []
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"trust store {path} is damaged ({exc})") from exc
        return cls(path, peers)

    def all(self) -> list[Peer]:
        return list(self._peers)

    def find(self, name_or_id: str) -> Peer | None:
        """The peer with this name or device id (any case, dashes optional); None if unknown."""
        for peer in self._peers:
            if peer.name == name_or_id:
                return peer
        try:
            wanted = normalize_device_id(name_or_id)
        except ValueError:
            return None
        return next((p for p in self._peers if p.device_id == wanted), None)

    def get(self, name_or_id: str) -> Peer:
        """The named peer, or UnknownPeer (a NotPaired) naming a close match if there is one."""
        peer = self.find(name_or_id)
        if peer is None:
            raise UnknownPeer(self._unknown(name_or_id))
        return peer

    def _unknown(self, wanted: str) -> str:
        names = {p.name.casefold(): p.name for p in self._peers}
        if not names:
            return (
                f"no paired peer named {wanted!r} "
                "(this machine has no paired peers; run `commuter pair`)"
            )
        close = difflib.get_close_matches(wanted.casefold(), list(names), n=1)
        if close:
            return f"no paired peer named {wanted!r}; did you mean {names[close[0]]!r}?"
        return f"no paired peer named {wanted!r} (see `commuter peers`)"

    def by_key(self, public_key: bytes) -> Peer | None:
        return next((p for p in self._peers if p.public_key == public_key), None)

    def is_trusted(self, public_key: bytes) -> bool:
        return self.by_key(public_key) is not None

    def name_taken(self, peer: Peer) -> Peer | None:
        """The paired machine with another key that already goes by `peer`'s name."""
        return next(
            (p for p in self._peers if p.name == peer.name and p.public_key != peer.public_key),
            None,
        )

    def add(self, peer: Peer) -> None:
        """Add a peer, or replace the entry of its key (new name or address).

        PeerError if another machine (another key) already has its name: names are how
        commands pick a peer, and silently dropping the trust of a machine is not a rename.
        """
        other = self.name_taken(peer)
        if other is not None:
            raise PeerError(
                f"another machine ({other.device_id}) is already paired as {peer.name!r}; "
                f"run `commuter unpair {peer.name}` first if it is gone"
            )
        self._peers = [p for p in self._peers if p.public_key != peer.public_key]
        self._peers.append(peer)

    def remove(self, name_or_id: str) -> Peer:
        """Forget a peer; NotPaired if unknown."""
        peer = self.get(name_or_id)
        self._peers = [p for p in self._peers if p.public_key != peer.public_key]
        return peer

    def touch_address(self, public_key: bytes, address: str) -> None:
        """Remember where a peer was last reached."""
        self._peers = [
            replace(p, last_address=address) if p.public_key == public_key else p
            for p in self._peers
        ]

    def save(self) -> None:
        data = {"version": _STORE_VERSION, "peers": [p.to_json() for p in self._peers]}
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write_text(self.path, json.dumps(data, indent=2) + "\n", mode=0o600)
