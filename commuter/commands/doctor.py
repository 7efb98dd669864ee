"""`commuter doctor`: what works on this machine and what does not, one line per check; exits
1 when something commuter needs is broken (a configured transfer dir or relay, its own dirs,
the config file, any agent at all)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import click

from commuter.commands._app import AppContext, pass_app, safe_text
from commuter.errors import CommuterError, ExitStatus
from commuter.settings import Settings

# ok: works; info: not set up (nothing wrong); warn: worth a look; fail: needed and broken
STATUSES = ("ok", "info", "warn", "fail")
MARKS = {
    "ok": ("ok  ", "green"),
    "info": ("--  ", None),
    "warn": ("warn", "yellow"),
    "fail": ("FAIL", "red"),
}


@dataclass(frozen=True, slots=True)
class Result:
    name: str
    status: str
    detail: str


def _backends(settings: Settings) -> list[Result]:
    """Every backend's own checks (its CLI, its data dir and sessions); no agent at all here
    is a failure: there is nothing to move."""
    from commuter.backends import all_backends, doctor_checks

    out: list[Result] = []
    installed = False
    for backend in all_backends(settings):
        here = False
        with contextlib.suppress(OSError):
            here = backend.is_installed()
        installed = installed or here
        for name, ok, detail in doctor_checks(backend):
            # An agent that is not installed here is no fault, only information.
            out.append(Result(name, "ok" if ok else "warn" if here else "info", detail))
    if not installed:
        out.append(Result("agents", "fail", "no agent's data dir found here (none installed?)"))
    return out


def _writable(folder: Path) -> str | None:
    """None if a file can be made (and removed) in `folder`, else why not. The probe file has
    a name of this process's own, and only it is removed."""
    if not folder.exists():
        return "does not exist"
    if not folder.is_dir():
        return "is not a folder"
    probe = folder / f".commuter-doctor-{secrets.token_hex(6)}.tmp"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        return f"is not writable ({exc.strerror})"
    os.close(fd)
    with contextlib.suppress(OSError):
        probe.unlink()
    return None


def _config(settings: Settings) -> list[Result]:
    from commuter import config

    path = settings.config_file
    if not path.exists():
        return [Result("config", "info", f"no config file yet ({path}); defaults apply")]
    try:
        cfg = config.load(settings)
    except CommuterError as exc:
        return [Result("config", "fail", str(exc))]
    out = [Result("config", "ok", str(path))]
    if cfg.transfer_dir is None:
        out.append(Result("transfer-dir", "info", "not set (`commuter config set transfer-dir`)"))
    else:
        why = _writable(cfg.transfer_dir)
        if why is None:
            out.append(Result("transfer-dir", "ok", f"{cfg.transfer_dir} (writable)"))
        else:
            hint = " (is the drive or sync folder mounted?)" if why == "does not exist" else ""
            out.append(Result("transfer-dir", "fail", f"{cfg.transfer_dir} {why}{hint}"))
    return out


def _own_dirs(settings: Settings) -> list[Result]:
    """commuter's own config and data dirs: writable, or creatable where they are missing."""
    out = []
    for label, folder in (("config dir", settings.config_dir), ("data dir", settings.data_dir)):
        parent = folder
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        why = _writable(parent)
        if why is None:
            state = "" if parent == folder else " (created on first use)"
            out.append(Result(label, "ok", f"{folder}{state}"))
        else:
            out.append(Result(label, "fail", f"{folder}: {parent} {why}"))
    return out


def _keys(settings: Settings) -> Result:
    from commuter.peer.identity import KEY_FILE, Identity

    if not (settings.config_dir / KEY_FILE).exists():
        return Result("keys", "info", "no identity yet (created by `commuter id` or `pair`)")
    try:
        identity = Identity.load_or_create(settings)
    except CommuterError as exc:
        return Result("keys", "fail", str(exc))
    return Result("keys", "ok", f"device id {identity.device_id}")


async def _relay(settings: Settings) -> Result | None:
    from commuter import config

    try:
        url = config.load(settings).relay
    except CommuterError:
        return None  # the config line says why
    if not url:
        return Result("relay", "info", "not set (`commuter config set relay URL`)")
    from commuter.peer.identity import Identity
    from commuter.peer.peers import Peers
    from commuter.transports import TransportContext
    from commuter.transports.relay import RelayTransport

    # The health probe is unsigned: a throwaway key, so that doctor never creates one.
    ctx = TransportContext(
        settings, Identity.generate(), config.load(settings), Peers.load(settings)
    )
    async with RelayTransport(ctx) as relay:
        reason = await relay.reachable(None)
    if reason is not None:
        return Result("relay", "fail", reason)
    return Result("relay", "ok", f"{url} answers")


async def _peers(settings: Settings) -> list[Result]:
    """Each paired machine: does its `commuter serve` answer (mDNS, then its last address)?
    An offline peer is a warning: it may just be asleep."""
    try:
        from commuter.peer.peers import Peers

        peers = Peers.load(settings).all()
    except (CommuterError, ImportError) as exc:
        return [Result("peers", "fail", str(exc))]
    if not peers:
        return [Result("peers", "info", "none paired (`commuter pair`)")]
    from commuter.peer.client import PeerClient, find_addresses
    from commuter.peer.identity import Identity
    from commuter.peer.peers import Peer

    identity = Identity.load_or_create(settings)

    async def one(peer: Peer) -> Result:
        try:
            addresses = await find_addresses(settings, peer)
        except CommuterError:
            return Result(f"peer {peer.name}", "warn", "offline (not found on the LAN)")
        why = ""
        for address in addresses:
            async with PeerClient(settings, identity, peer, address) as client:
                try:
                    await asyncio.wait_for(client.probe(), settings.reply_timeout + 1)
                except (CommuterError, TimeoutError) as exc:
                    why = str(exc) or f"no answer at {address}"
                    continue
            return Result(f"peer {peer.name}", "ok", f"online at {address}")
        return Result(f"peer {peer.name}", "warn", f"offline: {why}")

    return list(await asyncio.gather(*(one(p) for p in peers)))


def _mdns(settings: Settings) -> Result:
    try:
        import zeroconf
    except ImportError as exc:  # pragma: no cover - a dependency
        return Result("mdns", "fail", f"zeroconf missing: {exc}")
    where = ",".join(settings.mdns_interfaces) if settings.mdns_interfaces else "all interfaces"
    return Result("mdns", "ok", f"zeroconf {zeroconf.__version__} on {where}")


async def _network(settings: Settings, offline: bool) -> list[Result]:
    if offline:
        return []
    relay, peers = await asyncio.gather(_relay(settings), _peers(settings))
    return [*([relay] if relay else []), *peers]


def run_checks(settings: Settings, offline: bool = False) -> list[Result]:
    """Every check, in the order `doctor` prints them."""
    results = [*_backends(settings), *_config(settings), *_own_dirs(settings), _keys(settings)]
    results += asyncio.run(_network(settings, offline))
    results.append(_mdns(settings))
    return results


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--offline", is_flag=True, help="Skip the relay and peer checks (no network).")
@pass_app
def doctor(app: AppContext, as_json: bool, offline: bool) -> None:
    """Check this machine: agents and their data, config, transfer dir, relay, peers, keys.

    Exits 1 when something needed is broken (a line marked FAIL)."""
    results = run_checks(app.settings, offline)
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "check": r.name,
                        "ok": r.status == "ok",
                        "status": r.status,
                        "detail": r.detail,
                    }
                    for r in results
                ]
            )
        )
    else:
        width = max(9, *(len(r.name) for r in results))
        for r in results:
            mark, colour = MARKS[r.status]
            shown = click.style(mark, fg=colour) if colour else mark
            click.echo(f"{shown}  {safe_text(r.name):{width}} {safe_text(r.detail)}")
    if any(r.status == "fail" for r in results):
        raise SystemExit(ExitStatus.ERROR)


def register(cli: click.Group) -> None:
    cli.add_command(doctor)
