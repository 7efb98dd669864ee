"""The inbox: sealed bundles received from paired peers, each with a small JSON meta file."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from commuter.errors import NotPaired
from commuter.fsutil import atomic_write_text, is_temp_name, process_tag, sweep_temps
from commuter.peer.identity import Identity
from commuter.peer.peers import Peer, Peers
from commuter.settings import Settings

SEALED_SUFFIX = ".sealed"
META_SUFFIX = ".json"
# What a daemon before process-tagged names left while receiving; its process is surely gone
# after an hour (a stalled upload is given up on after settings.stall_timeout).
_LEGACY_TEMP = re.compile(r"\.incoming-[0-9a-f]{16}\.tmp")
_LEGACY_AGE = 3600.0


@dataclass(frozen=True, slots=True)
class InboxItem:
    """One received bundle: still sealed, with who sent it and when."""

    id: str
    sealed_path: Path
    meta_path: Path
    sender_name: str
    sender_device_id: str
    sender_key: bytes
    received_at: str
    digest: str
    size: int

    @property
    def origin(self) -> str:
        """How the import summary names the sender."""
        return f"{self.sender_name} ({self.sender_device_id})"


@dataclass(frozen=True, slots=True)
class Upload:
    """An upload still arriving, imported meanwhile (pipeline.Arriving): the id it will have
    in the inbox if it has to wait there, its sender (the seal's key, checked), the sealed
    bundle's digest and size, and the growing file of its opened bytes."""

    id: str
    sender: Peer
    digest: str
    size: int
    plain: Path


class Inbox:
    """settings.inbox_dir: <id>.sealed plus <id>.json; an entry counts once its meta exists."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dir = settings.inbox_dir

    def ensure(self) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self.dir

    def temp_path(self) -> Path:
        """A fresh temp name inside the inbox (same filesystem, so adding is a rename). It
        carries this process's tag, so `sweep` can tell a dead daemon's leftover from a live
        one's upload in progress."""
        return self.ensure() / f".incoming.cm{process_tag()}.{secrets.token_hex(8)}.tmp"

    def opened_path(self) -> Path:
        """A fresh temp name for the opened bytes of an upload imported as it arrives."""
        return self.ensure() / f".opened.cm{process_tag()}.{secrets.token_hex(8)}.tmp"

    @staticmethod
    def new_id(digest: str) -> str:
        """The id of an entry of the sealed bundle with this digest, received now."""
        return f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{digest[:12]}-{secrets.token_hex(3)}"

    def sweep(self) -> int:
        """Remove the temp files of processes that died mid-receive (kill -9, power cut): this
        program's own tagged temps whose process is gone, and untagged `.incoming-*.tmp` of
        an earlier version older than an hour. Every other file stays. The number removed."""
        removed = sweep_temps(self.dir)
        try:
            entries = list(os.scandir(self.dir))
        except OSError:
            return removed
        now = time.time()
        for entry in entries:
            if not _LEGACY_TEMP.fullmatch(entry.name):
                continue
            with contextlib.suppress(OSError):
                st = entry.stat(follow_symlinks=False)
                if now - st.st_mtime > _LEGACY_AGE and not entry.is_dir(follow_symlinks=False):
                    os.unlink(entry.path)
                    removed += 1
        return removed

    def add(self, sealed: Path, sender: Peer, digest: str, item_id: str | None = None) -> InboxItem:
        """Move a verified sealed file into the inbox and record its meta (meta last)."""
        self.ensure()
        now = datetime.now(UTC)
        item_id = item_id or self.new_id(digest)
        target = self.dir / (item_id + SEALED_SUFFIX)
        os.replace(sealed, target)
        os.chmod(target, 0o600)
        meta = {
            "version": 1,
            "sender": {
                "name": sender.name,
                "device_id": sender.device_id,
                "public_key": base64.b64encode(sender.public_key).decode(),
            },
            "received_at": now.isoformat(timespec="seconds"),
            "digest": digest,
            "size": target.stat().st_size,
        }
        meta_path = self.dir / (item_id + META_SUFFIX)
        atomic_write_text(meta_path, json.dumps(meta, indent=2) + "\n")
        return self._item(meta_path)

    def pending(self) -> list[InboxItem]:
        """Complete entries, oldest first; half-written or damaged ones are skipped."""
        if not self.dir.is_dir():
            return []
        items = []
        for meta_path in sorted(self.dir.glob("*" + META_SUFFIX)):
            if is_temp_name(meta_path.name):
                continue
            with contextlib.suppress(ValueError, KeyError, TypeError, OSError):
                items.append(self._item(meta_path))
        return items

    def remove(self, item: InboxItem) -> None:
        """Drop an entry (meta first, so a crash never leaves a meta without its file)."""
        item.meta_path.unlink(missing_ok=True)
        item.sealed_path.unlink(missing_ok=True)

    def open(self, item: InboxItem, identity: Identity, peers: Peers, dst: Path) -> Path:
        """Decrypt an entry to `dst`; NotPaired if its sender was unpaired since it arrived."""
        from commuter.peer.seal import open_file

        sender = open_file(item.sealed_path, dst, identity, is_trusted=peers.is_trusted)
        if sender != item.sender_key:
            dst.unlink(missing_ok=True)
            raise NotPaired(f"inbox entry {item.id} was sealed by another key than its sender's")
        return dst

    def _item(self, meta_path: Path) -> InboxItem:
        data = json.loads(meta_path.read_text(encoding="utf-8"))
        item_id = meta_path.name[: -len(META_SUFFIX)]
        sealed = self.dir / (item_id + SEALED_SUFFIX)
        if not sealed.is_file():
            raise ValueError("sealed file missing")
        sender = data["sender"]
        return InboxItem(
            id=item_id,
            sealed_path=sealed,
            meta_path=meta_path,
            sender_name=str(sender["name"]),
            sender_device_id=str(sender["device_id"]),
            sender_key=base64.b64decode(sender["public_key"], validate=True),
            received_at=str(data["received_at"]),
            digest=str(data["digest"]),
            size=int(data.get("size", sealed.stat().st_size)),
        )
