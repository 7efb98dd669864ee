"""Relay command: `commuter relay serve`, the mailbox server that only stores ciphertext."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from commuter.commands._app import AppContext, pass_app, stop_on_signals
from commuter.errors import ConfigError

if TYPE_CHECKING:
    from commuter.relay.quotas import Limits
    from commuter.relay.store import RelayStore

DEFAULT_PORT = 8787
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def register(cli: click.Group) -> None:
    """Add the relay group to the CLI."""
    cli.add_command(relay_group)


def parse_duration(text: str) -> float:
    """Seconds from '3600', '90m', '72h' or '7d'."""
    match = _DURATION.match(text)
    if not match or float(match.group(1)) <= 0:
        raise ConfigError(f"{text!r} is not a duration (like 3600, 90m, 72h, 7d)")
    return float(match.group(1)) * _UNITS[match.group(2)]


@click.group("relay")
def relay_group() -> None:
    """Run a relay: a mailbox for machines on different networks."""


@relay_group.command("serve")
@click.option("--host", default="0.0.0.0", show_default=True, help="Listen address.")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    help="Where queued bundles live (default: DATA_DIR/relay).",
)
@click.option(
    "--store",
    metavar="URL",
    help="Share one PostgreSQL database between relays (postgresql://user@host/db) "
    "instead of the data dir.",
)
@click.option(
    "--store-connections",
    type=click.IntRange(1, 1000),
    default=4,
    show_default=True,
    help="Connections to the --store database per relay process.",
)
@click.option(
    "--max-bundle-mb",
    type=click.IntRange(1),
    default=512,
    show_default=True,
    help="Largest bundle accepted.",
)
@click.option(
    "--ttl",
    default="7d",
    show_default=True,
    help="Delete bundles not fetched within this long (e.g. 72h, 7d).",
)
@click.option(
    "--mailbox-mb",
    type=click.IntRange(1),
    default=2048,
    show_default=True,
    help="Quota per recipient.",
)
@click.option("--mailbox-items", type=click.IntRange(1), default=200, show_default=True)
@click.option(
    "--sender-mb", type=click.IntRange(1), default=4096, show_default=True, help="Quota per sender."
)
@click.option("--sender-items", type=click.IntRange(1), default=400, show_default=True)
@click.option(
    "--sender-mailbox-mb",
    type=click.IntRange(1),
    default=1024,
    show_default=True,
    help="Quota of one sender in one mailbox.",
)
@click.option("--sender-mailbox-items", type=click.IntRange(1), default=100, show_default=True)
@click.option(
    "--max-total-mb",
    type=click.IntRange(1),
    default=20480,
    show_default=True,
    help="Everything the relay stores (507 when full).",
)
@click.option(
    "--sweep",
    default="60s",
    show_default=True,
    hidden=True,
    help="How often expired bundles are swept.",
)
@click.option(
    "--body-stall",
    default="60s",
    show_default=True,
    hidden=True,
    help="Drop an upload that sends nothing for this long.",
)
@pass_app
def relay_serve_cmd(
    app: AppContext,
    host: str,
    port: int,
    data_dir: Path | None,
    store: str | None,
    store_connections: int,
    max_bundle_mb: int,
    ttl: str,
    mailbox_mb: int,
    mailbox_items: int,
    sender_mb: int,
    sender_items: int,
    sender_mailbox_mb: int,
    sender_mailbox_items: int,
    max_total_mb: int,
    sweep: str,
    body_stall: str,
) -> None:
    """Serve the relay until interrupted (put it behind a TLS reverse proxy)."""
    from commuter.relay.quotas import MB, Limits

    limits = Limits(
        max_bundle=max_bundle_mb * MB,
        ttl=parse_duration(ttl),
        mailbox_items=mailbox_items,
        mailbox_bytes=mailbox_mb * MB,
        sender_items=sender_items,
        sender_bytes=sender_mb * MB,
        sender_mailbox_items=sender_mailbox_items,
        sender_mailbox_bytes=sender_mailbox_mb * MB,
        total_bytes=max_total_mb * MB,
        sweep_interval=min(parse_duration(sweep), 3600.0),
        body_stall=min(parse_duration(body_stall), 3600.0),
    )
    if store is not None:
        if data_dir is not None:
            raise ConfigError("--store and --data-dir exclude each other (the store holds all)")
        from commuter.relay.pgstore import PgStore

        pg = PgStore(store, limits, pool_size=store_connections)  # the URL checked: one line
        asyncio.run(_serve(None, pg, host, port, limits))
        return
    root = (data_dir or app.settings.data_dir / "relay").expanduser()
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ConfigError(f"cannot create relay data dir {root}: {exc.strerror}") from exc
    asyncio.run(_serve(root, None, host, port, limits))


def log_line(message: str) -> str:
    """`message` as the relay prints it: ASCII, nothing unprintable (an error's text may
    carry what a client or the database sent), escaped as Python would."""
    return message if message.isascii() and message.isprintable() else ascii(message)[1:-1]


async def _serve(
    root: Path | None, store: RelayStore | None, host: str, port: int, limits: Limits
) -> None:
    from commuter.peer.server import start_site
    from commuter.relay.app import STATE, make_relay_app

    def log(message: str) -> None:
        # A line per upload and per delivery: a plain write (click.echo looks up its context
        # and the terminal's colours every time).
        sys.stdout.write(log_line(message) + "\n")
        sys.stdout.flush()

    app = make_relay_app(root, limits, log, exclusive=True, store=store)
    runner, bound = await start_site(app, host, port)  # a store that cannot start: one error
    stop = stop_on_signals()
    try:
        shown = f"[{host}]" if ":" in host else host
        log(f"relay serving on http://{shown}:{bound} ({app[STATE].store.describe()})")
        await stop.wait()
    finally:
        await runner.cleanup()
