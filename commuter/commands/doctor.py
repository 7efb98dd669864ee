"""`commuter doctor`: what works on this machine, one line per check."""

from __future__ import annotations

import json
import os

import click

from commuter.commands._app import AppContext, pass_app, safe_text
from commuter.errors import CommuterError
from commuter.settings import Settings

Check = tuple[str, bool, str]


def _backends(settings: Settings) -> list[Check]:
    """Every backend's own checks (Claude Code: its CLI, its transcripts)."""
    from commuter.backends import all_backends, doctor_checks

    return [check for backend in all_backends(settings) for check in doctor_checks(backend)]


def _config(settings: Settings) -> Check:
    from commuter import config

    try:
        cfg = config.load(settings)
    except CommuterError as exc:
        return ("config", False, str(exc))
    where = str(cfg.transfer_dir) if cfg.transfer_dir else "no transfer-dir"
    if cfg.transfer_dir and not os.access(cfg.transfer_dir, os.W_OK):
        return ("config", False, f"transfer-dir {cfg.transfer_dir} is not writable")
    return ("config", True, f"{settings.config_file} ({where}; relay {cfg.relay or 'unset'})")


def _keys(settings: Settings) -> Check:
    from commuter.peer.identity import KEY_FILE, Identity

    if not (settings.config_dir / KEY_FILE).exists():
        return ("keys", False, "no identity yet (created by `commuter id` or `pair`)")
    try:
        identity = Identity.load_or_create(settings)
    except CommuterError as exc:
        return ("keys", False, str(exc))
    return ("keys", True, f"device id {identity.device_id}")


def _peers(settings: Settings) -> Check:
    try:
        from commuter.peer.peers import Peers

        peers = Peers.load(settings).all()
    except (CommuterError, ImportError) as exc:
        return ("peers", False, str(exc))
    names = ", ".join(p.name for p in peers) or "none paired"
    return ("peers", bool(peers), names)


def _mdns(settings: Settings) -> Check:
    try:
        import zeroconf
    except ImportError as exc:  # pragma: no cover - a dependency
        return ("mdns", False, f"zeroconf missing: {exc}")
    where = ",".join(settings.mdns_interfaces) if settings.mdns_interfaces else "all interfaces"
    return ("mdns", True, f"zeroconf {zeroconf.__version__} on {where}")


CHECKS = (_config, _keys, _peers, _mdns)


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def doctor(app: AppContext, as_json: bool) -> None:
    """Show what works here: each agent and its sessions, config, keys, peers, mDNS."""
    results = [*_backends(app.settings), *(check(app.settings) for check in CHECKS)]
    if as_json:
        click.echo(json.dumps([{"check": n, "ok": ok, "detail": d} for n, ok, d in results]))
        return
    for name, ok, detail in results:
        mark = click.style("ok  ", fg="green") if ok else click.style("--  ", fg="yellow")
        click.echo(f"{mark}{name:9} {safe_text(detail)}")


def register(cli: click.Group) -> None:
    cli.add_command(doctor)
