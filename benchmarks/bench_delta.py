"""Delta benchmark: bytes on the wire for an increment of 20 messages on a 50 MB session.

Two fake machines in temporary homes; B runs the real peer daemon (aiohttp, 127.0.0.1) that
imports each upload as it lands (as `serve --auto-import`). A pushes its newest session
(`pipeline.push_session`, LAN): the first push goes whole; then 20 entries like the session's
own last ones are appended and A pushes again, which sends a delta. The bytes of each upload
are counted at B's daemon (the request body of POST /v1/bundles). Target: the increment
sends at most 2% of the first transfer's bytes.

    .venv/bin/python benchmarks/bench_delta.py [--mb 50] [--messages 20] [--json out.json] [--check]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web

sys.path.insert(0, str(Path(__file__).parent))
from make_home import BIG_PROJECT, make_home

from commuter import config
from commuter.backends.claude import lineage
from commuter.model import ImportOptions
from commuter.peer.identity import KEY_FILE, Identity
from commuter.peer.peers import Peer, Peers
from commuter.peer.server import make_app
from commuter.pipeline import InboxEntry, push_session, receive_one
from commuter.settings import Settings
from commuter.transports import Transport, TransportContext
from commuter.transports.lan import LanTransport

TARGET = 0.02


def _settings(home: Path) -> Settings:
    home.mkdir(parents=True, exist_ok=True)
    return Settings.from_env({"HOME": str(home), "USER": "bench", "COMMUTER_MDNS_INTERFACES": ""})


def _key(settings: Settings, identity: Identity) -> None:
    settings.config_dir.mkdir(parents=True, exist_ok=True)
    seed = base64.b64encode(bytes(identity.signing_key)).decode()
    (settings.config_dir / KEY_FILE).write_text(json.dumps({"version": 1, "seed": seed}))


def _append(path: Path, n: int) -> int:
    """`n` entries like the session's own last ones (new uuids, chained, later times)."""
    lines = [x for x in path.read_bytes().splitlines() if b'"uuid"' in x]
    parent = json.loads(lines[-1])["uuid"]
    added = 0
    with path.open("ab") as fh:
        for i, raw in enumerate(lines[-n:]):
            entry = json.loads(raw)
            entry.update(
                uuid=str(uuid.uuid4()),
                parentUuid=parent,
                timestamp=f"2099-01-01T00:00:{i:02d}.000Z",
            )
            data = json.dumps(entry, separators=(",", ":")).encode() + b"\n"
            fh.write(data)
            added += len(data)
            parent = entry["uuid"]
    return added


async def run(mb: float, messages: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-delta-"))
    info = make_home(tmp / "A", sessions=1, big_mb=mb)
    sa, sb = _settings(Path(info.home)), _settings(tmp / "B")
    (sb.home / "code" / BIG_PROJECT).mkdir(parents=True)
    for s in (sa, sb):
        config.set_value(s, "path-map", (str(Path(info.home) / "projects"), str(sb.home / "code")))
    alice, bob = Identity.from_seed(b"A" * 32), Identity.from_seed(b"B" * 32)
    _key(sa, alice)
    _key(sb, bob)
    for s, name, other in ((sa, "bob", bob), (sb, "alice", alice)):
        peers = Peers.load(s)
        peers.add(Peer.new(name, other.public_key, None))
        peers.save()

    uploads: list[int] = []
    ctx_b = TransportContext.load(sb)

    async def on_received(item: Any, _peer: Any) -> str | None:
        await receive_one(
            ctx_b, InboxEntry(ctx_b, item.id, refetch=False), ImportOptions(), warn=print
        )
        return "imported"

    @web.middleware
    async def count(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.method == "POST" and request.path == "/v1/bundles":
            uploads.append(request.content_length or 0)
        return await handler(request)

    app = make_app(sb, bob, Peers.load(sb), name="bob", on_received=on_received)
    app.middlewares.insert(0, count)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    address = f"127.0.0.1:{port}"

    def lan(_name: str, c: TransportContext) -> Transport:
        return LanTransport(c, address=address)

    try:
        ctx_a = TransportContext.load(sa)
        peer = ctx_a.peers.get("bob")
        sid = info.big.session_id
        t0 = time.perf_counter()
        first = await push_session(ctx_a, sid, [peer], "lan", named=True, factory=lan)
        t1 = time.perf_counter()
        at_a = next((Path(info.home) / ".claude" / "projects").rglob(f"{sid}.jsonl"))
        added = _append(at_a, messages)
        t2 = time.perf_counter()
        second = await push_session(ctx_a, sid, [peer], "lan", named=True, factory=lan)
        t3 = time.perf_counter()
        at_b = next((sb.home / ".claude" / "projects").rglob(f"{sid}.jsonl"))
        same = lineage.uuid_chain(at_a) == lineage.uuid_chain(at_b)
    finally:
        await runner.cleanup()
    whole, increment = uploads[0], uploads[-1]
    return {
        "session_bytes": at_a.stat().st_size,
        "messages": messages,
        "appended_bytes": added,
        "first_upload_bytes": whole,
        "increment_upload_bytes": increment,
        "ratio": round(increment / whole, 5),
        "target_ratio": TARGET,
        "first_was_delta": first.delta,
        "increment_was_delta": second.delta,
        "uploads": len(uploads),
        "first_push_s": round(t1 - t0, 3),
        "increment_push_s": round(t3 - t2, 3),
        "peer_in_step": same,
        "tmp": str(tmp),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=float, default=50.0, help="size of the session in MiB")
    ap.add_argument("--messages", type=int, default=20)
    ap.add_argument("--json", type=Path, help="write the figures here too")
    ap.add_argument("--check", action="store_true", help="exit 1 if the target is missed")
    args = ap.parse_args(argv)
    out = asyncio.run(run(args.mb, args.messages))
    import shutil

    shutil.rmtree(out.pop("tmp"), ignore_errors=True)
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    ok = out["increment_was_delta"] and out["peer_in_step"] and out["ratio"] <= TARGET
    print(
        f"increment of {args.messages} messages: {out['increment_upload_bytes']} bytes, "
        f"{out['ratio'] * 100:.2f}% of the first transfer's {out['first_upload_bytes']} "
        f"(target <= {TARGET * 100:g}%): {'ok' if ok else 'MISSED'}"
    )
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
