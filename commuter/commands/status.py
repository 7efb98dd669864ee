"""`commuter status [--json]`: what is in step with whom, what waits here, the sync daemon."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from commuter.commands._app import AppContext, pass_app, safe_json, safe_text

if TYPE_CHECKING:
    from commuter.settings import Settings
    from commuter.sync.pending import PendingItem
    from commuter.sync.state import SyncState

SHOWN_IN_STEP = 20  # more sessions in step than this: only counted


def register(cli: click.Group) -> None:
    cli.add_command(status_cmd)
    cli.add_command(sync_now_cmd)


@click.command("sync-now")
@pass_app
def sync_now_cmd(app: AppContext) -> None:
    """Ask the running `serve --sync` to send what changed now (a SessionEnd hook)."""
    import os
    import signal

    from commuter.errors import CommuterError
    from commuter.sync import status_file

    daemon = status_file.read(app.settings)
    pid = daemon.get("pid") if daemon else None
    if not daemon or not daemon.get("running") or not isinstance(pid, int):
        raise CommuterError("the sync daemon is not running here (`commuter serve --sync`)")
    try:
        os.kill(pid, signal.SIGUSR1)
    except OSError as exc:
        raise CommuterError(f"cannot reach the sync daemon (pid {pid}): {exc.strerror}") from exc
    click.echo(f"asked the sync daemon (pid {pid}) to send now")


def _warn(message: str) -> None:
    click.echo(f"warning: {safe_text(message)}", err=True)


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--no-pending", is_flag=True, help="Do not look at the transports.")
@pass_app
def status_cmd(app: AppContext, as_json: bool, no_pending: bool) -> None:
    """Sessions in step with each paired machine, what waits for this one, the sync daemon."""
    data = collect(app.settings, pending=not no_pending, warn=_warn)
    if as_json:
        click.echo(safe_json(json.dumps(data, ensure_ascii=False)))
        return
    _print(data)


def collect(
    settings: Settings, *, pending: bool = True, warn: Any = lambda _m: None
) -> dict[str, Any]:
    """The status as one JSON-ready object: daemon, sessions, pending, waiting."""
    from commuter import core, forks
    from commuter.sync import status_file
    from commuter.sync.pending import list_pending
    from commuter.sync.state import SyncState
    from commuter.sync.watch import version_of
    from commuter.transports import TransportContext

    ctx = TransportContext.load(settings)
    daemon = status_file.read(settings)
    state: SyncState | None = SyncState.open(settings) if SyncState.exists(settings) else None
    try:
        sent = state.all_sent() if state else {}
        queued = state.queued() if state else {}
        waiting = state.waiting() if state else {}
        peers = ctx.peers.all()
        fork_of = forks.all_forks(settings.state_dir)
        quiet = float(daemon.get("quiet", 30)) if daemon else 30.0
        sending = (daemon or {}).get("sending") if daemon and daemon.get("running") else None
        now = time.time()
        sessions: list[dict[str, Any]] = []
        for ref in core.list_sessions(settings):
            if not ref.has_messages:
                continue
            got = version_of(ref)
            if got is None:
                continue
            version, mtime = got
            rows = []
            for peer in peers:
                key = (peer.device_id, ref.backend, ref.session_id)
                rows.append(
                    {
                        "peer": peer.name,
                        "device_id": peer.device_id,
                        **_peer_state(
                            sent.get(key), queued.get(key), version, mtime, now, quiet, daemon
                        ),
                    }
                )
                if (
                    isinstance(sending, dict)
                    and sending.get("session") == ref.session_id
                    and sending.get("peer") == peer.name
                ):
                    rows[-1].update(state="sending", reason=None)
            fork = fork_of.get((ref.backend, ref.session_id))
            sessions.append(
                {
                    "agent": ref.backend,
                    "session_id": ref.session_id,
                    "project": str(ref.project) if ref.project else None,
                    "updated_at": ref.updated_at.isoformat(),
                    "size": ref.size,
                    "fork_of": fork.origin_id if fork else None,
                    "fork_from": fork.origin_host if fork else None,
                    "peers": rows,
                }
            )
        items: list[PendingItem] = []
        if pending:
            items = asyncio.run(list_pending(ctx, cache=state, warn=warn))
        listed = {f"{i.transport}:{i.id}" for i in items}
        return {
            "daemon": _daemon_json(daemon),
            "peers": [{"name": p.name, "device_id": p.device_id} for p in peers],
            "sessions": sessions,
            "pending": [i.to_json() for i in items],
            "waiting": [
                {
                    "transport": w.transport,
                    "sender": w.sender,
                    "session_id": w.session,
                    "project": w.project,
                    "size": w.size,
                    "reason": w.reason,
                    "since": w.since,
                }
                for key, w in waiting.items()
                if not pending or key in listed
            ],
        }
    finally:
        if state is not None:
            state.close()


def _peer_state(
    sent: tuple[str, str, float] | None,
    queued: Any,
    version: str,
    mtime: float,
    now: float,
    quiet: float,
    daemon: dict[str, Any] | None,
) -> dict[str, Any]:
    if sent is not None and sent[0] == version:
        return {"state": "in step", "reason": None, "via": sent[1]}
    if queued is not None and queued.version == version:
        retry = max(0.0, queued.next_at - now)
        return {"state": "queued", "reason": queued.reason, "retry_in": round(retry)}
    if now - mtime < quiet:
        why = f"changed {now - mtime:.0f} s ago; sent after {quiet:g} s unchanged"
    elif daemon is None or not daemon.get("running"):
        why = "changed; the sync daemon is not running (`commuter serve --sync`)"
    else:
        why = "changed; the daemon sends it next"
    return {"state": "queued", "reason": why}


def _daemon_json(daemon: dict[str, Any] | None) -> dict[str, Any] | None:
    if daemon is None:
        return None
    keys = (
        "running",
        "pid",
        "started_at",
        "stopped_at",
        "quiet",
        "sending",
        "sent",
        "imported",
        "last_error",
        "last_error_at",
        "updated_at",
        "died",
    )
    return {k: daemon.get(k) for k in keys if k in daemon}


def _short_path(project: str | None) -> str:
    if not project:
        return "-"
    home = str(Path.home())
    return "~" + project[len(home) :] if project.startswith(home + "/") else project


def _print(data: dict[str, Any]) -> None:
    from commuter.sync.pending import human_age, human_size

    daemon = data["daemon"]
    if daemon is None:
        click.echo("sync daemon: never ran here (start it: `commuter serve --sync`)")
    elif daemon.get("running"):
        click.echo(
            f"sync daemon: running since {daemon.get('started_at')} (pid {daemon.get('pid')}), "
            f"quiet {daemon.get('quiet'):g} s; sent {daemon.get('sent', 0)}, "
            f"imported {daemon.get('imported', 0)}"
        )
    else:
        how = "died" if daemon.get("died") else "stopped"
        click.echo(f"sync daemon: not running ({how}; started {daemon.get('started_at')})")
    if daemon is not None:
        error = daemon.get("last_error")
        when = f" at {daemon.get('last_error_at')}" if error else ""
        click.echo(f"last error: {safe_text(error)}{when}" if error else "last error: none")
    if not data["peers"]:
        click.echo("paired machines: none (run `commuter pair`)")
    sessions = data["sessions"]
    behind = [s for s in sessions if any(p["state"] != "in step" for p in s["peers"])]
    in_step = len(sessions) - len(behind)
    shown = sessions if len(sessions) <= SHOWN_IN_STEP else behind
    if data["peers"]:
        click.echo(
            f"sessions: {len(sessions)}, {in_step} in step with every paired machine"
            + ("" if shown is sessions else " (those not listed)")
        )
    for s in shown if data["peers"] else []:
        fork = f"  fork of {s['fork_of'][:8]} from {s['fork_from']}" if s["fork_of"] else ""
        head = f"  {s['session_id'][:8]}  {s['agent']:<7} {safe_text(_short_path(s['project']))}"
        if all(p["state"] == "in step" for p in s["peers"]):
            names = ", ".join(p["peer"] for p in s["peers"])
            click.echo(f"{head}{safe_text(fork)}  — in step with {safe_text(names)}")
            continue
        click.echo(f"{head}{safe_text(fork)}")
        for p in s["peers"]:
            why = f": {p['reason']}" if p.get("reason") else ""
            retry = f" (next try in {p['retry_in']} s)" if p.get("retry_in") else ""
            click.echo(f"      {safe_text(p['peer']):<12} {p['state']}{safe_text(why)}{retry}")
    pending = data["pending"]
    if not pending:
        click.echo("waiting for this machine: nothing")
    else:
        click.echo(f"waiting for this machine: {len(pending)}")
    for item in pending:
        sid = (item["session_id"] or "?")[:8]
        project = safe_text(_short_path(item["project"])) if item["project"] else "?"
        if item.get("refusal"):
            project = "(asks for the whole session: a delta did not apply there)"
        why = f"  ({safe_text(item['waiting'])})" if item.get("waiting") else ""
        click.echo(
            f"  {item['transport']:<6} from {safe_text(item['sender']):<12} {sid:<8}  {project}  "
            f"{human_size(item['size'])}, {human_age(item['age'])} old{why}"
        )
