"""Transfer commands: push (export the cwd's session and send it) and pull (import pending)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

import click

from commuter.commands._app import AppContext, agent_option, pass_app, safe_text
from commuter.commands.session import choose_session, warn_line
from commuter.completion import complete_peer, complete_session
from commuter.errors import ConfigError

if TYPE_CHECKING:
    from commuter.model import ImportOptions
    from commuter.peer.peers import Peer
    from commuter.pipeline import Export, Pushed
    from commuter.transports import TransportContext


def register(cli: click.Group) -> None:
    """Add push and pull to the CLI group."""
    cli.add_command(push_cmd)
    cli.add_command(pull_cmd)


def _warn(message: str) -> None:
    warn_line(message)


VIA_CHOICES = "auto|folder|lan|relay"


def _check_via(via: str) -> None:
    """UnknownTransport (naming `auto` and every transport) unless `via` is auto or one."""
    if via == "auto":
        return
    from commuter.errors import UnknownTransport
    from commuter.transports import names, transport_class

    try:
        transport_class(via)
    except UnknownTransport:
        if via in names():
            raise  # registered but failed to load: its own message says why
        known = ", ".join(("auto", *names()))
        raise UnknownTransport(f"unknown transport {via!r} for --via (known: {known})") from None


@click.command("push")
@click.argument("session", required=False, shell_complete=complete_session)
@click.option(
    "--to", "to", metavar="PEER", help="Send to this paired machine.", shell_complete=complete_peer
)
@click.option(
    "--via",
    default="auto",
    show_default=True,
    metavar=VIA_CHOICES,
    help="Transport: auto tries lan, then relay, then folder; or only folder, lan or relay.",
)
@click.option("--plain", is_flag=True, help="Unencrypted drop into the transfer dir.")
@click.option("--latest", is_flag=True, help="The newest session of this project (no picker).")
@agent_option
@pass_app
def push_cmd(
    app: AppContext,
    session: str | None,
    to: str | None,
    via: str,
    plain: bool,
    latest: bool,
    agent: str | None,
) -> None:
    """Export this directory's newest session (or SESSION) and send it; on a terminal, a
    project with several sessions asks which (--latest: the newest)."""
    from commuter.pipeline import push_export, send_session
    from commuter.transports import TransportContext

    if session and latest:
        raise click.UsageError("give a session id or --latest, not both")
    if plain and to:
        raise click.UsageError("--plain is an unencrypted folder drop; it cannot go --to a peer")
    if plain and via not in ("auto", "folder"):
        raise click.UsageError("--plain only works with the folder transport")
    _check_via(via)
    settings = app.settings
    ctx = TransportContext.load(settings)
    everyone = [] if plain else ctx.peers.all()
    peers = [ctx.peers.get(to)] if to else everyone
    # Plain `push` (no --to) goes through the relay when one is configured, as --to does,
    # and falls back to the transfer dir.
    by_relay = not to and via == "auto" and bool(ctx.config.relay) and bool(peers)
    if not to and via in ("auto", "folder") and ctx.config.transfer_dir is None and not by_relay:
        raise ConfigError(
            "no transfer directory configured; run `commuter config set transfer-dir DIR` "
            "(or push --to PEER)"
        )
    session, cwd = choose_session(app, session, latest, agent)

    async def deliver(export: Export) -> Pushed:
        if by_relay:
            return await _push_relay_first(ctx, export, peers)
        return await push_export(ctx, export, peers, via, named=bool(to))

    # A delta when every peer confirmed an earlier state of the session (pipeline.send_session);
    # to a peer over the LAN the export streams into the upload (pipeline.push_export).
    pushed = asyncio.run(send_session(ctx, session, peers, deliver, agent=agent, cwd=cwd))
    if pushed.receipt.transport == "folder" and not pushed.delta:  # replaces unread older
        from commuter.transports.folder import supersede

        for name in supersede(ctx, pushed.receipt, pushed.agent, pushed.session_id):
            click.echo(f"note: removed {safe_text(name)}, an unread older push of it", err=True)
    _report_push(ctx, pushed, pushed.session_id, plain)


async def _push_relay_first(ctx: TransportContext, export: Export, peers: list[Peer]) -> Pushed:
    """Every paired machine through the relay; the transfer dir if the relay fails (the same
    temp bundle: `export` keeps it until the push ends)."""
    import dataclasses

    from commuter.errors import CommuterError
    from commuter.pipeline import push_export

    try:
        return await push_export(ctx, export, peers, "relay")
    except CommuterError as exc:
        if ctx.config.transfer_dir is None:
            raise
        pushed = await push_export(ctx, export, peers, "folder")
        return dataclasses.replace(pushed, skipped=(f"relay: {exc}", *pushed.skipped))


def _report_push(ctx: TransportContext, pushed: Pushed, session_id: str, plain: bool) -> None:
    receipt = pushed.receipt
    for reason in pushed.skipped:
        click.echo(f"note: skipped {safe_text(reason)}", err=True)
    if not pushed.sealed and not plain:
        _warn(
            "no paired machine, so this bundle is NOT encrypted: anyone who can read "
            f"{receipt.location} can read the conversation (run `commuter pair`)"
        )
    short = session_id[:7]
    if receipt.transport == "folder":
        where = str(Path(receipt.location).parent)
        names = safe_text(", ".join(receipt.recipients))
        sealed_to = f" (sealed to {names})" if receipt.recipients else ""
        click.echo(f"pushed {short} to {safe_text(where)} via folder{sealed_to}")
    else:
        names = safe_text(", ".join(receipt.recipients))
        click.echo(f"pushed {short} to {names} via {receipt.transport}")


@click.command("pull")
@click.option(
    "--via",
    default="auto",
    show_default=True,
    metavar=VIA_CHOICES,
    help="Transport: auto reads every configured one; or only folder, lan or relay.",
)
@click.option(
    "--from",
    "from_peer",
    metavar="PEER",
    shell_complete=complete_peer,
    help="Fetch this paired machine's newest session for this directory.",
)
@click.option("--address", metavar="HOST:PORT", help="With --from: the peer's address.")
@click.option("--dry-run", is_flag=True, help="Show what would be imported; change nothing.")
@click.option(
    "--project-dir",
    type=click.Path(path_type=Path),
    help="Local project directory for what is pulled (when its path does not exist here).",
)
@click.option("--replace", is_flag=True, help="Replace diverged local copies (after a backup).")
@click.option("--yes", "assume_yes", is_flag=True, help="Take the bundles' project config.")
@pass_app
def pull_cmd(
    app: AppContext,
    via: str,
    from_peer: str | None,
    address: str | None,
    dry_run: bool,
    project_dir: Path | None,
    replace: bool,
    assume_yes: bool,
) -> None:
    """Import every session pending for this machine and print how to resume each."""
    from commuter import core
    from commuter.commands.session import _ask, _report
    from commuter.pipeline import pull_all
    from commuter.transports import TransportContext

    interactive = app.interactive
    options = core.ImportOptions(
        project_dir=project_dir,
        replace=replace,
        dry_run=dry_run,
        assume_yes=assume_yes,
        interactive=interactive,
        ask=_ask if interactive else None,
    )
    if from_peer is not None:
        if via not in ("auto", "lan"):
            raise click.UsageError(
                f"--from fetches straight from the peer over the LAN; it cannot go --via {via}"
            )
        _pull_from(app, from_peer, address, options)
        return
    if address is not None:
        raise click.UsageError("--address goes with --from PEER")
    _check_via(via)
    ctx = TransportContext.load(app.settings)
    if dry_run:  # downloads nothing: each item's label (commuter.sync.pending)
        from commuter.sync.pending import dry_run_lines

        for line in dry_run_lines(ctx, via, warn=_warn):
            click.echo(line)
        return
    from commuter.transports import create
    from commuter.transports.newest import newest_factory

    # One item per session and sender: the newest push; the older ones go once it is in.
    pulled = asyncio.run(pull_all(ctx, options, via, warn=_warn, factory=newest_factory(create)))
    if not dry_run and via in ("auto", "folder") and ctx.config.transfer_dir is not None:
        from commuter.transports.folder import FolderTransport

        FolderTransport(ctx).upkeep()  # plain drops every puller has, or old ones, go
    imported = [p for p in pulled if p.result is not None]
    for p in imported:
        click.echo(f"from {safe_text(p.origin)} via {p.item.transport}:")
        assert p.result is not None
        _report(p.result)
    if not pulled:
        lan_only = via == "auto" and not ctx.config.relay and ctx.config.transfer_dir is None
        click.echo(
            "nothing to pull (no transfer-dir or relay configured; only bundles sent "
            "over the LAN arrive)"
            if lan_only
            else "nothing to pull"
        )
    elif not imported:
        click.echo(f"nothing imported ({len(pulled)} skipped, see warnings)")


def _pull_from(app: AppContext, name: str, address: str | None, options: ImportOptions) -> None:
    from commuter.commands.session import _report
    from commuter.peer.peers import Peers
    from commuter.pipeline import PeerFetch, receive_one
    from commuter.transports import TransportContext

    peer = Peers.load(app.settings).get(name)  # a mistyped name fails before anything else
    ctx = TransportContext.load(app.settings)
    if options.dry_run:  # the peer's listing only: no bundle is downloaded
        click.echo(_would_pull_from(ctx, peer, address))
        return
    source = PeerFetch(ctx, peer, Path.cwd(), address)
    pulled = asyncio.run(receive_one(ctx, source, options, warn=_warn))
    click.echo(f"from {safe_text(peer.name)} ({peer.device_id}) via lan:")
    if pulled is not None and pulled.result is not None:
        _report(pulled.result)


def _would_pull_from(ctx: TransportContext, peer: Peer, address: str | None) -> str:
    """What `pull --from PEER --dry-run` prints: the session the peer lists as its newest for
    this directory (one signed GET of its listing), whether it is new here; nothing else."""
    from commuter import core
    from commuter.peer.client import newest_session
    from commuter.sync.pending import human_size

    best, _ = asyncio.run(
        newest_session(ctx.settings, ctx.identity, peer, Path.cwd(), address=address)
    )
    local = {(r.backend, r.session_id) for r in core.list_sessions(ctx.settings)}
    what = (
        "update of the local session (or a fork if both sides went on)"
        if (best.backend, best.id) in local
        else "new here"
    )
    return safe_text(
        f"would import {best.id} ({best.backend}, {best.project or '?'}) from {peer.name} "
        f"({peer.device_id}) via lan, {human_size(best.size)}, updated {best.updated_at}: "
        f"{what}"
    )
