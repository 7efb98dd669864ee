"""Relay benchmark: N concurrent clients each push and pull a sealed bundle through a relay.

Runs `commuter relay serve` as a subprocess on 127.0.0.1, then N clients (own keys) each
upload a bundle sealed to the next client, then each lists, downloads, checks and deletes
what waits for it. Reports wall time, throughput and the relay's peak memory (VmHWM).

    .venv/bin/python benchmarks/bench_relay.py [--clients 50] [--mb 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from commuter.config import Config
from commuter.peer.identity import Identity
from commuter.peer.peers import Peer, Peers
from commuter.peer.seal import seal_file
from commuter.settings import Settings
from commuter.transports import TransportContext
from commuter.transports.relay import RelayTransport


def start_relay(
    data_dir: Path | None, home: Path, *extra: str
) -> tuple[subprocess.Popen[str], str]:
    """The relay subprocess (on `data_dir`, or as `extra` says: `--store URL`) and its URL."""
    where = [] if data_dir is None else ["--data-dir", str(data_dir)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "COMMUTER_"))}
    env["HOME"] = str(home)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "commuter",
            "relay",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            *where,
            "--mailbox-items",
            "1000",
            "--sender-items",
            "1000",
            *extra,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    line = proc.stdout.readline() if ready else ""
    match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
    if not match:
        proc.kill()
        raise SystemExit(f"relay did not start: {line!r}")
    return proc, f"http://127.0.0.1:{match.group(1)}"


def peak_rss_mb(pid: int) -> float:
    """VmHWM of a live process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def client(i: int, n: int, url: str, work: Path, sealed: Path) -> dict[str, Any]:
    """Push `sealed` to the next client, then pull everything waiting for client i."""
    me = Identity.from_seed(i.to_bytes(32, "big"))
    nxt = Identity.from_seed(((i + 1) % n).to_bytes(32, "big"))
    settings = Settings.from_env({"HOME": str(work / f"c{i}")})
    peer = Peer.new(f"c{(i + 1) % n}", nxt.public_key)
    ctx = TransportContext(settings, me, Config(relay=url), Peers(work / "peers.json", [peer]))
    async with RelayTransport(ctx) as relay:
        t0 = time.perf_counter()
        await relay.send(sealed, [peer])
        push_s = time.perf_counter() - t0
        items = []
        for _ in range(100):  # bounded wait for the previous client's upload
            items = await relay.pending()
            if items:
                break
            await asyncio.sleep(0.05)
        got = 0
        dst = work / f"c{i}"
        dst.mkdir(parents=True, exist_ok=True)
        t1 = time.perf_counter()
        for item in items:
            path = await relay.fetch(item, dst)
            got += path.stat().st_size
            await relay.ack(item)
        pull_s = time.perf_counter() - t1
    return {"push_s": push_s, "pull_s": pull_s, "received": got, "items": len(items)}


def make_sealed(work: Path, n: int, size: int) -> list[Path]:
    """One bundle per client, sealed from client i to client i+1."""
    out = []
    for i in range(n):
        plain = work / f"plain{i}"
        plain.write_bytes(os.urandom(size))
        sealed = work / f"b{i}.sealed"
        me = Identity.from_seed(i.to_bytes(32, "big"))
        to = Identity.from_seed(((i + 1) % n).to_bytes(32, "big"))
        seal_file(plain, sealed, me, [to.public_key])
        plain.unlink()
        out.append(sealed)
    return out


async def run(
    n: int, work: Path, url: str, bundles: list[Path]
) -> list[dict[str, Any] | BaseException]:
    tasks = [client(i, n, url, work, bundles[i]) for i in range(n)]
    return await asyncio.gather(*tasks, return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--mb", type=float, default=1.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    size = int(args.mb * 1024 * 1024)
    with tempfile.TemporaryDirectory(prefix="bench-relay-") as tmp:
        work = Path(tmp)
        proc, url = start_relay(work / "relay-data", work / "relay-home")
        try:
            bundles = make_sealed(work, args.clients, size)
            t0 = time.perf_counter()
            results = asyncio.run(run(args.clients, work, url, bundles))
            wall = time.perf_counter() - t0
            rss = peak_rss_mb(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    errors = [r for r in results if isinstance(r, BaseException)]
    ok = [r for r in results if not isinstance(r, BaseException)]
    moved = sum(r["received"] for r in ok) * 2  # each byte went up and came down
    report = {
        "clients": args.clients,
        "bundle_mb": args.mb,
        "errors": [repr(e) for e in errors],
        "received_all": all(r["items"] == 1 for r in ok) and len(ok) == args.clients,
        "wall_s": round(wall, 3),
        "throughput_mb_s": round(moved / wall / 2**20, 1),
        "max_push_s": round(max((r["push_s"] for r in ok), default=0), 3),
        "max_pull_s": round(max((r["pull_s"] for r in ok), default=0), 3),
        "relay_peak_rss_mb": round(rss, 1),
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if errors or not report["received_all"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
