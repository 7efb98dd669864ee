"""Relay benchmark, PostgreSQL store: N clients push and pull a sealed bundle each across two
relays over one PostgreSQL, against one relay on the file store, in the same run.

A real PostgreSQL server (tests/relay/pghelp.py: initdb + pg_ctl into a temporary directory
on 127.0.0.1, fsync on) and `commuter relay serve` subprocesses on loopback. Each setup runs
the same two phases: every client (own key) pushes a bundle sealed to the next client, all at
once; then every client lists, downloads, checks and acknowledges what waits for it, all at
once. Over PostgreSQL, client i talks to relay i % 2, so every bundle goes up through one
relay and comes down through the other. A warm-up round of each store comes first and is
not counted (a fresh server's first round also creates its WAL files and warms its caches,
which a server that has run before does not pay; its figures are in the JSON as
"warmup"). Rounds alternate file / PostgreSQL; the headline
ratio is of the best round of each; the ratio of each pair of rounds (next to each other, so
under about the same load of the machine) and their median are reported too, with the load
average before and after each round. Reports wall times, throughput (up + down), errors and
each relay's peak memory (VmHWM).

    .venv/bin/python benchmarks/bench_relay_pg.py [--clients 200] [--mb 1] [--rounds 2]
        [--warmup 1] [--pg-setting NAME=VALUE ...] [--pg-defaults] [--json out.json]

The server is sized as docs/relay.md ("Database sizing") tells an operator to size one:
`shared_buffers` 1 GB (PostgreSQL advises a quarter of a dedicated server's memory; this is
less), fsync on, everything else PostgreSQL's defaults. `--pg-defaults` runs it on
PostgreSQL's own defaults (128 MB) instead; `--pg-setting` (repeatable) adds or overrides one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_relay import make_sealed, peak_rss_mb, start_relay

from commuter.config import Config
from commuter.peer.identity import Identity
from commuter.peer.peers import Peer, Peers
from commuter.settings import Settings
from commuter.transports import TransportContext
from commuter.transports.relay import RelayTransport

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "relay"))
from pghelp import SKIP_REASON, PgServer, find_bin_dir


def _context(i: int, n: int, url: str, work: Path) -> tuple[TransportContext, Peer]:
    me = Identity.from_seed(i.to_bytes(32, "big"))
    nxt = Identity.from_seed(((i + 1) % n).to_bytes(32, "big"))
    settings = Settings.from_env({"HOME": str(work / f"c{i}")})
    peer = Peer.new(f"c{(i + 1) % n}", nxt.public_key)
    return TransportContext(
        settings, me, Config(relay=url), Peers(work / "peers.json", [peer])
    ), peer


async def push(i: int, n: int, url: str, work: Path, sealed: Path) -> float:
    ctx, peer = _context(i, n, url, work)
    t0 = time.perf_counter()
    async with RelayTransport(ctx) as relay:
        await relay.send(sealed, [peer])
    return time.perf_counter() - t0


async def pull(i: int, n: int, url: str, work: Path) -> int:
    """Bytes received (every pending item fetched, digest-checked by the client, acked)."""
    ctx, _ = _context(i, n, url, work)
    dst = work / f"c{i}" / "in"
    dst.mkdir(parents=True, exist_ok=True)
    got = 0
    async with RelayTransport(ctx) as relay:
        for item in await relay.pending():
            path = await relay.fetch(item, dst)
            got += path.stat().st_size
            path.unlink()
            await relay.ack(item)
    return got


async def phases(urls: list[str], work: Path, bundles: list[Path]) -> dict[str, Any]:
    n = len(bundles)
    t0 = time.perf_counter()
    pushed = await asyncio.gather(
        *(push(i, n, urls[i % len(urls)], work, bundles[i]) for i in range(n)),
        return_exceptions=True,
    )
    t1 = time.perf_counter()
    pulled = await asyncio.gather(
        *(pull(i, n, urls[i % len(urls)], work) for i in range(n)), return_exceptions=True
    )
    t2 = time.perf_counter()
    errors = [repr(r) for r in [*pushed, *pulled] if isinstance(r, BaseException)]
    received = sum(r for r in pulled if isinstance(r, int))
    expected = sum(b.stat().st_size for b in bundles)
    return {
        "errors": errors[:5],
        "error_count": len(errors),
        "received_all": received == expected,
        "push_s": round(t1 - t0, 3),
        "pull_s": round(t2 - t1, 3),
        "wall_s": round(t2 - t0, 3),
        "throughput_mb_s": round(2 * received / (t2 - t0) / 2**20, 1),
    }


def stop(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        proc.communicate(timeout=30)


def load() -> float:
    """The machine's 1-minute load average (other work on the same cores)."""
    return round(os.getloadavg()[0], 2)


def run_file(work: Path, bundles: list[Path]) -> dict[str, Any]:
    proc, url = start_relay(work / "relay-data", work / "relay-home")
    try:
        result = asyncio.run(phases([url], work, bundles))
        result["relay_peak_rss_mb"] = [round(peak_rss_mb(proc.pid), 1)]
    finally:
        stop([proc])
    return result


def run_pg(server: PgServer, work: Path, bundles: list[Path]) -> dict[str, Any]:
    db = server.create_database()
    procs: list[subprocess.Popen[str]] = []
    try:
        urls = []
        for k in range(2):
            proc, url = start_relay(None, work / f"relay{k}-home", "--store", db)
            procs.append(proc)
            urls.append(url)
        result = asyncio.run(phases(urls, work, bundles))
        result["relay_peak_rss_mb"] = [round(peak_rss_mb(p.pid), 1) for p in procs]
        left = server.psql(db.rsplit("/", 1)[1], "SELECT count(*) FROM relay_chunks").strip()
        result["chunks_left"] = int(left)
    finally:
        stop(procs)
        server.drop_database(db)
    return result


SIZED = {"shared_buffers": "1GB"}  # docs/relay.md, Database sizing


def _setting(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    plain = value.isprintable() and " " not in value  # one word of pg_ctl's options
    if not (sep and name.replace("_", "").replace(".", "").isalnum() and plain):
        raise SystemExit(f"--pg-setting takes NAME=VALUE, not {text!r}")
    return name, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--mb", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1, help="uncounted rounds first")
    parser.add_argument(
        "--pg-setting", action="append", default=[], metavar="NAME=VALUE",
        help="a server setting (repeatable), e.g. shared_buffers=2GB",
    )  # fmt: skip
    parser.add_argument(
        "--pg-defaults", action="store_true",
        help="PostgreSQL's own defaults (shared_buffers 128 MB), not the sized server",
    )  # fmt: skip
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    settings = {} if args.pg_defaults else dict(SIZED)
    settings.update(_setting(text) for text in args.pg_setting)
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise SystemExit(SKIP_REASON)
    size = int(args.mb * 1024 * 1024)
    rounds: dict[str, list[dict[str, Any]]] = {"file": [], "postgresql": []}
    warmup: dict[str, list[dict[str, Any]]] = {"file": [], "postgresql": []}
    server = PgServer(bin_dir, fsync=True, settings=settings)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-relay-pg-") as tmp:
            work = Path(tmp)
            bundles = make_sealed(work, args.clients, size)
            for r in range(-args.warmup, args.rounds):
                for kind in ("file", "postgresql"):
                    run_dir = work / f"{kind}-{r}"
                    run_dir.mkdir()
                    before = load()
                    if kind == "file":
                        result = run_file(run_dir, bundles)
                    else:
                        result = run_pg(server, run_dir, bundles)
                    result["load_before_after"] = [before, load()]
                    (rounds if r >= 0 else warmup)[kind].append(result)
    finally:
        server.stop()
    best = {k: max(v, key=lambda x: x["throughput_mb_s"]) for k, v in rounds.items()}
    ratio = best["postgresql"]["throughput_mb_s"] / max(best["file"]["throughput_mb_s"], 1e-9)
    pairs = [
        round(pg["throughput_mb_s"] / max(f["throughput_mb_s"], 1e-9), 2)
        for f, pg in zip(rounds["file"], rounds["postgresql"], strict=True)
    ]
    medians = {k: statistics.median(r["throughput_mb_s"] for r in v) for k, v in rounds.items()}
    report = {
        "clients": args.clients,
        "pg_settings": settings,
        "bundle_mb": args.mb,
        "warmup": warmup,
        "rounds": rounds,
        "file_best_mb_s": best["file"]["throughput_mb_s"],
        "postgresql_two_relays_best_mb_s": best["postgresql"]["throughput_mb_s"],
        "ratio_postgresql_to_file": round(ratio, 2),
        "ratio_of_medians": round(medians["postgresql"] / max(medians["file"], 1e-9), 2),
        "ratio_per_pair_of_rounds": pairs,
        "median_pair_ratio": statistics.median(pairs),
        "target_ratio": 0.7,
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    every = [r for runs in (warmup, rounds) for v in runs.values() for r in v]
    failed = any(r["error_count"] or not r["received_all"] for r in every)
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
