"""LAN benchmark: a sealed, signed peer send against a plain aiohttp upload, on loopback.

Target (from the issue): a 100 MB bundle sent over loopback reaches at least half the
throughput of a plain aiohttp upload of the same bytes, measured in the same run, and memory
stays flat in bundle size. Every server and every sender is its own process, so each one's
peak memory (VmHWM) is measured alone. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from base64 import b64encode
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MIB = 1024 * 1024
CHUNK = 1 << 20  # the plain server reads the body in the same chunks as `commuter serve`
TARGET_RATIO = 0.5
FLAT_SLACK_MIB = 16.0  # a process may grow this much from the small to the big bundle
READY_TIMEOUT = 30.0
SEND_TIMEOUT = 600.0


class BenchError(Exception):
    """A server or sender failed, or the bytes did not arrive intact."""


# --- helpers shared by every process --------------------------------------------------------


def peak_kib(pid: int | str = "self") -> int | None:
    """VmHWM (peak resident set) of a process in KiB; None where /proc is missing."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def home_env(home: Path) -> dict[str, str]:
    """Environment of a fake machine: HOME, XDG dirs inside it, commuter's variables cleared."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("XDG_", "COMMUTER_")) and k != "CLAUDE_CONFIG_DIR"
    }
    env.update(
        HOME=str(home),
        USER="bench",
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        XDG_STATE_HOME=str(home / ".local" / "state"),
        XDG_CACHE_HOME=str(home / ".cache"),
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    return env


# --- the bundle ------------------------------------------------------------------------------


def _lines(rng: random.Random, sid: str) -> Any:
    """Transcript-shaped JSONL whose payloads are base64 of random bytes (compress ~25 %)."""
    parent = None
    n = 0
    while True:
        n += 1
        me = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        payload = b64encode(rng.randbytes(rng.randint(200, 6000))).decode()
        entry = {
            "type": "user" if n % 2 else "assistant",
            "uuid": me,
            "parentUuid": parent,
            "sessionId": sid,
            "cwd": "/home/bench/projects/app0",
            "timestamp": f"2026-05-{1 + n % 28:02d}T12:{n % 60:02d}:00.000Z",
            "message": {
                "role": "user" if n % 2 else "assistant",
                "content": [{"type": "text", "text": f"step {n}: {payload}"}],
            },
        }
        parent = me
        yield (json.dumps(entry, separators=(",", ":")) + "\n").encode()


def _write_jsonl(path: Path, size: int, seed: int, sid: str) -> None:
    rng = random.Random(seed)
    written = 0
    with path.open("wb") as fh:
        for line in _lines(rng, sid):
            fh.write(line)
            written += len(line)
            if written >= size:
                return


def make_bundle(out: Path, mib: float, seed: int, scratch: Path) -> dict[str, Any]:
    """A real commuter bundle (BundleWriter: zstd tar + digest) of about `mib` MiB."""
    from commuter import bundle
    from commuter.core import Origin

    sid = str(uuid.UUID(int=random.Random(seed).getrandbits(128), version=4))
    manifest = bundle.Manifest(
        format=bundle.FORMAT_VERSION,
        backend="claude",
        session_id=sid,
        project_dir="/home/bench/projects/app0",
        created_at="2026-05-09T12:00:00+00:00",
        origin=Origin("bench", "bench", "2026-05-09T12:00:00+00:00", "bench"),
        message_count=0,
        git=None,
        meta={},
        members=(),
    )
    sample = scratch / "sample.jsonl"
    _write_jsonl(sample, 2 * MIB, seed, sid)
    with (scratch / "sample.bundle").open("wb") as fh:
        w = bundle.BundleWriter(fh, manifest)
        w.add_file(f"{sid}.jsonl", sample)
        w.close()
    ratio = (scratch / "sample.bundle").stat().st_size / sample.stat().st_size
    transcript = scratch / f"{sid}.jsonl"
    _write_jsonl(transcript, int(mib * MIB / ratio), seed, sid)
    with out.open("wb") as fh:
        w = bundle.BundleWriter(fh, manifest)
        w.add_file(f"{sid}.jsonl", transcript)
        w.close()
    plain = transcript.stat().st_size
    for p in (sample, scratch / "sample.bundle", transcript):
        p.unlink()
    size = out.stat().st_size
    return {"path": str(out), "bytes": size, "mib": size / MIB, "transcript_bytes": plain}


# --- child processes --------------------------------------------------------------------------


def child_plain_server(port: int, dst_dir: Path) -> None:
    """The baseline receiver: aiohttp, the request body streamed to a file, nothing else."""
    from aiohttp import web

    async def upload(request: web.Request) -> web.Response:
        dst = dst_dir / f"upload-{os.urandom(4).hex()}.bin"
        size = 0
        with dst.open("wb") as fh:
            while chunk := await request.content.read(CHUNK):
                fh.write(chunk)
                size += len(chunk)
        return web.json_response({"status": "stored", "path": str(dst), "size": size})

    async def ready(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application(client_max_size=1 << 20)
    app.router.add_post("/upload", upload)
    app.router.add_get("/ready", ready)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


async def _send_plain(bundle: Path, address: str) -> dict[str, Any]:
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=120)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        with bundle.open("rb") as fh:
            headers = {"Content-Type": "application/octet-stream"}
            async with http.post(f"http://{address}/upload", data=fh, headers=headers) as resp:
                resp.raise_for_status()
                return dict(await resp.json())


async def _send_commuter(bundle: Path, address: str) -> dict[str, Any]:
    from commuter.peer import client
    from commuter.peer.identity import Identity
    from commuter.peer.peers import Peers
    from commuter.settings import Settings

    settings = Settings.from_env(dict(os.environ))
    me = Identity.load_or_create(settings)
    peer = Peers.load(settings).get("receiver")
    return await client.send_file(settings, me, peer, bundle, address)


def child_send(mode: str, bundle: Path, address: str, result: Path) -> None:
    """One upload, timed from the first byte read to the server's answer; then peak memory."""
    run = _send_commuter if mode == "commuter" else _send_plain
    if mode == "commuter":  # import outside the timed part, as the plain client does
        import commuter.peer.client
        import commuter.peer.seal  # noqa: F401
    import aiohttp  # noqa: F401

    t0 = time.perf_counter()
    answer = asyncio.run(run(bundle, address))
    seconds = time.perf_counter() - t0
    out = {
        "seconds": seconds,
        "answer": answer,
        "peak_kib": peak_kib(),
        "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }
    result.write_text(json.dumps(out))


# --- the orchestrator --------------------------------------------------------------------------


@dataclass
class Trial:
    """One upload: which path, how big, how fast, how much memory each side peaked at."""

    mode: str
    size_mib: float
    rep: int
    seconds: float
    mib_s: float
    sender_peak_mib: float | None
    receiver_peak_mib: float | None


class Server:
    """A receiver in its own process; stopped (SIGTERM, then SIGKILL) on exit."""

    def __init__(self, cmd: list[str], env: dict[str, str], ready_url: str, log: Path) -> None:
        self.log = log
        self._fh = log.open("wb")
        self.proc = subprocess.Popen(
            cmd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._fh,
            stderr=self._fh,
            start_new_session=True,
        )
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"server exited with {self.proc.returncode}: {self.tail()}")
            try:
                with urllib.request.urlopen(ready_url, timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise BenchError(f"server not ready within {READY_TIMEOUT:g} s: {self.tail()}")
            time.sleep(0.05)

    def tail(self) -> str:
        self._fh.flush()
        return self.log.read_text(errors="replace")[-2000:]

    def peak_mib(self) -> float | None:
        kib = peak_kib(self.proc.pid)
        return None if kib is None else kib / 1024

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._fh.close()


def run_sender(mode: str, bundle: Path, address: str, env: dict[str, str], work: Path) -> Any:
    result = work / f"send-{mode}.json"
    result.unlink(missing_ok=True)
    log = work / f"send-{mode}.log"
    with log.open("wb") as fh:
        p = subprocess.run(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "_send",
                mode,
                str(bundle),
                address,
                str(result),
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=fh,
            timeout=SEND_TIMEOUT,
        )
    if p.returncode != 0 or not result.exists():
        text = log.read_text(errors="replace")[-3000:]
        raise BenchError(f"{mode} sender failed (exit {p.returncode}):\n{text}")
    return json.loads(result.read_text())


@dataclass
class Machines:
    """Two fake HOMEs paired with each other (the sender knows the receiver as "receiver")."""

    sender: Path
    receiver: Path


def make_machines(work: Path) -> Machines:
    from commuter.peer.identity import Identity
    from commuter.peer.peers import Peer, Peers
    from commuter.settings import Settings

    m = Machines(work / "home-sender", work / "home-receiver")
    settings = {}
    ids = {}
    for home in (m.sender, m.receiver):
        home.mkdir(parents=True)
        settings[home] = Settings.from_env(home_env(home))
        ids[home] = Identity.load_or_create(settings[home])
    for me, other, name in ((m.sender, m.receiver, "receiver"), (m.receiver, m.sender, "sender")):
        peers = Peers.load(settings[me])
        peers.add(Peer.new(name, ids[other].public_key, None))
        peers.save()
    return m


def trial_commuter(m: Machines, bundle: Path, info: dict[str, Any], rep: int, work: Path) -> Trial:
    from commuter.peer.inbox import Inbox
    from commuter.settings import Settings

    port = free_port()
    address = f"127.0.0.1:{port}"
    env_r = home_env(m.receiver)
    server = Server(
        [
            sys.executable,
            "-m",
            "commuter",
            "serve",
            "--no-mdns",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env_r,
        f"http://{address}/v1/info",
        work / "serve-commuter.log",
    )
    try:
        sent = run_sender("commuter", bundle, address, home_env(m.sender), work)
        receiver_peak = server.peak_mib()
    finally:
        server.stop()
    inbox = Inbox(Settings.from_env(env_r))
    items = inbox.pending()
    if len(items) != 1 or sent["answer"].get("status") != "stored":
        raise BenchError(f"commuter send did not land in the inbox: {sent['answer']}, {items}")
    for item in items:
        inbox.remove(item)
    return _trial("commuter", info, rep, sent, receiver_peak)


def trial_plain(bundle: Path, info: dict[str, Any], rep: int, work: Path) -> Trial:
    port = free_port()
    address = f"127.0.0.1:{port}"
    dst = work / "plain-received"
    dst.mkdir(exist_ok=True)
    env = home_env(work / "home-plain")
    server = Server(
        [sys.executable, str(Path(__file__).resolve()), "_plain_server", str(port), str(dst)],
        env,
        f"http://{address}/ready",
        work / "serve-plain.log",
    )
    try:
        sent = run_sender("plain", bundle, address, env, work)
        receiver_peak = server.peak_mib()
    finally:
        server.stop()
    got = Path(sent["answer"]["path"])
    if sent["answer"]["size"] != info["bytes"] or sha256_file(got) != info["sha256"]:
        raise BenchError("plain upload arrived damaged")
    got.unlink()
    return _trial("plain", info, rep, sent, receiver_peak)


def _trial(mode: str, info: dict[str, Any], rep: int, sent: Any, receiver: float | None) -> Trial:
    seconds = float(sent["seconds"])
    kib = sent["peak_kib"]
    return Trial(
        mode=mode,
        size_mib=round(info["mib"], 2),
        rep=rep,
        seconds=seconds,
        mib_s=info["mib"] / seconds,
        sender_peak_mib=None if kib is None else kib / 1024,
        receiver_peak_mib=receiver,
    )


def _max(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def summarize(trials: list[Trial], sizes: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"sizes": []}
    for info in sizes:
        mine = [t for t in trials if t.size_mib == round(info["mib"], 2)]
        row: dict[str, Any] = {"bundle_mib": round(info["mib"], 2)}
        for mode in ("commuter", "plain"):
            ts = [t for t in mine if t.mode == mode]
            row[mode] = {
                "mib_s": statistics.median(t.mib_s for t in ts),
                "seconds": statistics.median(t.seconds for t in ts),
                "sender_peak_mib": _max([t.sender_peak_mib for t in ts]),
                "receiver_peak_mib": _max([t.receiver_peak_mib for t in ts]),
            }
        pairs: dict[int, dict[str, float]] = {}
        for t in mine:
            pairs.setdefault(t.rep, {})[t.mode] = t.mib_s
        ratios = [p["commuter"] / p["plain"] for p in pairs.values() if len(p) == 2]
        row["ratio"] = statistics.median(ratios)
        row["ratios"] = ratios
        out["sizes"].append(row)
    small, big = out["sizes"][0], out["sizes"][-1]
    growth = {}
    for mode in ("commuter", "plain"):
        for side in ("sender", "receiver"):
            a, b = small[mode][f"{side}_peak_mib"], big[mode][f"{side}_peak_mib"]
            growth[f"{mode}_{side}"] = None if a is None or b is None else b - a
    out["memory_growth_mib"] = growth
    commuter_growth = [g for k, g in growth.items() if k.startswith("commuter") and g is not None]
    out["targets"] = {
        "ratio": {
            "target": TARGET_RATIO,
            "value": big["ratio"],
            "met": big["ratio"] >= TARGET_RATIO,
        },
        "memory_flat": {
            "target": f"growth <= {FLAT_SLACK_MIB:g} MiB from {small['bundle_mib']} to "
            f"{big['bundle_mib']} MiB",
            "value": max(commuter_growth) if commuter_growth else None,
            "met": bool(commuter_growth) and max(commuter_growth) <= FLAT_SLACK_MIB,
        },
    }
    return out


def _fmt(v: float | None, spec: str = ".0f") -> str:
    return "-" if v is None else format(v, spec)


def report(summary: dict[str, Any]) -> None:
    print()
    print(
        f"{'bundle':>9} {'path':<9} {'MiB/s':>8} {'seconds':>8} {'sender':>9} {'receiver':>9}"
        f" {'ratio':>6}"
    )
    for row in summary["sizes"]:
        for mode in ("commuter", "plain"):
            r = row[mode]
            ratio = f"{row['ratio']:.2f}" if mode == "commuter" else ""
            print(
                f"{row['bundle_mib']:>5.1f} MiB {mode:<9} {r['mib_s']:>8.0f} "
                f"{r['seconds']:>8.3f} {_fmt(r['sender_peak_mib']):>5} MiB "
                f"{_fmt(r['receiver_peak_mib']):>5} MiB {ratio:>6}"
            )
    print("(MiB/s: median; peaks: VmHWM, largest over the repetitions)")
    g = summary["memory_growth_mib"]
    print(
        "peak growth small -> big: " + ", ".join(f"{k} {_fmt(v, '+.1f')} MiB" for k, v in g.items())
    )
    for name, t in summary["targets"].items():
        value = t["value"]
        shown = "-" if value is None else f"{value:.2f}"
        print(f"target {name}: {t['target']}: {shown} -> {'met' if t['met'] else 'MISSED'}")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "_plain_server":
        child_plain_server(int(args[1]), Path(args[2]))
        return 0
    if args and args[0] == "_send":
        child_send(args[1], Path(args[2]), args[3], Path(args[4]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=100.0, help="the big bundle, MiB (default 100)")
    ap.add_argument(
        "--small-mb",
        type=float,
        default=None,
        help="the small bundle, MiB (default a quarter of --mb)",
    )
    ap.add_argument("--repeat", type=int, default=3, help="uploads per path and size")
    ap.add_argument("--seed", type=int, default=20261125)
    ap.add_argument("--work-dir", type=Path, help="where the temp dir goes (default: $TMPDIR)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--check", action="store_true", help="exit 1 if a target is not met")
    opts = ap.parse_args(args)
    sys.path.insert(0, str(ROOT))

    work = Path(tempfile.mkdtemp(prefix="bench-lan-", dir=opts.work_dir))
    ok = False
    try:
        machines = make_machines(work)
        small = opts.small_mb if opts.small_mb is not None else opts.mb / 4
        sizes = []
        trials: list[Trial] = []
        for i, mib in enumerate((small, opts.mb)):
            path = work / f"bundle-{i}.commuter"
            t0 = time.perf_counter()
            info = make_bundle(path, mib, opts.seed + i, work)
            info["sha256"] = sha256_file(path)
            sizes.append(info)
            print(
                f"bundle {info['mib']:.1f} MiB (transcript {info['transcript_bytes'] / MIB:.1f}"
                f" MiB) made in {time.perf_counter() - t0:.1f} s",
                flush=True,
            )
            for rep in range(opts.repeat):
                order = ("commuter", "plain") if rep % 2 == 0 else ("plain", "commuter")
                for mode in order:
                    if mode == "commuter":
                        t = trial_commuter(machines, path, info, rep, work)
                    else:
                        t = trial_plain(path, info, rep, work)
                    trials.append(t)
                    print(
                        f"  {t.size_mib:6.1f} MiB {mode:<9} rep {rep}: {t.mib_s:7.0f} MiB/s "
                        f"sender {_fmt(t.sender_peak_mib)} MiB, receiver "
                        f"{_fmt(t.receiver_peak_mib)} MiB",
                        flush=True,
                    )
            path.unlink()
        summary = summarize(trials, sizes)
        report(summary)
        result = {
            "machine": {
                "cpus": os.cpu_count(),
                "python": sys.version.split()[0],
                "platform": sys.platform,
            },
            "bundles": [{k: v for k, v in s.items() if k != "path"} for s in sizes],
            "trials": [asdict(t) for t in trials],
            **summary,
        }
        if opts.json:
            opts.json.parent.mkdir(parents=True, exist_ok=True)
            opts.json.write_text(json.dumps(result, indent=2) + "\n")
        ok = True
    except (BenchError, subprocess.TimeoutExpired) as exc:
        print(f"error: {exc}\n(work dir kept: {work})", file=sys.stderr)
        return 2
    finally:
        if ok and not opts.keep:
            shutil.rmtree(work, ignore_errors=True)
        elif opts.keep:
            print(f"work dir: {work}")
    if opts.check and not all(t["met"] for t in summary["targets"].values()):
        return 1
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
