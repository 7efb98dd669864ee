"""The application's two flows. push: export, seal, pick a transport, send. receive: every way a
bundle arrives (pull over folder/relay/LAN inbox, `receive`, `serve --auto-import`,
`pull --from`, ssh `from`) is a Source whose items go through one path: skip what was imported
before, fetch, open the seal (a damaged one set aside where it can never heal), import, record
the digest, ack; then the backends order what arrived for their `--continue` pick-up."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, ClassVar, Protocol

from commuter import progress
from commuter.errors import (
    BundleError,
    CommuterError,
    ConfigError,
    DeltaBaseMismatch,
    NotPaired,
    PeerUnreachable,
    RelayError,
    RelayUnreachable,
    TransportError,
)
from commuter.fsutil import sha256_file
from commuter.model import SessionRef
from commuter.transports import AUTO_ORDER, Incoming, Receipt, Transport, TransportContext, create
from commuter.transports.state import PullState

if TYPE_CHECKING:
    from commuter.core import Exported
    from commuter.model import ImportOptions, ImportResult
    from commuter.peer.identity import Identity
    from commuter.peer.inbox import Upload
    from commuter.peer.peers import Peer
    from commuter.settings import Settings

Factory = Callable[[str, TransportContext], Transport]
SealFile = Callable[[Path, Path, "Identity", Sequence[bytes]], None]
Warn = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Pushed:
    """A push: the receipt, and why earlier transports were passed over (auto mode).

    From `push_session` also: the session, whether what went was a delta, whether a delta was
    refused and the whole session sent after it, and the device ids of the peers whose import
    was confirmed (their acknowledged state is now the one sent)."""

    receipt: Receipt
    sealed: bool
    skipped: tuple[str, ...] = ()
    session_id: str = ""
    agent: str = ""
    delta: bool = False
    fell_back: bool = False
    confirmed: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Pulled:
    """One pending item: imported (result) or skipped (error), and who sent it."""

    item: Incoming
    origin: str
    result: ImportResult | None = None
    error: str | None = None
    retry: bool = True  # with an error: left in place for the next pull
    exc: CommuterError | None = None  # the error as raised, for one-item commands to re-raise
    deferred: bool = False  # a delta tried again after the pull's other items
    refused: tuple[str, str] | None = None  # (agent, session): the sender refused our delta


class DeltaKept(DeltaBaseMismatch):
    """A delta that does not apply here, left in place: its sender was asked for the whole
    session (sync/nack.py), which supersedes it once it arrives."""


class Source(Protocol):
    """Where received items come from: every Transport is one; so are the one-item sources of
    `pull --from`, ssh `from` and `receive` (a LAN inbox entry)."""

    scheme: ClassVar[str]
    discard_strangers: ClassVar[bool]
    set_aside_damaged: ClassVar[bool]
    warnings: list[str]

    async def pending(self) -> list[Incoming]: ...
    async def fetch(self, item: Incoming, dst_dir: Path) -> Path: ...
    async def ack(self, item: Incoming) -> None: ...


def _unreachable(ctx: TransportContext, name: str, reason: str) -> CommuterError:
    if name == "lan":
        return PeerUnreachable(reason)
    if name == "relay":  # exit 3 (try later) only if there is a relay to try
        return RelayUnreachable(reason) if ctx.config.relay else RelayError(reason)
    if name == "folder":
        return ConfigError(reason)
    return TransportError(f"{name}: {reason}")


async def push_file(
    ctx: TransportContext,
    bundle: Path,
    peers: Sequence[Peer],
    via: str = "auto",
    *,
    named: bool = False,
    factory: Factory = create,
    seal_with: SealFile | None = None,
) -> Pushed:
    """Seal `bundle` to `peers` (plain if none) and send it: `via`, or lan -> relay -> folder.
    Sealed with a short first frame (`label.seal_labelled`), so the peer's `status` labels a
    relay or folder item from one 72 KiB read; `seal_with` seals another way."""
    return await _push(ctx, bundle, peers, via, named, factory, seal_with)


async def push_export(
    ctx: TransportContext,
    export: Export,
    peers: Sequence[Peer],
    via: str = "auto",
    *,
    named: bool = False,
    factory: Factory = create,
    seal_with: SealFile | None = None,
) -> Pushed:
    """`push_file` of a bundle not made yet: to one peer over the LAN it is exported while
    it is sealed and uploaded (no temp bundle; `seal_with` does not apply there); any other
    transport gets it exported to a temp file first (`Export.to_file`)."""
    return await _push(ctx, export, peers, via, named, factory, seal_with)


async def _push(
    ctx: TransportContext,
    source: Path | Export,
    peers: Sequence[Peer],
    via: str,
    named: bool,
    factory: Factory,
    seal_with: SealFile | None,
) -> Pushed:
    from commuter.sync.label import seal_labelled

    seal: SealFile = seal_with or seal_labelled
    if not peers and via not in ("auto", "folder"):
        raise TransportError(f"nothing to send to over {via}: no paired peer (run `commuter pair`)")
    order = (via,) if via != "auto" else (AUTO_ORDER if named else ("folder",))
    if not peers:
        order = ("folder",)
    root = _staging(ctx)
    staging: Path | None = None  # made only for a sealed file: a streamed send needs none
    sealed: Path | None = None
    export = source if isinstance(source, Export) else None

    async def sealed_file() -> Path:
        nonlocal staging
        plain = source if isinstance(source, Path) else await Export.to_file(source)
        if not peers:
            return plain
        staging = Path(tempfile.mkdtemp(prefix="push-", dir=root))
        out = staging / "bundle.sealed"
        await asyncio.to_thread(seal, plain, out, ctx.identity, [p.public_key for p in peers])
        return out

    try:
        skipped: list[str] = []
        for name in order:
            async with factory(name, ctx) as transport:
                reason = await transport.reachable(peers[0] if named else None)
                if reason is not None:
                    if len(order) == 1:
                        raise _unreachable(ctx, name, reason)
                    skipped.append(f"{name}: {reason}")
                    continue
                try:
                    streams = None if export is None else _streams(transport, export, peers)
                    if streams is not None:
                        with progress.step(f"{name} send", export.size if export else None):
                            receipt = await streams
                    else:
                        if sealed is None:
                            sealed = await sealed_file()
                        with progress.step(f"{name} send", progress.size_of(sealed)):
                            receipt = await transport.send(sealed, peers)
                except DeltaBaseMismatch:
                    raise  # the peer answered: push_session sends the whole session instead
                except CommuterError as exc:
                    if len(order) == 1:
                        raise
                    skipped.append(f"{name}: {exc}")
                    continue
                return Pushed(receipt, bool(peers), tuple(skipped))
        who = peers[0].name if named else "the transfer dir"
        raise TransportError(f"cannot push to {who}: " + "; ".join(skipped))
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


def _streams(
    transport: Transport, export: Export, peers: Sequence[Peer]
) -> Awaitable[Receipt] | None:
    """The streamed LAN send of `export`, where the whole way streams: to one peer, over
    the LAN transport; else None (a file is made and sent)."""
    if len(peers) != 1 or transport.scheme != "lan":
        return None
    from commuter.transports.lan import LanTransport

    if not isinstance(transport, LanTransport):
        return None
    return transport.send_export(export.write, peers[0])


class Export:
    """A session's bundle for one delivery, made as it is sent: written into a streamed
    upload (`write`, on a thread) or, for a transport that needs a file, into a temp file
    (`to_file`, kept for every transport tried until `close`). `result` is what the export
    returned (None until one finished)."""

    def __init__(
        self, ctx: TransportContext, ref: SessionRef, base: dict[str, tuple[int, str]] | None
    ) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.ref = ref
        self.base = base
        self.result: Exported | None = None
        self._path: Path | None = None

    def write(self, fh: BinaryIO) -> Exported:
        """Export into `fh` (a worker thread: `core.export_session` blocks)."""
        from commuter import core

        self.result = core.export_session(self.settings, fh, self.ref, base=self.base)
        return self.result

    async def to_file(self) -> Path:
        """The plain bundle as a temp file (exported on the first call)."""
        if self._path is None:
            staging = Path(tempfile.mkdtemp(prefix="push-", dir=_staging(self.ctx)))
            path = staging / "bundle.commuter"
            try:
                self.result = await asyncio.to_thread(
                    _export, self.settings, self.ref, path, self.base
                )
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            self._path = path
        return self._path

    def close(self) -> None:
        """Delete the temp file, if one was made."""
        if self._path is not None:
            shutil.rmtree(self._path.parent, ignore_errors=True)
            self._path = None

    @property
    def size(self) -> int | None:
        """The session's bytes, a progress bar's total for a streamed send (the bundle's
        writer counts each source chunk it reads; the bundle's own size is known only at
        its end)."""
        if self.ref.size:
            return self.ref.size
        return progress.size_of(self.ref.path) if self.ref.path is not None else None

    @property
    def delta(self) -> bool:
        """Whether what went is a delta (before an export finished: whether one was asked)."""
        return self.result.delta if self.result is not None else self.base is not None


async def push_session(
    ctx: TransportContext,
    session: SessionRef | str | None,
    peers: Sequence[Peer],
    via: str = "auto",
    *,
    named: bool = False,
    factory: Factory = create,
    agent: str | None = None,
    cwd: Path | None = None,
    seal_with: SealFile | None = None,
) -> Pushed:
    """Export a session and send it to `peers` (see `push_file` for `via`, `named`,
    `seal_with`; to one peer over the LAN the export streams into the upload, `push_export`).

    `session`: a SessionRef, an id or unique prefix, or None for the newest of `cwd` (of
    `agent`'s, if given). When every peer holds the same earlier state of it (acks.py) and
    that state still prefixes it, only what they lack goes (a delta, bundle/delta.py); a peer
    that refuses it (DeltaBaseMismatch: the LAN answers 409) gets the whole session at once.
    What was sent is recorded as held by each peer that answered (LAN) or, optimistically,
    by every recipient (relay, folder: see `_holders`)."""

    async def deliver(export: Export) -> Pushed:
        return await push_export(
            ctx, export, peers, via, named=named, factory=factory, seal_with=seal_with
        )

    return await send_session(ctx, session, peers, deliver, agent=agent, cwd=cwd)


Deliver = Callable[[Export], Awaitable[Pushed]]


async def send_session(
    ctx: TransportContext,
    session: SessionRef | str | None,
    peers: Sequence[Peer],
    deliver: Deliver,
    *,
    agent: str | None = None,
    cwd: Path | None = None,
) -> Pushed:
    """`push_session` with the sending step given: `deliver(export)` makes the bundle (as it
    sends it, `Export.write`, or as a file first, `Export.to_file`), seals and sends it, and
    returns a Pushed whose receipt has each peer's status (`send` streams it to one peer)."""
    from commuter import acks, core

    settings = ctx.settings
    if isinstance(session, SessionRef):
        ref = session
    else:
        ref = await asyncio.to_thread(core.find_session, settings, session, cwd, agent)
    export = Export(ctx, ref, _common_base(ctx, ref, peers))
    fell_back = False
    try:
        pushed = await deliver(export)
    except DeltaBaseMismatch:
        if not export.delta:
            raise
        for peer in peers:
            acks.forget_ack(settings.state_dir, peer.device_id, ref.backend, ref.session_id)
        export.close()
        export = Export(ctx, ref, None)
        pushed = await deliver(export)
        fell_back = True
    finally:
        export.close()
    exported = export.result
    if exported is None:
        raise BundleError(f"the send of {ref.session_id} ended without its export")
    confirmed = _holders(pushed, peers)
    if exported.transcript:
        for device_id in confirmed:
            acks.record_ack(
                settings.state_dir,
                device_id,
                ref.backend,
                ref.session_id,
                exported.state,
                exported.transcript,
            )
    return dataclasses.replace(
        pushed,
        session_id=ref.session_id,
        agent=ref.backend,
        delta=exported.delta,
        fell_back=fell_back,
        confirmed=confirmed,
    )


def _holders(pushed: Pushed, peers: Sequence[Peer]) -> tuple[str, ...]:
    """The peers that now hold what was sent: on the LAN each one that answered (its daemon
    stored it in its inbox or imported it); through relay and folder, optimistically, every
    recipient: a receiver that cannot apply a later delta on it drops that delta, and the
    sender's next send is whole once it hears of it (a LAN 409, or a session of that peer's
    imported here, which forgets the ack)."""
    statuses = pushed.receipt.statuses
    if not statuses:
        return tuple(p.device_id for p in peers) if pushed.sealed else ()
    return tuple(p.device_id for p, s in zip(peers, statuses, strict=False) if s)


def _export(
    settings: Settings, ref: SessionRef, path: Path, base: dict[str, tuple[int, str]] | None
) -> Exported:
    from commuter import core

    with path.open("wb") as fh:
        return core.export_session(settings, fh, ref, base=base)


def _common_base(
    ctx: TransportContext, ref: SessionRef, peers: Sequence[Peer]
) -> dict[str, tuple[int, str]] | None:
    """The state every peer acknowledged of `ref`, if they all hold the same one."""
    from commuter import acks

    if not peers:
        return None
    states = [
        acks.acked(ctx.settings.state_dir, p.device_id, ref.backend, ref.session_id) for p in peers
    ]
    first = states[0]
    if first is None or any(s is None or s.members != first.members for s in states):
        return None
    return first.members


def _staging(ctx: TransportContext) -> Path:
    ctx.settings.staging_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return ctx.settings.staging_dir


def pull_order(ctx: TransportContext, via: str) -> tuple[str, ...]:
    """Which transports `pull` reads: the one asked for, or every one configured here."""
    if via != "auto":
        return (via,)
    order = ["lan"]
    if ctx.config.relay:
        order.append("relay")
    if ctx.config.transfer_dir is not None:
        order.append("folder")
    return tuple(order)


async def pull_all(
    ctx: TransportContext,
    options: ImportOptions,
    via: str = "auto",
    *,
    warn: Warn,
    factory: Factory = create,
) -> list[Pulled]:
    """Import every bundle pending for this machine once; ack each only after its import."""
    done: list[Pulled] = []
    for name in pull_order(ctx, via):
        async with factory(name, ctx) as transport:
            try:
                done += await _drain(ctx, transport, options, warn)
            except CommuterError as exc:
                if via != "auto":
                    raise
                warn(f"{name}: {exc}")
    _arrange(ctx, options, done)
    return done


async def receive_one(
    ctx: TransportContext, source: Source, options: ImportOptions, *, warn: Warn
) -> Pulled | None:
    """The one item a one-item source offers, through the same path as `pull_all`; its
    error raised again (one line at the CLI). None: nothing to do (imported before)."""
    done = await _drain(ctx, source, options, warn, quiet=True)
    _arrange(ctx, options, done)
    if done and done[0].error is not None:
        raise done[0].exc or TransportError(done[0].error)
    return done[0] if done else None


async def _drain(
    ctx: TransportContext,
    source: Source,
    options: ImportOptions,
    warn: Warn,
    *,
    quiet: bool = False,
) -> list[Pulled]:
    try:
        items = await source.pending()
    finally:
        _flush(source, warn)
    done: list[Pulled] = []
    # A delta whose base is another item of this same pull (drops are not always listed in
    # the order they were made) waits for the others; once a round takes nothing, what is
    # left is refused as it stands. At most len(items) rounds.
    todo, last = items, False
    while todo:
        deferred: list[Incoming] = []
        for item in todo:
            pulled = await _pull_one(ctx, source, item, options, warn, defer_delta=not last)
            _flush(source, warn)  # what fetch or ack had to say about this item
            if pulled is None:
                continue
            if pulled.deferred:
                deferred.append(item)
                continue
            if pulled.error is not None and not quiet:
                later = " (left in place; will retry)" if pulled.retry else ""
                warn(f"skipping {item.label}: {pulled.error}{later}")
            done.append(pulled)
        last = len(deferred) == len(todo)
        todo = deferred
    return done


def _arrange(ctx: TransportContext, options: ImportOptions, done: Sequence[Pulled]) -> None:
    if not options.dry_run:
        from commuter.backends import arrange_for_continue

        arrange_for_continue(ctx.settings, [p.result for p in done if p.result is not None])


def _flush(transport: Source, warn: Warn) -> None:
    for message in transport.warnings:
        warn(message)
    transport.warnings.clear()


async def _pull_one(
    ctx: TransportContext,
    source: Source,
    item: Incoming,
    options: ImportOptions,
    warn: Warn,
    *,
    defer_delta: bool = False,
) -> Pulled | None:
    from commuter import core
    from commuter.peer.seal import open_file

    if source.discard_strangers and item.sender and not _paired(ctx, item.sender):
        if options.dry_run:
            warn(f"{item.label}: from unpaired device {item.sender}; a pull would delete it")
        else:
            await _ack(source, item, warn)
            warn(
                f"{item.label}: deleted, from unpaired device {item.sender} "
                "(pair with it first, then have it push again)"
            )
        return None
    state = PullState.load(ctx.settings)
    if item.digest and state.done(item.digest):
        if not options.dry_run:
            await _ack(source, item, warn)  # imported before, the ack was lost: finish it
        return None
    tmp = Path(tempfile.mkdtemp(prefix="pull-", dir=_staging(ctx)))
    # A source whose channel authenticates the other end (the user's own ssh) names it.
    vouched = getattr(source, "vouched_origin", None)
    origin = vouched or f"{item.label} (plain bundle, sender not verified)"
    verified = vouched is not None
    device_id: str | None = None  # the paired peer whose seal was checked
    plain: Path | None = None
    digest = item.digest
    try:
        with progress.step(f"fetch {item.label}", item.size or None):
            fetched = await source.fetch(item, tmp)
        if not digest:  # known only once fetched (pull --from, ssh from)
            digest = await asyncio.to_thread(sha256_file, fetched)
        plain = fetched
        opened_by: Peer | None = getattr(source, "opened_by", None)
        if opened_by is not None:  # the seal was opened upstream, frame by frame (Arriving)
            origin = f"{opened_by.name} ({opened_by.device_id})"
            verified = True
            device_id = opened_by.device_id
        elif item.sealed:
            plain = tmp / "opened.commuter"
            try:
                sender = await asyncio.to_thread(
                    open_file, fetched, plain, ctx.identity, is_trusted=ctx.peers.is_trusted
                )
            except BundleError as exc:
                if not source.set_aside_damaged or options.dry_run:
                    raise
                kept = _set_aside(ctx, fetched, item)
                await _ack(source, item, warn)
                return Pulled(
                    item,
                    origin,
                    retry=False,
                    exc=exc,
                    error=f"{exc}; moved to {kept} and not retried",
                )
            expected: bytes | None = getattr(source, "expected_sender", None)
            if expected is not None and sender != expected:  # pull --from: that peer's own
                raise NotPaired(f"the bundle from {item.label} is sealed by another key")
            peer = ctx.peers.by_key(sender)
            origin = f"{peer.name} ({peer.device_id})" if peer else "an unknown device"
            verified = peer is not None
            device_id = peer.device_id if peer else None
            refused = await _refusal(ctx, plain, device_id, options)
            if refused is not None:
                if options.dry_run:
                    return Pulled(item, origin, refused=refused)
                state.mark(digest, item.label)
                await _ack(source, item, warn)
                warn(
                    f"{origin} could not apply an increment of {refused[1]} (its base did "
                    "not match there): the next send of it is whole"
                )
                return Pulled(item, origin, refused=refused)
        opts = dataclasses.replace(options, origin=origin, sender_verified=verified)
        result = await asyncio.to_thread(
            core.import_file, ctx.settings, plain, opts, sender=device_id
        )
    except DeltaBaseMismatch as exc:
        if defer_delta:  # another item of this pull may hold its base: try it after them
            return Pulled(item, origin, error=str(exc), exc=exc, deferred=True)
        # It never applies here: the whole session is fetched from its sender's daemon when
        # it answers on the LAN; else the delta stays and the sender is asked to send the
        # session whole (a refusal the way the delta came), which supersedes it.
        if options.dry_run:
            return Pulled(item, origin, retry=False, exc=exc, error=str(exc))
        asked = not getattr(source, "whole_of_delta", False)  # else its sender is waiting
        if device_id is None or plain is None or not asked:
            await _ack(source, item, warn)
            return Pulled(item, origin, retry=False, exc=exc, error=f"{exc}; dropped it")
        whole = await _whole_instead(ctx, device_id, plain, options, warn)
        if whole is not None and whole.result is not None:
            await _ack(source, item, warn)
            warn(f"{item.label}: {exc}; took the whole session from {whole.origin} instead")
            return dataclasses.replace(whole, item=item)
        waits = await _keep_delta(ctx, source, device_id, plain, digest, warn)
        if waits is None:
            await _ack(source, item, warn)
            return Pulled(
                item,
                origin,
                retry=False,
                exc=exc,
                error=f"{exc}; older than what was imported from its sender since: dropped it",
            )
        return Pulled(item, origin, error=f"{exc}; {waits}", exc=DeltaKept(f"{exc}; {waits}"))
    except CommuterError as exc:
        return Pulled(item, origin, error=str(exc), exc=exc)
    except OSError as exc:
        return Pulled(
            item,
            origin,
            error=exc.strerror or str(exc),
            exc=TransportError(f"{item.label}: {exc.strerror or exc}"),
        )
    except Exception as exc:  # a bug (a backend's, a plug-in's): this item only, not the pull
        return Pulled(
            item,
            origin,
            error=f"unexpected {type(exc).__name__}: {exc} "
            "(a bug in commuter or a plug-in; please report it)",
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not options.dry_run:
        state.mark(digest, item.label)
        await _ack(source, item, warn)
        if device_id is not None:
            from commuter import acks

            sid = result.original_session_id or result.session_id
            # What this session's refused deltas from that peer led to is here now.
            acks.answered(ctx.settings.state_dir, device_id, result.backend, sid)
            if result.action != "unchanged":
                # The peer went on with this session: what we sent it before is no base for
                # a delta any more (it holds its own bytes now); the next send to it is whole.
                acks.forget_ack(ctx.settings.state_dir, device_id, result.backend, sid)
    return Pulled(item, origin, result)


async def _refusal(
    ctx: TransportContext, plain: Path, device_id: str | None, options: ImportOptions
) -> tuple[str, str] | None:
    """(agent, session) if the opened item is a paired peer's refusal of a delta of ours
    (sync/nack.py); what we thought it holds is forgotten (not in a dry run)."""
    from commuter import acks
    from commuter.sync import nack

    if device_id is None:
        return None
    refused = await asyncio.to_thread(nack.read, plain)
    if refused is not None and not options.dry_run:
        acks.forget_ack(ctx.settings.state_dir, device_id, *refused)
    return refused


async def _keep_delta(
    ctx: TransportContext, source: Source, device_id: str, delta: Path, digest: str, warn: Warn
) -> str | None:
    """A delta from `device_id` that does not apply here and whose sender's daemon did not
    answer on the LAN: kept, and the sender asked (at most every acks.ASK_AGAIN seconds) to
    send the session whole, through the transport the delta came by. Returns why it waits;
    None if it is stale (an import of that session from that sender succeeded since)."""
    from commuter import acks, core
    from commuter.sync import nack

    peer = next((p for p in ctx.peers.all() if p.device_id == device_id), None)
    try:
        manifest = await asyncio.to_thread(core.read_manifest, delta)
    except (CommuterError, OSError):
        return "kept"
    state_dir = ctx.settings.state_dir
    agent, sid = manifest.backend, manifest.session_id
    todo = await asyncio.to_thread(acks.refuse_delta, state_dir, device_id, agent, sid, digest)
    name = peer.name if peer else device_id
    if todo == "stale":
        return None
    waits = f"asked {name} for the whole session; kept until it arrives"
    if todo == "wait" or peer is None:
        return waits
    via = source.scheme if source.scheme in ("relay", "folder") else "auto"
    staging = Path(tempfile.mkdtemp(prefix="nack-", dir=_staging(ctx)))
    try:
        path = staging / "refusal"
        await asyncio.to_thread(nack.write, path, agent, sid)
        await push_file(ctx, path, [peer], via, named=True)
    except CommuterError as exc:
        warn(f"could not ask {name} for the whole session {sid}: {exc}")
        return f"waiting for the whole session from {name} (asking it failed: {exc})"
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    await asyncio.to_thread(acks.asked_whole, state_dir, device_id, agent, sid)
    return waits


async def _whole_instead(
    ctx: TransportContext, device_id: str, delta: Path, options: ImportOptions, warn: Warn
) -> Pulled | None:
    """The whole session a refused delta was of, fetched from its sender's daemon over the
    LAN and imported through the same path; None if it does not answer (or is no peer)."""
    from commuter import core
    from commuter.transports.lan import LanTransport

    peer = next((p for p in ctx.peers.all() if p.device_id == device_id), None)
    if peer is None:
        return None
    try:
        session_id = (await asyncio.to_thread(core.read_manifest, delta)).session_id
        address = await LanTransport(ctx).locate(peer)
    except (CommuterError, OSError):
        return None
    if address is None:
        return None
    source = WholeSession(ctx, peer, address, session_id)
    [item] = await source.pending()
    return await _pull_one(ctx, source, item, options, warn)


def _set_aside(ctx: TransportContext, fetched: Path, item: Incoming) -> Path:
    """Keep a damaged item's bytes under rejected_dir (0700): nothing is lost, nothing nags."""
    folder = ctx.settings.rejected_dir
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in item.label)
    dest = folder / f"{name}.sealed"
    shutil.move(fetched, dest)
    return dest


def _paired(ctx: TransportContext, device_id: str) -> bool:
    return any(peer.device_id == device_id for peer in ctx.peers.all())


async def _ack(transport: Source, item: Incoming, warn: Warn) -> None:
    try:
        await transport.ack(item)
    except CommuterError as exc:
        # Imported and recorded: the next pull skips it and retries the ack.
        warn(f"{item.label}: imported, but removing it from {transport.scheme} failed ({exc})")


# --- one-item sources: the other ways a bundle arrives --------------------------------------


class _OneItem:
    """Base of the one-item sources: no strangers to discard, nothing to set aside."""

    scheme: ClassVar[str]
    discard_strangers: ClassVar[bool] = False
    set_aside_damaged: ClassVar[bool] = False

    def __init__(self) -> None:
        self.warnings: list[str] = []

    async def ack(self, item: Incoming) -> None:
        return None


class PeerFetch(_OneItem):
    """`pull --from PEER`: the peer's newest session for `cwd`'s project, downloaded sealed;
    only the peer's own key may have sealed it."""

    scheme: ClassVar[str] = "lan"

    def __init__(self, ctx: TransportContext, peer: Peer, cwd: Path, address: str | None) -> None:
        super().__init__()
        self.ctx, self.peer, self.cwd, self.address = ctx, peer, cwd, address
        self.expected_sender = peer.public_key
        self._answered = ""

    async def pending(self) -> list[Incoming]:
        from commuter.peer.client import newest_session

        best, self._answered = await newest_session(
            self.ctx.settings, self.ctx.identity, self.peer, self.cwd, address=self.address
        )
        return [
            Incoming(
                self.scheme,
                best.id,
                f"{self.peer.name}:{best.id[:8]}",
                best.size,
                "",
                True,
                self.peer.device_id,
            )
        ]

    async def fetch(self, item: Incoming, dst_dir: Path) -> Path:
        from commuter.peer.client import fetch_one

        return await fetch_one(
            self.ctx.settings,
            self.ctx.identity,
            self.peer,
            self._answered,
            item.id,
            dst_dir / "bundle.sealed",
        )


class WholeSession(_OneItem):
    """One session of a paired peer, downloaded whole from its daemon (after a delta of it
    could not apply here); only the peer's own key may have sealed it."""

    scheme: ClassVar[str] = "lan"
    whole_of_delta: ClassVar[bool] = True  # never asks again for what it brings

    def __init__(self, ctx: TransportContext, peer: Peer, address: str, session_id: str) -> None:
        super().__init__()
        self.ctx, self.peer, self.address, self.session_id = ctx, peer, address, session_id
        self.expected_sender = peer.public_key

    async def pending(self) -> list[Incoming]:
        label = f"{self.peer.name}:{self.session_id[:8]}"
        return [Incoming(self.scheme, self.session_id, label, 0, "", True, self.peer.device_id)]

    async def fetch(self, item: Incoming, dst_dir: Path) -> Path:
        from commuter.peer.client import fetch_one

        return await fetch_one(
            self.ctx.settings,
            self.ctx.identity,
            self.peer,
            self.address,
            self.session_id,
            dst_dir / "bundle.sealed",
        )


class SshFetch(_OneItem):
    """ssh `from HOST`: HOST's newest session of `remote_dir`, a plain bundle carried inside
    the user's own ssh (the host key checked by ssh): vouched for like a paired peer's."""

    scheme: ClassVar[str] = "ssh"

    def __init__(
        self, ctx: TransportContext, host: str, remote_dir: str, remote_command: str | None
    ) -> None:
        super().__init__()
        self.ctx, self.host, self.remote_dir, self.remote_command = (
            ctx,
            host,
            remote_dir,
            remote_command,
        )
        self.vouched_origin = f"{host} (over ssh)"

    async def pending(self) -> list[Incoming]:
        return [Incoming(self.scheme, "latest", f"ssh:{self.host}", 0, "", False)]

    async def fetch(self, item: Incoming, dst_dir: Path) -> Path:
        from commuter import sshhop

        dst = dst_dir / "bundle.commuter"
        await asyncio.to_thread(
            sshhop.fetch_from,
            self.ctx.settings,
            self.host,
            self.remote_dir,
            dst,
            remote_command=self.remote_command,
        )
        return dst


class Arriving(_OneItem):
    """`serve --auto-import` and `serve --sync`: an upload imported while it arrives. The
    server authenticates each frame as it comes and writes the opened bytes to a growing
    file (growing.py), which this reads as it grows: the import sees the end of the bundle
    only once the seal's last frame checked out. Whole bundles only: the server keeps a
    refusal or a delta for the inbox path, and an upload this cannot import goes there too."""

    scheme: ClassVar[str] = "lan"

    def __init__(self, upload: Upload) -> None:
        super().__init__()
        self.upload = upload
        self.opened_by = upload.sender

    async def pending(self) -> list[Incoming]:
        up = self.upload
        return [
            Incoming(
                self.scheme,
                up.id,
                f"inbox:{up.id}",
                up.size,
                up.digest,
                False,
                up.sender.device_id,
            )
        ]

    async def fetch(self, item: Incoming, dst_dir: Path) -> Path:
        return self.upload.plain


class InboxEntry(_OneItem):
    """`receive` and `serve --auto-import`: one entry of the LAN inbox, as `pull` would take it
    (a seal that fails is set aside, the entry removed once imported)."""

    scheme: ClassVar[str] = "lan"
    set_aside_damaged: ClassVar[bool] = True

    def __init__(self, ctx: TransportContext, entry_id: str, *, refetch: bool = True) -> None:
        super().__init__()
        from commuter.transports.lan import LanTransport

        self._lan = LanTransport(ctx)
        self.entry_id = entry_id
        # False while the sender waits for the upload's answer (auto-import): a delta that
        # cannot apply is answered 409 at once and the sender sends it whole itself.
        self.whole_of_delta = not refetch

    async def pending(self) -> list[Incoming]:
        return [i for i in await self._lan.pending() if i.id == self.entry_id]

    async def fetch(self, item: Incoming, dst_dir: Path) -> Path:
        return await self._lan.fetch(item, dst_dir)

    async def ack(self, item: Incoming) -> None:
        await self._lan.ack(item)
