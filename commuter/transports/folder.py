"""Folder transport: bundle files in a shared folder (Dropbox, Syncthing, a USB stick).

Layout of the transfer dir: `<stamp>-<digest12>.sealed` (sealed to its recipients) and
`<stamp>-<digest12>.commuter` (plain) at the top, plus commuter 0.2's `pending/*.json`.
A drop appears atomically (dot-prefixed temp name, then rename). Pull reads only files
addressed to this machine, never moves other machines' files, and remembers what it
imported by digest; a sealed file addressed to this machine alone is removed once imported.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from commuter import progress
from commuter.errors import BundleError, ConfigError
from commuter.fsutil import CHUNK, is_temp_name, sha256_file
from commuter.peer.identity import is_device_id
from commuter.peer.peers import Peer
from commuter.transports import (
    PLAIN_SUFFIX,
    SEALED_SUFFIX,
    Incoming,
    Receipt,
    Transport,
    TransportContext,
)
from commuter.transports.state import PullState

LEGACY_DIR = "pending"
SETTLE_SECONDS = 2.0
RECHECK_SECONDS = 0.3


ACK_MARK = ".ack-"  # `.<drop>.ack-<device id>`: a hidden name, so pulls never read it


@dataclass(frozen=True, slots=True)
class _Found:
    path: Path
    sealed: bool
    legacy: bool
    only_me: bool
    sender: str | None
    recipients: tuple[str, ...] = ()


class FolderTransport(Transport):
    """Drops into and picks up from config `transfer-dir`."""

    scheme = "folder"

    def __init__(
        self,
        ctx: TransportContext,
        *,
        root: Path | None = None,
        settle: float = SETTLE_SECONDS,
        recheck: float = RECHECK_SECONDS,
    ) -> None:
        super().__init__(ctx)
        self._root = root
        self.settle = settle
        self.recheck = recheck
        self._found: dict[str, _Found] = {}
        self._state: PullState | None = None

    @property
    def configured(self) -> bool:
        return (self._root or self.ctx.config.transfer_dir) is not None

    @property
    def root(self) -> Path:
        root = self._root or self.ctx.config.transfer_dir
        if root is None:
            raise ConfigError(
                "no transfer directory configured; run `commuter config set transfer-dir DIR`"
            )
        return root

    @property
    def state(self) -> PullState:
        if self._state is None:
            self._state = PullState.load(self.ctx.settings)
        return self._state

    async def reachable(self, peer: Peer | None) -> str | None:
        if not self.configured:
            return "no transfer-dir is configured (run `commuter config set transfer-dir DIR`)"
        parent = self.root if self.root.exists() else self.root.parent
        if not parent.is_dir():
            return f"transfer dir {self.root} does not exist (is the drive or sync folder there?)"
        return None

    async def send(self, sealed: Path, to: Sequence[Peer]) -> Receipt:
        """Copy the file into the folder under a temp name, then rename it into place."""
        from commuter.peer.seal import is_sealed

        is_seal = is_sealed(sealed)
        if to and not is_seal:
            raise ValueError("a drop for named peers must be sealed")
        root = self.root
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create transfer dir {root}: {exc.strerror}") from exc
        digest = await asyncio.to_thread(sha256_file, sealed)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        name = f"{stamp}-{digest[:12]}{SEALED_SUFFIX if is_seal else PLAIN_SUFFIX}"
        target = root / name
        tmp = root / f".{name}.{secrets.token_hex(4)}.part"
        try:
            await asyncio.to_thread(_copy, sealed, tmp)
            if not is_seal:
                os.chmod(tmp, 0o600)  # a readable conversation: not for other local users
            os.replace(tmp, target)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise ConfigError(f"cannot write to transfer dir {root}: {exc.strerror}") from exc
        if not is_seal:
            # Our own plain drop must not come back to us on the next pull.
            self.state.mark(digest, f"pushed {name}")
        return Receipt(
            self.scheme, name, tuple(p.name for p in to), str(target), target.stat().st_size
        )

    def _candidates(self) -> list[tuple[Path, bool]]:
        root = self.root
        out: list[tuple[Path, bool]] = []
        if root.is_dir():
            out += [(p, False) for p in sorted(root.iterdir())]
        legacy = root / LEGACY_DIR
        if legacy.is_dir():
            out += [(p, True) for p in sorted(legacy.glob("*.json"))]
        return [(p, lg) for p, lg in out if not is_temp_name(p.name) and _is_regular(p)]

    async def pending(self) -> list[Incoming]:
        """Complete bundles for this machine that were not imported yet."""
        if not self.configured:
            return []
        if not self.root.is_dir():
            # An unmounted drive or a sync folder not there yet must not look like an empty inbox.
            self.warnings.append(
                f"transfer dir {self.root} does not exist or is not a folder "
                "(is the drive or sync folder mounted?); nothing read from it"
            )
            return []
        stats: dict[Path, os.stat_result] = {}
        for p, _ in self._candidates():
            with contextlib.suppress(OSError):  # gone since the listing: a sync client's doing
                stats[p] = p.lstat()
        now = time.time()
        young = [p for p, st in stats.items() if now - st.st_mtime < self.settle]
        if young:
            # A file still being written changes size or mtime within a moment.
            await asyncio.sleep(self.recheck)
        items: list[Incoming] = []
        for path, legacy in self._candidates():
            before = stats.get(path)
            if before is None:
                continue
            if path in young:
                try:
                    after = path.lstat()
                except OSError:
                    continue
                if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
                    continue
            item = await asyncio.to_thread(self._classify, path, legacy)
            if item is not None:
                items.append(item)
        return items

    def _classify(self, path: Path, legacy: bool) -> Incoming | None:
        from commuter import core
        from commuter.peer import seal

        rel = str(path.relative_to(self.root))
        me = self.ctx.identity
        try:
            if seal.is_sealed(path):
                header = seal.read_header(path)
                if me.device_id not in header.recipients:
                    return None  # another machine's drop: not ours to read or touch
                found = _Found(
                    path,
                    True,
                    False,
                    header.recipients == (me.device_id,),
                    header.sender_device_id,
                    tuple(header.recipients),
                )
            elif legacy or path.suffix == PLAIN_SUFFIX or core.is_bundle(path):
                found = _Found(path, False, legacy, False, None)
            else:
                self.warnings.append(f"skipping {path}: not a commuter bundle (left in place)")
                return None
            digest = sha256_file(path)
        except BundleError as exc:
            self.warnings.append(f"skipping {path}: {exc} (left in place)")
            return None
        except OSError as exc:
            self.warnings.append(f"skipping {path}: {exc.strerror or exc} (will retry)")
            return None
        if self.state.done(digest):
            return None
        self._found[rel] = found
        return Incoming(
            self.scheme,
            rel,
            rel,
            path.stat().st_size,
            digest,
            found.sealed,
            found.sender,
            found.legacy,
        )

    async def fetch(self, item: Incoming, dst_dir: Path) -> Path:
        """Copy the file out of the shared folder; refuse it if it changed meanwhile."""
        found = self._found[item.id]
        dst = dst_dir / found.path.name
        digest = await asyncio.to_thread(_copy_digest, found.path, dst)
        if digest != item.digest:
            dst.unlink(missing_ok=True)
            raise BundleError(f"{found.path} changed while being read (still syncing?)")
        return dst

    async def ack(self, item: Incoming) -> None:
        """Remember the digest. A drop sealed to this machine alone is deleted; one sealed to
        several gets an empty marker `.<drop>.ack-<device id>` from each recipient that
        imported it, and the last of them deletes the drop and the markers."""
        # Reload: `flow` may have recorded other digests since this transport read the state.
        PullState.load(self.ctx.settings).mark(item.digest, item.label)
        found = self._found.get(item.id)
        if found is not None and not found.sealed and not found.legacy:
            await asyncio.to_thread(self._ack_plain, found)
            return
        if found is None or not found.sealed:
            return
        if found.only_me:
            found.path.unlink(missing_ok=True)
            return
        await asyncio.to_thread(self._ack_shared, found)

    def _ack_shared(self, found: _Found) -> None:
        def marker(device_id: str) -> Path:
            return found.path.with_name(f".{found.path.name}{ACK_MARK}{device_id}")

        if not all(is_device_id(r) for r in found.recipients):
            return  # parse_header lets none through; never make a name of anything else
        mine = marker(self.ctx.identity.device_id)
        try:
            # O_NOFOLLOW | O_EXCL: a link planted under this name must not create a file
            # wherever it points (anyone who can write to the shared folder can plant one).
            os.close(os.open(mine, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600))
        except FileExistsError:
            if not _is_regular(mine):
                self.warnings.append(
                    f"not marking {found.path} as imported here: {mine} "
                    "exists and is not a plain file (left in place)"
                )
                return
        except OSError as exc:
            self.warnings.append(f"cannot mark {found.path} as imported here: {exc.strerror}")
            return
        if all(_is_regular(marker(r)) for r in found.recipients):
            found.path.unlink(missing_ok=True)
            for r in found.recipients:
                marker(r).unlink(missing_ok=True)

    # --- plain drops: removed once every machine that pulls here has imported them ----------

    def _marker(self, drop: Path, device_id: str) -> Path:
        return drop.with_name(f".{drop.name}{ACK_MARK}{device_id}")

    def _pullers(self) -> list[str]:
        """Device ids of the machines that pulled from this folder in the last PULLER_DAYS
        (each leaves `.commuter-puller-<device id>`, touched on every pull)."""
        now = time.time()
        out = []
        for p in self.root.glob(f"{PULLER_MARK}*"):
            device_id = p.name[len(PULLER_MARK) :]
            with contextlib.suppress(OSError):
                st = p.lstat()
                if (
                    is_device_id(device_id)
                    and stat.S_ISREG(st.st_mode)
                    and now - st.st_mtime < PULLER_DAYS * 86400
                ):
                    out.append(device_id)
        return out

    def _register(self) -> bool:
        """Say this machine pulls here (`.commuter-puller-<device id>`, touched each time)."""
        me = self.root / f"{PULLER_MARK}{self.ctx.identity.device_id}"
        try:
            if _is_regular(me):
                os.utime(me, None)
            elif not os.path.lexists(me):
                os.close(os.open(me, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600))
            return True
        except OSError:
            return False  # a read-only folder: pulling still works, only the upkeep does not

    def upkeep(self) -> None:
        """After a pull (never a dry run): with plain drops here, register this machine as
        one that pulls here, mark those it imported or pushed, remove those every such
        machine marked, and those older than config `plain-max-age-days` (default 30) that
        it imported or pushed. A plain drop not known here is never removed by this machine."""
        if not self.configured or not self.root.is_dir():
            return
        drops = [d for d in self.root.glob(f"*{PLAIN_SUFFIX}") if _is_regular(d)]
        if not drops or not self._register():
            return  # nothing plain: leave no trace in the folder
        days = self.ctx.config.plain_max_age_days or PLAIN_MAX_AGE_DAYS
        now = time.time()
        pullers: list[str] | None = None
        for drop in drops:
            try:
                mtime = drop.lstat().st_mtime
                done = self.state.done(sha256_file(drop))
            except OSError:
                continue
            if not done:
                continue  # not known here as a commuter bundle: never removed by this machine
            if now - mtime >= days * 86400:
                self._remove_plain(drop)
                continue
            if not _mark(self._marker(drop, self.ctx.identity.device_id)):
                continue
            pullers = self._pullers() if pullers is None else pullers
            if all(_is_regular(self._marker(drop, d)) for d in pullers):
                self._remove_plain(drop)

    def _remove_plain(self, drop: Path) -> None:
        with contextlib.suppress(OSError):
            drop.unlink()
        for marker in self.root.glob(f".{drop.name}{ACK_MARK}*"):
            if is_device_id(marker.name.rsplit(ACK_MARK, 1)[-1]) and _is_regular(marker):
                with contextlib.suppress(OSError):
                    marker.unlink()

    def _ack_plain(self, found: _Found) -> None:
        """Mark a plain drop imported here; the last of the machines that pull from this
        folder to import it removes it (and the markers)."""
        if not self._register() or not _mark(self._marker(found.path, self.ctx.identity.device_id)):
            return
        pullers = self._pullers()
        if pullers and all(_is_regular(self._marker(found.path, d)) for d in pullers):
            self._remove_plain(found.path)


PULLER_MARK = ".commuter-puller-"
PULLER_DAYS = 90  # a machine that has not pulled for this long no longer holds drops back
PLAIN_MAX_AGE_DAYS = 30


def _mark(path: Path) -> bool:
    """Create the empty marker `path` (never through a link planted under its name); True if
    it is there now as a plain file."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600))
    except FileExistsError:
        return _is_regular(path)
    except OSError:
        return False
    return True


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _is_regular(path: Path) -> bool:
    """A regular file itself, not a symlink to one: a link in the shared folder may point
    anywhere on this machine."""
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False


def _copy_digest(src: Path, dst: Path) -> str:
    import hashlib

    hasher = hashlib.sha256()
    # O_NOFOLLOW: the drop may have been swapped for a link since it was listed.
    fd = os.open(src, os.O_RDONLY | _NOFOLLOW)
    with os.fdopen(fd, "rb") as fin, dst.open("wb") as fout:
        while chunk := fin.read(CHUNK):
            hasher.update(chunk)
            fout.write(chunk)
            progress.advance(len(chunk))
    return hasher.hexdigest()


def _copy(src: Path, dst: Path) -> None:
    if not progress.shown():
        shutil.copyfile(src, dst)  # sendfile(2): no bytes through Python
        return
    with src.open("rb") as fin, dst.open("wb") as fout:
        while chunk := fin.read(CHUNK):
            fout.write(chunk)
            progress.advance(len(chunk))


# --- this machine's own drops: a newer push of a session replaces its older unread one ------

SENT_FILE = "folder-sent.json"
MAX_SENT = 2_000


def _drop_name(name: str) -> bool:
    """A drop name this module makes (`<stamp>-<digest12>.sealed|.commuter`), nothing else."""
    import re

    return re.fullmatch(r"[0-9]{8}T[0-9]{6}-[0-9a-f]{12}\.(sealed|commuter)", name) is not None


def supersede(ctx: TransportContext, receipt: Receipt, agent: str, session_id: str) -> list[str]:
    """Record `receipt` (a drop this machine just made for `agent`'s `session_id`) and remove
    this machine's older drops of the same session to the same recipients that nobody has
    read yet: no recipient's ack marker beside it, and still the very bytes written (size and
    sha256 as recorded). Only names from this machine's own record are ever removed. Returns
    the names removed."""
    import json

    from commuter.fsutil import atomic_write_text

    if receipt.transport != "folder" or not _drop_name(receipt.item_id):
        return []
    root = Path(receipt.location).parent
    path = ctx.settings.state_dir / SENT_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        sent = {str(k): dict(v) for k, v in raw.get("drops", {}).items()}
    except (OSError, ValueError, TypeError, AttributeError):
        sent = {}
    mine = root / receipt.item_id
    digest = sha256_file(mine)
    key = [str(root), agent, session_id, sorted(receipt.recipients)]
    removed: list[str] = []
    for name, entry in list(sent.items()):
        if not _drop_name(name) or entry.get("key") != key or name == receipt.item_id:
            continue
        old = root / name
        if not _is_regular(old):
            del sent[name]  # imported (and removed) by its recipients, or gone
            continue
        own = f".{name}{ACK_MARK}{ctx.identity.device_id}"
        readers = [p for p in root.iterdir() if p.name.startswith(f".{name}{ACK_MARK}")]
        if any(p.name != own for p in readers):
            continue  # read by some recipient: the last one removes it
        try:
            same = old.lstat().st_size == entry.get("size") and sha256_file(old) == entry.get(
                "digest"
            )
        except OSError:
            continue
        if same:
            with contextlib.suppress(OSError):
                old.unlink()
                removed.append(name)
                if readers:  # this machine's own marker of its own plain drop
                    (root / own).unlink()
            del sent[name]
    sent[receipt.item_id] = {"key": key, "digest": digest, "size": mine.stat().st_size}
    if len(sent) > MAX_SENT:
        for name in sorted(sent)[: len(sent) - MAX_SENT]:  # names start with the UTC stamp
            del sent[name]
    ctx.settings.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write_text(path, json.dumps({"version": 1, "drops": sent}) + "\n")
    return removed
