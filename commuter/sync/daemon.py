"""`commuter serve --sync`: the peer daemon plus two loops.

sender:   poll the session stores (watch.Watcher); a session whose transcript has not changed
          for `quiet` seconds, that no agent process holds and whose version a paired peer
          does not have yet is exported once and sent to each such peer in the auto order
          (LAN if it answers, else relay, else folder). A send that fails is queued with a
          bounded exponential backoff (state.backoff); a peer that contacts us is retried at
          once. What a peer acknowledged is recorded (state.SyncState), so a restart sends it
          nothing again.
receiver: import what waits here (the LAN inbox at once when an upload arrives; relay and
          folder every `pull_every` seconds) through the pipeline's one receive path. An
          update of a session a local agent holds, or of one whose project does not exist
          here, waits (shown by `status`), tried again later, one log line when it starts
          waiting, none on each retry.

One log line per transfer naming session, project and peer. Every loop sleeps between
rounds; SIGTERM (the `stop` event) ends them all and `serve` exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from commuter.errors import BackendError, CommuterError, DeltaBaseMismatch, SessionBusy
from commuter.sync import status_file
from commuter.sync.state import SyncState, backoff
from commuter.sync.watch import Seen, Watcher

if TYPE_CHECKING:
    from commuter.peer.identity import Identity
    from commuter.peer.inbox import InboxItem, Upload
    from commuter.peer.peers import Peer
    from commuter.pipeline import Pulled
    from commuter.settings import Settings
    from commuter.sync.label import Label
    from commuter.transports import Incoming, Transport, TransportContext

Log = Callable[[str], None]

DEFAULT_QUIET = 30.0
SENDS_PER_ROUND = 16  # sessions exported per round: a first sync of thousands spreads out
BUSY_RECHECK = 5.0  # seconds between looks at a session an agent holds
HEARTBEAT = 60.0
UPKEEP_EVERY = 600.0  # seconds between folder upkeeps (each hashes the plain drops there)
_MAX_LABELS = 1024
_WARN_AGAIN = 3600.0
_MAX_WARNED = 256
_ORIGIN_ID = re.compile(r"\(([A-Za-z0-9-]{1,64})\)\Z")


@dataclass(frozen=True, slots=True)
class SyncOptions:
    quiet: float = DEFAULT_QUIET
    poll: float | None = None  # seconds between polls; default from quiet
    pull_every: float | None = None  # seconds between relay/folder pulls; default from quiet

    @property
    def poll_seconds(self) -> float:
        return self.poll if self.poll is not None else min(max(self.quiet / 4, 0.5), 5.0)

    @property
    def pull_seconds(self) -> float:
        return self.pull_every if self.pull_every is not None else min(max(self.quiet, 2.0), 30.0)


def short(session_id: str) -> str:
    return session_id[:8]


def project_name(project: str | Path | None) -> str:
    return str(project) if project else "no project"


@dataclass
class _Counters:
    sent: int = 0
    imported: int = 0
    warned: dict[str, float] = field(default_factory=dict)


class SyncDaemon:
    """The two loops and what they share; `run` until `stop` is set."""

    def __init__(
        self,
        settings: Settings,
        identity: Identity,
        options: SyncOptions,
        *,
        log: Log,
    ) -> None:
        self.settings = settings
        self.identity = identity
        self.options = options
        self.log = log
        self.state = SyncState.open(settings)
        self.watcher = Watcher(settings)
        self.status = status_file.StatusWriter(settings, quiet=options.quiet)
        self._arrived = asyncio.Event()
        self._kick_send = asyncio.Event()
        self._counters = _Counters()
        self._next_remote = 0.0
        self._seen: dict[tuple[str, str], Seen] = {}
        self._urgent = False
        # Peers that did not answer on the LAN lately (device id -> monotonic time): the next
        # sends go straight to the relay or folder instead of probing (and asking mDNS) again.
        self._lan_silent: dict[str, float] = {}
        self._receiving = asyncio.Lock()
        self._transports = _memo_factory(self._lan_silent)
        self._next_upkeep = 0.0
        self._prune_due = False  # an import made a backup: prune them (backups-keep, -max-mb)
        self._labels: dict[str, Label | None] = {}  # what newest_only read, by item and digest

    # --- hooks for the peer server ---------------------------------------------------------

    async def on_received(self, item: InboxItem, peer: Peer) -> str | None:
        """An upload landed in the LAN inbox: imported now, while the sender waits for the
        answer ("imported"; "queued" if it has to wait here: a held session, a missing
        project). A delta whose base this machine does not hold raises DeltaBaseMismatch:
        the sender hears 409 and sends the whole session at once. The sender is alive, so
        what waits for it goes now too."""
        from commuter.transports.lan import LanTransport

        await self._heard_from(peer.device_id)
        ctx = await asyncio.to_thread(self._context)
        async with LanTransport(ctx) as lan:
            found = [i for i in await lan.pending() if i.id == item.id]
            if not found:
                return "queued"
            imported = await self._receive_item(ctx, lan, found[0], f"lan:{item.id}", answer=True)
        await self._prune()
        return "imported" if imported else "queued"  # plain tokens: what the sender reads

    async def on_upload(self, upload: Upload) -> str | None:
        """A whole bundle imported while it arrives (pipeline.Arriving), one import at a time
        as ever; None if it has to wait: then it is stored and `on_received` takes it."""
        from commuter.model import ImportOptions
        from commuter.pipeline import Arriving, receive_one

        ctx = await asyncio.to_thread(self._context)
        source = Arriving(upload)
        warnings: list[str] = []
        async with self._receiving:
            try:
                pulled = await receive_one(
                    ctx, source, ImportOptions(interactive=False), warn=warnings.append
                )
            except CommuterError:
                return None
        if pulled is None or pulled.result is None:
            return None
        await self._heard_from(upload.sender.device_id)
        for message in warnings:
            self._warn_once(message, message)
        self._imported(ctx, (await source.pending())[0], pulled)
        await self._prune()
        return "imported"

    async def _heard_from(self, device_id: str) -> None:
        """A peer reached us on the LAN: it answers there again, and what waits for it goes
        now."""
        self._lan_silent.pop(device_id, None)
        if await asyncio.to_thread(self.state.retry_now, device_id):
            self._kick_send.set()

    def sync_now(self) -> None:
        """`commuter sync-now` (SIGUSR1; e.g. Claude Code's SessionEnd hook): list the stores
        now and send what changed without waiting out the quiet period (the agent has just
        let go); a session an agent still holds still waits."""
        self.watcher.force_scan()
        self._urgent = True
        self._kick_send.set()

    # --- the loops -------------------------------------------------------------------------

    async def run_loops(self, stop: asyncio.Event) -> None:
        self.status.write(running=True)
        tasks = [
            asyncio.create_task(self._loop(stop, self._send_round, self._kick_send, "send")),
            asyncio.create_task(
                self._loop(stop, self._receive_round, self._arrived, "receive"),
            ),
            asyncio.create_task(self._heartbeat(stop)),
        ]
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self.status.write(running=False)
            self.state.close()

    async def _loop(
        self,
        stop: asyncio.Event,
        round_: Callable[[], Any],
        kick: asyncio.Event,
        what: str,
    ) -> None:
        interval = self.options.poll_seconds
        while not stop.is_set():
            kick.clear()
            try:
                await round_()
            except (CommuterError, OSError) as exc:
                self._error(f"{what}: {exc}")
            except Exception as exc:  # a bug: keep the daemon, say it once
                self._error(f"{what}: unexpected {type(exc).__name__}: {exc}")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await _first(stop, kick)

    async def _heartbeat(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(HEARTBEAT):
                    await stop.wait()
            self.status.write(running=not stop.is_set())

    def _error(self, message: str) -> None:
        """One line per distinct error an hour (a broken store must not fill the journal)."""
        self.status.error(message)
        now = time.monotonic()
        warned = self._counters.warned
        if now - warned.get("error:" + message, -1e9) < _WARN_AGAIN:
            return
        if len(warned) >= _MAX_WARNED:
            warned.clear()
        warned["error:" + message] = now
        self.log(f"error: {message}")

    def _warn_once(self, key: str, message: str) -> None:
        now = time.monotonic()
        warned = self._counters.warned
        if now - warned.get(key, -1e9) < _WARN_AGAIN:
            return
        if len(warned) >= _MAX_WARNED:
            warned.clear()
        warned[key] = now
        self.log(f"warning: {message}")

    def _context(self) -> TransportContext:
        from commuter.transports import TransportContext

        return TransportContext.load(self.settings)

    # --- sending ---------------------------------------------------------------------------

    async def _send_round(self) -> None:
        seen = await asyncio.to_thread(self.watcher.poll)
        self._seen = dict(seen)
        ctx = await asyncio.to_thread(self._context)
        peers = ctx.peers.all()
        if not peers:
            return
        quiet = 0.0 if self._urgent else self.options.quiet
        self._urgent = False
        todo = await asyncio.to_thread(self._due, seen, peers, quiet)
        for entry, wanting in list(todo.values())[:SENDS_PER_ROUND]:
            await self._send_session(ctx, entry, wanting)

    def _due(
        self, seen: dict[tuple[str, str], Seen], peers: Sequence[Peer], quiet: float
    ) -> dict[tuple[str, str], tuple[Seen, list[Peer]]]:
        """Sessions quiet long enough that some peer lacks, with those peers, newest first (the
        session just left is the one wanted first); a queued send waits out its backoff even
        if the session changed again meanwhile."""
        now = time.time()
        sent = {p.device_id: self.state.sent_versions(p.device_id) for p in peers}
        queued = self.state.queued()
        due: dict[tuple[str, str], tuple[Seen, list[Peer]]] = {}
        for key, entry in sorted(seen.items(), key=lambda kv: kv[1].mtime, reverse=True):
            if not entry.ref.has_messages or now - entry.mtime < quiet:
                continue
            for peer in peers:
                if sent[peer.device_id].get(key) == entry.version:
                    continue
                q = queued.get((peer.device_id, *key))
                if q is not None and q.next_at > now:
                    continue
                due.setdefault(key, (entry, []))[1].append(peer)
        return due

    async def _send_session(self, ctx: TransportContext, entry: Seen, peers: list[Peer]) -> None:
        from commuter.sync.busy import busy_reason

        held = await asyncio.to_thread(busy_reason, self.settings, entry.ref)
        if held:
            for peer in peers:
                self._queue(peer, entry, f"held by a running agent: {held}", delay=BUSY_RECHECK)
            return
        for peer in peers:
            await self._send_to(ctx, entry, peer)

    async def _send_to(self, ctx: TransportContext, entry: Seen, peer: Peer) -> None:
        """Export and send to one peer: pipeline.push_session sends only what the peer lacks
        when it acknowledged an earlier state (a delta), the whole session otherwise or when
        the peer refuses the base."""
        from commuter.pipeline import push_session
        from commuter.sync.label import seal_labelled

        ref = entry.ref
        self.status.sending(ref.session_id, peer.name)
        started = time.monotonic()
        try:
            pushed = await push_session(
                ctx,
                ref,
                [peer],
                "auto",
                named=True,
                factory=self._transports,
                seal_with=seal_labelled,  # the peer's status labels it from its first 72 KiB
            )
        except CommuterError as exc:
            self._queue(peer, entry, str(exc))
            return
        except (OSError, ValueError) as exc:  # a peer gone mid-transfer, a file gone mid-export
            self._queue(peer, entry, f"{type(exc).__name__}: {exc}")
            return
        finally:
            self.status.sending(None, None)
        receipt = pushed.receipt
        await asyncio.to_thread(
            self.state.mark_sent,
            peer.device_id,
            ref.backend,
            ref.session_id,
            entry.version,
            receipt.transport,
        )
        self._counters.sent += 1
        self.status.count(sent=self._counters.sent)
        took = time.monotonic() - started
        kind = "increment" if pushed.delta else "whole session"
        if pushed.fell_back:
            kind += " (it refused the increment)"
        self.log(
            f"sent {short(ref.session_id)} ({ref.backend}, {project_name(ref.project)}) "
            f"to {peer.name} via {receipt.transport}: {kind}, {receipt.size} bytes "
            f"in {took:.2f} s"
        )

    def _queue(self, peer: Peer, entry: Seen, reason: str, *, delay: float | None = None) -> None:
        ref = entry.ref
        old = self.state.queued().get((peer.device_id, ref.backend, ref.session_id))
        q = self.state.queue(
            peer.device_id, ref.backend, ref.session_id, entry.version, reason, delay=delay
        )
        if old is None or old.reason != reason:
            wait = max(0.0, q.next_at - time.time())
            self.log(
                f"queued {short(ref.session_id)} ({ref.backend}, {project_name(ref.project)}) "
                f"for {peer.name}: {reason} (next try in {wait:.0f} s)"
            )

    # --- receiving -------------------------------------------------------------------------

    async def _receive_round(self) -> None:
        from commuter.pipeline import pull_order
        from commuter.transports import create
        from commuter.transports.newest import newest_factory

        ctx = await asyncio.to_thread(self._context)
        remote = time.monotonic() >= self._next_remote
        if remote:
            self._next_remote = time.monotonic() + self.options.pull_seconds
        if len(self._labels) > _MAX_LABELS:
            self._labels.clear()
        # As `pull` does: of several items of one session from one sender only the newest
        # whole one and the deltas after it are imported; the older ones go once it is in.
        make = newest_factory(create, labels=self._labels)
        listed: set[str] = set()
        for name in pull_order(ctx, "auto"):
            if name != "lan" and not remote:
                listed |= {k for k in self.state.waiting() if k.startswith(name + ":")}
                continue
            async with make(name, ctx) as transport:
                try:
                    items = await transport.pending()
                except CommuterError as exc:
                    self._warn_once(f"pending:{name}", f"{name}: {exc}")
                    listed |= {k for k in self.state.waiting() if k.startswith(name + ":")}
                    continue
                finally:
                    self._flush(transport)
                for item in items:
                    key = f"{name}:{item.id}"
                    listed.add(key)
                    await self._receive_item(ctx, transport, item, key)
        await asyncio.to_thread(self.state.keep_waiting_only, listed)
        await self._prune()
        if remote and ctx.config.transfer_dir is not None:
            await self._folder_upkeep(ctx)

    async def _prune(self) -> None:
        """After imports that made backups, the prune a CLI import runs (in a thread)."""
        if not self._prune_due:
            return
        from commuter.backups import auto_prune

        self._prune_due = False
        await asyncio.to_thread(auto_prune, self.settings)

    async def _folder_upkeep(self, ctx: TransportContext) -> None:
        """What `pull` does after reading the folder: remove the plain drops every machine
        that pulls there imported, and old ones this machine imported or pushed; at most
        every UPKEEP_EVERY seconds (it hashes each plain drop), in a thread."""
        from commuter.transports.folder import FolderTransport

        now = time.monotonic()
        if now < self._next_upkeep:
            return
        self._next_upkeep = now + UPKEEP_EVERY
        try:
            await asyncio.to_thread(FolderTransport(ctx).upkeep)
        except (CommuterError, OSError) as exc:
            self._warn_once("upkeep", f"folder upkeep: {exc}")

    def _flush(self, transport: Transport) -> None:
        for message in transport.warnings:
            self._warn_once(message, message)
        transport.warnings.clear()

    async def _receive_item(
        self,
        ctx: TransportContext,
        transport: Transport,
        item: Incoming,
        key: str,
        *,
        answer: bool = False,
    ) -> bool:
        """Import one item (one at a time: the upload handler and the loop share a lock);
        True if it was imported. `answer`: the sender is waiting for the upload's answer, so
        a delta that does not apply is raised (409) instead of fetching the whole session."""
        async with self._receiving:
            return await self._receive_locked(ctx, transport, item, key, answer)

    async def _receive_locked(
        self, ctx: TransportContext, transport: Transport, item: Incoming, key: str, answer: bool
    ) -> bool:
        from commuter.model import ImportOptions
        from commuter.pipeline import DeltaKept, receive_one
        from commuter.sync.busy import busy_reason

        waiting = self.state.waiting().get(key)
        now = time.time()
        if waiting is not None:
            if waiting.next_at > now and not answer:
                return False
            if waiting.reason.startswith("held by"):
                local = self._local(waiting.session)
                held = (
                    await asyncio.to_thread(busy_reason, self.settings, local.ref)
                    if local is not None
                    else None
                )
                if held:
                    self.state.wait(key, *_row(waiting), waiting.reason, delay=BUSY_RECHECK)
                    return False
        warnings: list[str] = []
        options = ImportOptions(interactive=False)
        try:
            pulled = await receive_one(
                ctx,
                _item_source(transport, item, whole_of_delta=answer),
                options,
                warn=warnings.append,
            )
        except DeltaKept as exc:  # its sender was asked for the whole session
            await self._waits(ctx, transport, item, key, exc)
            return False
        except DeltaBaseMismatch as exc:
            self.state.done_waiting(key)  # dropped by the pipeline: it never applies here
            sender = _sender_name(ctx, item.sender)
            self.log(f"dropped a delta from {sender} via {item.transport}: {exc}")
            if answer:
                raise
            return False
        except CommuterError as exc:
            await self._waits(ctx, transport, item, key, exc)
            return False
        finally:
            self._flush(transport)
        for message in warnings:
            self._warn_once(message, message)
        self.state.done_waiting(key)
        if pulled is not None and pulled.refused is not None:
            self._refused(ctx, pulled, *pulled.refused)
        if pulled is None or pulled.result is None:
            return False
        self._imported(ctx, item, pulled)
        return True

    def _refused(self, ctx: TransportContext, pulled: Pulled, agent: str, session: str) -> None:
        """A peer could not apply an increment we sent it through the relay or the folder
        (sync/nack.py): the pipeline forgot what it holds; send it the session whole now."""
        peer = _origin_peer(ctx, pulled.origin)
        if peer is None:
            return
        self.state.forget_sent(peer.device_id, agent, session)
        self.state.unqueue(peer.device_id, agent, session)
        self._kick_send.set()
        self.log(
            f"{peer.name} could not apply the increment of {short(session)} ({agent}) sent "
            f"via {pulled.item.transport}: sending it the whole session"
        )

    def _local(self, session_id: str) -> Seen | None:
        return next((s for k, s in self._seen.items() if k[1] == session_id), None)

    async def _waits(
        self,
        ctx: TransportContext,
        transport: Transport,
        item: Incoming,
        key: str,
        exc: CommuterError,
    ) -> None:
        """An item that could not be imported now: why, and when to look again."""
        from commuter.sync.label import label_of

        label = await label_of(ctx, transport, item, self.state)
        session = label.session_id if label else "?"
        project = label.project if label else "?"
        text = str(exc)
        if isinstance(exc, SessionBusy) or _busy_text(text):
            reason, delay = f"held by a local agent ({text})", BUSY_RECHECK
        elif isinstance(exc, BackendError) and ("--project-dir" in text or "path-map" in text):
            reason, delay = f"project {project} does not exist here", None
        else:
            reason, delay = text, None
        sender = _sender_name(ctx, item.sender)
        old = self.state.waiting().get(key)
        row = self.state.wait(
            key, item.transport, sender, session, project, item.size, reason, delay=delay
        )
        if old is None or old.reason != reason:
            self.log(
                f"waiting: {short(session)} ({project}) from {sender} via {item.transport}: "
                f"{reason} (next look in {max(0.0, row.next_at - time.time()):.0f} s)"
            )

    def _imported(self, ctx: TransportContext, item: Incoming, pulled: Pulled) -> None:
        result = pulled.result
        assert result is not None
        peer = _origin_peer(ctx, pulled.origin)
        self._counters.imported += 1
        self.status.count(imported=self._counters.imported)
        who = peer.name if peer else pulled.origin
        if result.backups:
            self._prune_due = True
        self.log(
            f"imported {short(result.session_id)} ({result.backend}, {result.project_dir}) "
            f"from {who} via {item.transport}: {result.action}"
        )
        if peer is None or result.transcript is None:
            return
        in_step = result.action in ("created", "updated", "replaced", "forked") or (
            result.action == "unchanged" and not result.warnings
        )
        if not in_step:
            return
        got = version_of_path(result.transcript)
        if got is not None:
            # The sender has this version: sending it back would be an echo.
            self.state.mark_sent(
                peer.device_id, result.backend, result.session_id, got, item.transport
            )


def version_of_path(path: Path) -> str | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{st.st_size}-{st.st_mtime_ns}"


def _row(w: Any) -> tuple[str, str, str, str, int]:
    return (w.transport, w.sender, w.session, w.project, w.size)


def _busy_text(text: str) -> bool:
    return any(
        marker in text
        for marker in ("is writing to session", "names session", "has thread", "quit it first")
    )


def _sender_name(ctx: TransportContext, device_id: str | None) -> str:
    if not device_id:
        return "?"
    peer = next((p for p in ctx.peers.all() if p.device_id == device_id), None)
    return peer.name if peer else device_id


def _origin_peer(ctx: TransportContext, origin: str) -> Peer | None:
    """The paired peer whose key sealed an item (pipeline names it "name (device id)")."""
    found = _ORIGIN_ID.search(origin)
    if found is None:
        return None
    return next((p for p in ctx.peers.all() if p.device_id == found.group(1)), None)


async def _first(*events: asyncio.Event) -> None:
    """Return when any of `events` is set."""
    waiters = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


LAN_SILENT = 60.0  # seconds a peer silent on the LAN is not probed again (unless it calls)


def _memo_factory(silent: dict[str, float]) -> Callable[[str, TransportContext], Transport]:
    """Transports as `transports.create` makes them, but a LAN one that remembers which peers
    did not answer for LAN_SILENT seconds."""
    from commuter.transports import create
    from commuter.transports.lan import LanTransport

    class RememberingLan(LanTransport):
        async def reachable(self, peer: Peer | None) -> str | None:
            if peer is not None:
                since = silent.get(peer.device_id)
                if since is not None and time.monotonic() - since < LAN_SILENT:
                    return f"{peer.name} did not answer on the LAN a moment ago"
            reason = await super().reachable(peer)
            if peer is not None:
                if reason is None:
                    silent.pop(peer.device_id, None)
                elif len(silent) < 1024:
                    silent[peer.device_id] = time.monotonic()
            return reason

    def make(name: str, ctx: TransportContext) -> Transport:
        return RememberingLan(ctx) if name == "lan" else create(name, ctx)

    return make


async def _first_done(task: asyncio.Task[None], event: asyncio.Event) -> None:
    waiter = asyncio.create_task(event.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()


class _ItemSource:
    """One item of a transport as a pipeline Source, so it takes the one receive path."""

    scheme: ClassVar[str] = ""
    discard_strangers: ClassVar[bool] = False
    set_aside_damaged: ClassVar[bool] = False

    def __init__(self, transport: Transport, item: Incoming) -> None:
        self._t = transport
        self._item = item
        self.warnings = transport.warnings
        self.whole_of_delta = False

    async def pending(self) -> list[Incoming]:
        return [self._item]

    async def fetch(self, item: Incoming, dst_dir: Path) -> Path:
        return await self._t.fetch(item, dst_dir)

    async def ack(self, item: Incoming) -> None:
        await self._t.ack(item)


def _item_source(
    transport: Transport, item: Incoming, *, whole_of_delta: bool = False
) -> _ItemSource:
    cls = type(transport)

    class One(_ItemSource):
        scheme = cls.scheme
        discard_strangers = cls.discard_strangers
        set_aside_damaged = cls.set_aside_damaged

    one = One(transport, item)
    # True: a delta that does not apply is not replaced by the whole session fetched from
    # its sender (the sender is waiting for our answer and sends it whole on a 409).
    one.whole_of_delta = whole_of_delta
    return one


async def serve_sync(
    settings: Settings,
    identity: Identity,
    *,
    name: str,
    host: str | None,
    port: int,
    mdns: bool,
    options: SyncOptions,
    log: Log,
    stop: asyncio.Event,
) -> None:
    """The peer daemon with sync: serve() and the loops until `stop`."""
    from commuter.peer.server import serve

    daemon = SyncDaemon(settings, identity, options, log=log)
    serving = asyncio.Event()

    def server_log(message: str) -> None:
        log(message)
        if message.startswith("serving as "):
            serving.set()

    server = asyncio.create_task(
        serve(
            settings,
            identity,
            name=name,
            host=host,
            port=port,
            mdns=mdns,
            on_received=daemon.on_received,
            on_upload=daemon.on_upload,
            log=server_log,
            stop=stop,
        )
    )
    await _first_done(server, serving)
    if server.done():  # it could not listen (another daemon has the port?): touch nothing
        daemon.state.close()
        await server
        return
    log(f"sync: quiet {options.quiet:g} s, state in {daemon.state.path}")
    import signal

    with contextlib.suppress(NotImplementedError, AttributeError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, daemon.sync_now)
    loops = asyncio.create_task(daemon.run_loops(stop))
    done, _ = await asyncio.wait({server, loops}, return_when=asyncio.FIRST_COMPLETED)
    if server in done and server.exception() is not None:
        stop.set()
        await loops
        exc = server.exception()
        assert exc is not None
        raise exc
    stop.set()
    await asyncio.gather(server, loops)


__all__ = ["DEFAULT_QUIET", "SyncDaemon", "SyncOptions", "backoff", "serve_sync"]
