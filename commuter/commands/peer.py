"""Peer commands: id, pair, unpair, peers, serve, send, receive."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import TYPE_CHECKING, Any

import click

from commuter.commands._app import AppContext, agent_option, pass_app, safe_text, stop_on_signals
from commuter.completion import complete_peer, complete_session
from commuter.errors import PairingFailed, PeerError

if TYPE_CHECKING:
    from commuter.model import ImportOptions
    from commuter.peer.identity import Identity
    from commuter.peer.inbox import InboxItem, Upload
    from commuter.peer.peers import Peer
    from commuter.pipeline import Export, Source
    from commuter.settings import Settings
    from commuter.transports import TransportContext


def register(cli: click.Group) -> None:
    """Add the peer commands to the CLI group."""
    for command in (id_cmd, pair_cmd, unpair_cmd, peers_cmd, serve_cmd, send_cmd, receive_cmd):
        cli.add_command(command)


def machine_name(settings: Settings) -> str:
    """This machine's name: `config set name`, else the hostname."""
    from commuter import config

    return config.load(settings).name or settings.hostname


def _identity(settings: Settings) -> Identity:
    from commuter.peer.identity import Identity

    return Identity.load_or_create(settings)


def _own_device_id(settings: Settings) -> str | None:
    """This machine's device id, or None when it has no key yet (none is made for asking)."""
    from commuter.peer.identity import KEY_FILE

    if not (settings.config_dir / KEY_FILE).is_file():
        return None
    return _identity(settings).device_id


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data))
    sys.stdout.flush()


@click.command("id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def id_cmd(app: AppContext, as_json: bool) -> None:
    """This machine's name, device id and key fingerprint."""
    me = _identity(app.settings)
    data = {
        "name": machine_name(app.settings),
        "device_id": me.device_id,
        "fingerprint": me.fingerprint,
    }
    if as_json:
        _echo_json(data)
        return
    click.echo(f"name:        {data['name']}")
    click.echo(f"device id:   {data['device_id']}")
    click.echo(f"fingerprint: {data['fingerprint']}")


@click.command("pair")
@click.argument("code", nargs=-1)
@click.option("--address", help="Join: the inviter's HOST:PORT (skips mDNS).")
@click.option(
    "--timeout",
    type=click.FloatRange(1, 600),
    default=300.0,
    show_default=True,
    help="Invite: seconds to wait for the other machine (at most 600).",
)
@click.option("--json", "as_json", is_flag=True, help="Invite: first stdout line is JSON.")
@click.option("--host", help="Invite: listen on this address only (default: all).")
@click.option("--port", type=click.IntRange(0, 65535), default=0, help="Invite: listen port.")
@click.option("--no-mdns", is_flag=True, help="Do not use mDNS.")
@pass_app
def pair_cmd(
    app: AppContext,
    code: tuple[str, ...],
    address: str | None,
    timeout: float,
    as_json: bool,
    host: str | None,
    port: int,
    no_mdns: bool,
) -> None:
    """Pair with another machine: print a one-time code, or join with CODE (its words may
    also be typed apart: 7 orbit lemon piano)."""
    if not code:
        peer = asyncio.run(_invite(app.settings, timeout, as_json, host, port, not no_mdns))
    else:
        peer = asyncio.run(_join(app.settings, " ".join(code), address, not no_mdns))
    if as_json:
        _echo_json(
            {
                "paired": {
                    "name": peer.name,
                    "device_id": peer.device_id,
                    "address": peer.last_address,
                }
            }
        )
    else:
        click.echo(f"paired with {safe_text(peer.name)} ({peer.device_id})")


async def _invite(
    settings: Settings, wait: float, as_json: bool, host: str | None, port: int, mdns: bool
) -> Peer:
    import contextlib

    from commuter.peer import pairing
    from commuter.peer.discovery import advertise_invite, format_address, local_addresses
    from commuter.peer.server import PAIR_LIMITS, Invite, make_pair_app, start_site

    me = _identity(settings)
    name = machine_name(settings)
    code = pairing.make_code()
    invite = Invite(settings, me, name, code, time.time() + wait)
    runner, bound = await start_site(make_pair_app(invite), host or None, port, limits=PAIR_LIMITS)
    try:
        wildcard = not host or host in ("0.0.0.0", "::")
        shown_host = local_addresses(settings)[0] if wildcard or not host else host
        address = format_address(shown_host, bound)
        advert = advertise_invite(settings, name, code.nameplate, bound) if mdns else None
        async with advert or contextlib.nullcontext():
            if as_json:
                _echo_json(
                    {
                        "code": str(code),
                        "address": address,
                        "name": name,
                        "device_id": me.device_id,
                        "expires_in": wait,
                    }
                )
            else:
                click.echo(f"pairing code: {code}")
                run_line = f"on the other machine run:  commuter pair {code}"
                if mdns:
                    click.echo(run_line)
                    click.echo(f"(without mDNS add:  --address {address})")
                else:
                    click.echo(f"{run_line} --address {address}")
                click.echo(f"waiting up to {int(wait)} s ...")
                sys.stdout.flush()
            try:
                return await asyncio.wait_for(asyncio.shield(invite.result), wait)
            except TimeoutError:
                # A handler still running (a joiner that stopped halfway) reports to no one.
                invite.result.cancel()
                what = "a joiner connected but did not finish" if invite.used else "no one joined"
                raise PairingFailed(
                    f"pairing failed: {what} within {int(wait)} s (code expired)"
                ) from None
    finally:
        await runner.cleanup()


async def _join(settings: Settings, text: str, address: str | None, mdns: bool) -> Peer:
    from commuter.peer import client, pairing
    from commuter.peer.discovery import find_invite

    code = pairing.parse_code(text)
    if address is None and mdns:
        address = await find_invite(settings, code.nameplate, settings.mdns_timeout)
    if address is None:
        raise PairingFailed(
            f"no pairing invitation {code.nameplate}-... found on the LAN; pass --address "
            "HOST:PORT as printed by `commuter pair` on the other machine"
        )
    return await client.join(settings, _identity(settings), machine_name(settings), code, address)


@click.command("unpair")
@click.argument("peer", shell_complete=complete_peer)
@pass_app
def unpair_cmd(app: AppContext, peer: str) -> None:
    """Forget a paired machine (on this side)."""
    from commuter.peer.peers import Peers

    peers = Peers.load(app.settings)
    gone = peers.remove(peer)
    peers.save()
    click.echo(f"unpaired {safe_text(gone.name)} ({gone.device_id})")


@click.command("peers")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--no-scan", is_flag=True, help="Do not look for machines on the LAN.")
@pass_app
def peers_cmd(app: AppContext, as_json: bool, no_scan: bool) -> None:
    """Paired machines, and commuter daemons seen on the LAN now."""
    from commuter.peer.discovery import SERVICE, Seen, browse
    from commuter.peer.peers import Peers

    me = _own_device_id(app.settings)
    paired = Peers.load(app.settings).all()
    for p in paired:
        if p.device_id == me:  # paired with itself, or a copied config: not a peer
            click.echo(
                f"note: {safe_text(p.name)} is this machine's own key; "
                f"`commuter unpair {safe_text(p.name)}` removes it",
                err=True,
            )
    paired = [p for p in paired if p.device_id != me]
    seen: list[Seen] = []
    if not no_scan:
        try:
            seen = asyncio.run(browse(app.settings, SERVICE, app.settings.mdns_timeout))
        except OSError as exc:
            click.echo(f"warning: mDNS browse failed ({safe_text(str(exc))})", err=True)
        seen = [s for s in seen if me is None or s.device_id != me]  # this machine's serve
    ids = {p.device_id for p in paired}
    online = {s.device_id: s.address for s in seen}
    if as_json:
        _echo_json(
            {
                "paired": [
                    {
                        "name": p.name,
                        "device_id": p.device_id,
                        "last_address": p.last_address,
                        "paired_at": p.paired_at,
                        "online": online.get(p.device_id),
                    }
                    for p in paired
                ],
                "seen": [
                    {
                        "name": s.name,
                        "device_id": s.device_id,
                        "address": s.address,
                        "paired": s.device_id in ids,
                    }
                    for s in seen
                ],
            }
        )
        return
    click.echo("paired:" if paired else "paired: none (run `commuter pair`)")
    for p in paired:
        where = online.get(p.device_id)
        state = f"online at {where}" if where else f"last seen at {p.last_address or '-'}"
        click.echo(f"  {safe_text(p.name):<16} {p.device_id}  {safe_text(state)}")
    if not no_scan:
        click.echo("on the LAN now:" if seen else "on the LAN now: none seen")
        for s in seen:
            mark = "paired" if s.device_id in ids else "not paired"
            click.echo(
                f"  {safe_text(s.name):<16} {safe_text(s.device_id or '?')}  "
                f"{safe_text(str(s.address))}  ({mark})"
            )


def _import_upload(app: AppContext, upload: Upload) -> bool:
    """Import an upload as it arrives (pipeline.Arriving); False if it has to be stored."""
    from commuter import core
    from commuter.pipeline import Arriving
    from commuter.transports import TransportContext

    ctx = TransportContext.load(app.settings)
    return _receive(ctx, Arriving(upload), core.ImportOptions(interactive=False))


def _import_item(app: AppContext, item: InboxItem, quiet: bool = False) -> None:
    """Import one LAN inbox entry the way `pull` would (pipeline.InboxEntry)."""
    from commuter import core
    from commuter.commands.session import _ask
    from commuter.pipeline import InboxEntry
    from commuter.transports import TransportContext

    interactive = app.interactive and not quiet
    options = core.ImportOptions(interactive=interactive, ask=_ask if interactive else None)
    ctx = TransportContext.load(app.settings)
    entry = InboxEntry(ctx, item.id, refetch=not quiet)  # quiet: the sender awaits a 409
    _receive(ctx, entry, options)  # nothing: imported before, the entry is gone now


def _receive(ctx: TransportContext, source: Source, options: ImportOptions) -> bool:
    """One item of `source` through the receive pipeline, what it imported printed; False if
    nothing was imported (imported before)."""
    from commuter.commands.session import _report
    from commuter.commands.transfer import _warn
    from commuter.pipeline import receive_one

    pulled = asyncio.run(receive_one(ctx, source, options, warn=_warn))
    if pulled is None or pulled.result is None:
        return False
    click.echo(f"from {safe_text(pulled.origin)}:")
    _report(pulled.result)
    return True


@click.command("serve")
@click.option("--host", help="Listen on this address only (default: all interfaces).")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="Listen port.")
@click.option("--no-mdns", is_flag=True, help="Do not advertise on the LAN.")
@click.option("--auto-import", is_flag=True, help="Import bundles as soon as they arrive.")
@click.option(
    "--sync",
    "sync",
    is_flag=True,
    help="Keep every session in step with every paired machine (see docs/sync.md).",
)
@click.option(
    "--quiet",
    "quiet",
    type=click.FloatRange(0, 86400),
    default=None,
    metavar="S",
    help="With --sync: send a session once unchanged for S seconds (default 30).",
)
@pass_app
def serve_cmd(
    app: AppContext,
    host: str | None,
    port: int | None,
    no_mdns: bool,
    auto_import: bool,
    sync: bool,
    quiet: float | None,
) -> None:
    """Run the peer daemon: receive bundles from paired machines, serve sessions to them."""
    from commuter.errors import CommuterError, DeltaBaseMismatch
    from commuter.peer.server import DEFAULT_PORT, serve

    if quiet is not None and not sync:
        raise click.UsageError("--quiet goes with --sync")
    if sync:
        _serve_sync(app, host, DEFAULT_PORT if port is None else port, not no_mdns, quiet)
        return
    on_received = None
    on_upload = None
    if auto_import:

        async def on_upload(upload: Upload) -> str | None:
            imported = await asyncio.to_thread(_import_upload, app, upload)
            return "imported" if imported else None

        async def on_received(item: InboxItem, _peer: Peer) -> str | None:
            try:
                await asyncio.to_thread(_import_item, app, item, True)
            except DeltaBaseMismatch:
                raise  # dropped from the inbox; the sender hears 409 and sends it whole
            except CommuterError as exc:
                click.echo(f"kept {item.id} in the inbox: {safe_text(str(exc))}", err=True)
                return None
            return "imported"

    async def run() -> None:
        # Ctrl-C or SIGTERM: stop serving, withdraw the mDNS record, exit 0.
        stop = stop_on_signals()
        await serve(
            app.settings,
            _identity(app.settings),
            name=machine_name(app.settings),
            host=host,
            port=DEFAULT_PORT if port is None else port,
            mdns=not no_mdns,
            on_received=on_received,
            on_upload=on_upload,
            log=lambda msg: click.echo(safe_text(msg)),
            stop=stop,
        )
        click.echo("stopped")

    asyncio.run(run())


def _serve_sync(
    app: AppContext, host: str | None, port: int, mdns: bool, quiet: float | None
) -> None:
    """`serve --sync`: the daemon plus the sync loops (commuter.sync.daemon)."""
    from commuter.sync.daemon import DEFAULT_QUIET, SyncOptions, serve_sync

    def log(msg: str) -> None:
        click.echo(safe_text(msg))
        sys.stdout.flush()

    async def run() -> None:
        stop = stop_on_signals()
        await serve_sync(
            app.settings,
            _identity(app.settings),
            name=machine_name(app.settings),
            host=host,
            port=port,
            mdns=mdns,
            options=SyncOptions(quiet=DEFAULT_QUIET if quiet is None else quiet),
            log=log,
            stop=stop,
        )
        log("stopped")

    asyncio.run(run())


@click.command("receive")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=None,
    help="Give up after this many seconds (default: wait forever).",
)
@click.option("--host", help="Listen on this address only (default: all interfaces).")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="Listen port.")
@click.option("--no-mdns", is_flag=True, help="Do not advertise on the LAN.")
@pass_app
def receive_cmd(
    app: AppContext, timeout: float | None, host: str | None, port: int | None, no_mdns: bool
) -> None:
    """Wait for one bundle from a paired machine, then import it.

    Progress lines go to stdout; stderr only ever holds the one error line.
    """
    from commuter.peer.server import DEFAULT_PORT, serve

    got: list[InboxItem] = []

    async def run() -> None:
        stop = asyncio.Event()

        async def on_received(item: InboxItem, _peer: Peer) -> str | None:
            got.append(item)
            stop.set()
            return "receiving"

        await serve(
            app.settings,
            _identity(app.settings),
            name=machine_name(app.settings),
            host=host,
            port=DEFAULT_PORT if port is None else port,
            mdns=not no_mdns,
            on_received=on_received,
            log=lambda msg: click.echo(safe_text(msg)),
            stop=stop,
            run_for=timeout,
        )

    asyncio.run(run())
    if not got:
        raise PeerError(f"no bundle arrived within {timeout:g} s")
    _import_item(app, got[0])


@click.command("send")
@click.argument("peer", shell_complete=complete_peer)
@click.argument("session", required=False, shell_complete=complete_session)
@click.option("--latest", is_flag=True, help="The newest session of this project (no picker).")
@click.option("--address", help="The peer's HOST:PORT (skips mDNS).")
@agent_option
@pass_app
def send_cmd(
    app: AppContext,
    peer: str,
    session: str | None,
    latest: bool,
    address: str | None,
    agent: str | None,
) -> None:
    """Send a session straight to a paired machine on the LAN (no SESSION: this project's
    newest; on a terminal, a project with several sessions asks which)."""
    from commuter.commands.session import choose_session
    from commuter.peer import client
    from commuter.peer.peers import Peers
    from commuter.pipeline import Pushed, send_session
    from commuter.transports import Receipt, TransportContext

    if session and latest:
        raise click.UsageError("give a session id or --latest, not both")
    settings = app.settings
    target = Peers.load(settings).get(peer)
    if address is not None:
        client.parse_address(address)
    me = _identity(settings)
    ctx = TransportContext.load(settings)
    session, cwd = choose_session(app, session, latest, agent)

    async def deliver(export: Export) -> Pushed:
        answer, size = await _send(settings, me, target, export, address)
        status = str(answer.get("status", ""))
        receipt = Receipt("lan", str(answer.get("id", "")), (target.name,), "", size, (status,))
        return Pushed(receipt, True)

    # Only what the peer lacks when it confirmed an earlier state (pipeline.send_session),
    # exported while it is sealed and uploaded (no temp bundle).
    pushed = asyncio.run(send_session(ctx, session, [target], deliver, agent=agent, cwd=cwd))
    sid = pushed.session_id
    done = _SEND_RESULT.get(pushed.receipt.statuses[0], "delivered")
    click.echo(f"sent session {sid} to {safe_text(target.name)} ({done})")


# What the peer's answer means for the user (see server.upload's "status").
_SEND_RESULT = {
    "stored": "waiting in its inbox: run `commuter pull` there",
    "imported": "imported there",
    "receiving": "its `commuter receive` is importing it",
}


async def _send(
    settings: Settings, me: Identity, peer: Peer, export: Export, address: str | None
) -> tuple[dict[str, Any], int]:
    """Stream `export` to `peer` (client.send_export): the peer's answer and the plain
    bundle's size. The bar counts the session's bytes as the bundle's writer reads them,
    which goes as fast as the upload takes the bundle."""
    from commuter import progress
    from commuter.peer import client

    sent = 0

    def count(n: int) -> None:
        nonlocal sent
        sent += n

    where = await client.find_addresses(settings, peer, address)
    with progress.step(f"to {peer.name}", export.size):
        answer, _ = await client.send_export(
            settings, me, peer, export.write, where, count, suggest_address=address is None
        )
    return answer, sent
