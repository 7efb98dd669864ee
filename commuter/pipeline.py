"""push and pull over any transport: seal, pick a transport, send; fetch, open, import, ack."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from commuter.errors import (
    BundleError,
    CommuterError,
    ConfigError,
    PeerUnreachable,
    RelayError,
    TransportError,
)
from commuter.transports import AUTO_ORDER, Incoming, Receipt, Transport, TransportContext, create
from commuter.transports.state import PullState

if TYPE_CHECKING:
    from commuter.model import ImportOptions, ImportResult
    from commuter.peer.peers import Peer

Factory = Callable[[str, TransportContext], Transport]
Warn = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Pushed:
    """A push: the receipt, and why earlier transports were passed over (auto mode)."""

    receipt: Receipt
    sealed: bool
    skipped: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Pulled:
    """One pending item: imported (result) or skipped (error), and who sent it."""

    item: Incoming
    origin: str
    result: ImportResult | None = None
    error: str | None = None
    retry: bool = True  # with an error: left in place for the next pull


def _unreachable(name: str, reason: str) -> CommuterError:
    if name == "lan":
        return PeerUnreachable(reason)
    if name == "relay":
        return RelayError(reason)
    if name == "folder":
        return ConfigError(reason)
    return TransportError(f"{name}: {reason}")


async def push_file(
    ctx: TransportContext, bundle: Path, peers: Sequence[Peer], via: str = "auto", *,
    named: bool = False, factory: Factory = create,
) -> Pushed:
    """Seal `bundle` to `peers` (plain if none) and send it: `via`, or lan -> relay -> folder."""
    from commuter.peer.seal import seal_file

    if not peers and via not in ("auto", "folder"):
        raise TransportError(f"nothing to send to over {via}: no paired peer (run `commuter pair`)")
    order = (via,) if via != "auto" else (AUTO_ORDER if named else ("folder",))
    if not peers:
        order = ("folder",)
    sealed = bundle
    staging = Path(tempfile.mkdtemp(prefix="push-", dir=_staging(ctx)))
    try:
        if peers:
            sealed = staging / "bundle.sealed"
            await asyncio.to_thread(seal_file, bundle, sealed, ctx.identity,
                                    [p.public_key for p in peers])
        skipped: list[str] = []
        for name in order:
            async with factory(name, ctx) as transport:
                reason = await transport.reachable(peers[0] if named else None)
                if reason is not None:
                    if len(order) == 1:
                        raise _unreachable(name, reason)
                    skipped.append(f"{name}: {reason}")
                    continue
                try:
                    receipt = await transport.send(sealed, peers)
                except CommuterError as exc:
                    if len(order) == 1:
                        raise
                    skipped.append(f"{name}: {exc}")
                    continue
                return Pushed(receipt, bool(peers), tuple(skipped))
        who = peers[0].name if named else "the transfer dir"
        raise TransportError(f"cannot push to {who}: " + "; ".join(skipped))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


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
    ctx: TransportContext, options: ImportOptions, via: str = "auto", *,
    warn: Warn, factory: Factory = create,
) -> list[Pulled]:
    """Import every bundle pending for this machine once; ack each only after its import."""
    done: list[Pulled] = []
    for name in pull_order(ctx, via):
        async with factory(name, ctx) as transport:
            try:
                items = await transport.pending()
            except CommuterError as exc:
                if via != "auto":
                    raise
                warn(f"{name}: {exc}")
                continue
            finally:
                _flush(transport, warn)
            for item in items:
                pulled = await _pull_one(ctx, transport, item, options, warn)
                _flush(transport, warn)  # what fetch or ack had to say about this item
                if pulled is None:
                    continue
                if pulled.error is not None:
                    later = " (left in place; will retry)" if pulled.retry else ""
                    warn(f"skipping {item.label}: {pulled.error}{later}")
                done.append(pulled)
    if not options.dry_run:
        from commuter.backends import arrange_for_continue

        arrange_for_continue(ctx.settings, [p.result for p in done if p.result is not None])
    return done


def _flush(transport: Transport, warn: Warn) -> None:
    for message in transport.warnings:
        warn(message)
    transport.warnings.clear()


async def _pull_one(
    ctx: TransportContext, transport: Transport, item: Incoming, options: ImportOptions,
    warn: Warn,
) -> Pulled | None:
    from commuter import core
    from commuter.peer.seal import open_file

    if transport.discard_strangers and item.sender and not _paired(ctx, item.sender):
        if options.dry_run:
            warn(f"{item.label}: from unpaired device {item.sender}; a pull would delete it")
        else:
            await _ack(transport, item, warn)
            warn(f"{item.label}: deleted, from unpaired device {item.sender} "
                 "(pair with it first, then have it push again)")
        return None
    state = PullState.load(ctx.settings)
    if state.done(item.digest):
        if not options.dry_run:
            await _ack(transport, item, warn)  # imported before, the ack was lost: finish it
        return None
    tmp = Path(tempfile.mkdtemp(prefix="pull-", dir=_staging(ctx)))
    origin = f"{item.label} (plain bundle, sender not verified)"
    verified = False
    try:
        fetched = await transport.fetch(item, tmp)
        plain = fetched
        if item.sealed:
            plain = tmp / "opened.commuter"
            try:
                sender = await asyncio.to_thread(open_file, fetched, plain, ctx.identity,
                                                 is_trusted=ctx.peers.is_trusted)
            except BundleError as exc:
                if not transport.set_aside_damaged or options.dry_run:
                    raise
                kept = _set_aside(ctx, fetched, item)
                await _ack(transport, item, warn)
                return Pulled(item, origin, retry=False,
                              error=f"{exc}; moved to {kept} and not retried")
            peer = ctx.peers.by_key(sender)
            origin = f"{peer.name} ({peer.device_id})" if peer else "an unknown device"
            verified = peer is not None
        opts = dataclasses.replace(options, origin=origin, sender_verified=verified)
        result = await asyncio.to_thread(core.import_file, ctx.settings, plain, opts)
    except CommuterError as exc:
        return Pulled(item, origin, error=str(exc))
    except OSError as exc:
        return Pulled(item, origin, error=exc.strerror or str(exc))
    except Exception as exc:  # a bug (a backend's, a plug-in's): this item only, not the pull
        return Pulled(item, origin, error=f"unexpected {type(exc).__name__}: {exc} "
                                          "(a bug in commuter or a plug-in; please report it)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not options.dry_run:
        state.mark(item.digest, item.label)
        await _ack(transport, item, warn)
    return Pulled(item, origin, result)


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


async def _ack(transport: Transport, item: Incoming, warn: Warn) -> None:
    try:
        await transport.ack(item)
    except CommuterError as exc:
        # Imported and recorded: the next pull skips it and retries the ack.
        warn(f"{item.label}: imported, but removing it from {transport.scheme} failed ({exc})")
