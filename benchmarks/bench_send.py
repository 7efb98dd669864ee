"""LAN send end to end: a session until it is resumable at the peer, against `curl -T`.

Target (issue 17): sending a 100 MB session to a peer's `commuter serve --auto-import` until
the transcript is there (the daemon answers `imported` after its import) takes at most 4x a
plain `curl -T` of the transcript to a trivial aiohttp server, in the same run. Two senders:

- file:   export to a temp bundle, then `client.send_file` (seal while uploading): what
          `commuter send` / `push --via lan` do today;
- stream: `client.send_export`: the export writes into the sealer and the upload as it goes,
          no temp bundle;
- push:   `pipeline.push_session(..., "lan")`: what `commuter send` / `push --via lan` do
          since they stream (the stream above plus the trust store, the peer's probe, the
          ack records);
- oldpush: the same with the LAN leg as it was before it streamed: export to a temp
          bundle, seal it to a temp file, upload that (LanTransport.send).

Each sender is its own process, timed from just before the export to the daemon's answer
(interpreter start-up and imports excluded, as bench_lan.py does); each trial has a fresh
receiving HOME (a first import, never an update). See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_lan import BenchError, Server, free_port, home_env  # noqa: E402  (shared helpers)

TARGET = 4.0  # push ÷ curl
MODES = ("curl", "file", "stream", "push", "oldpush")


def child_send(mode: str, sid: str, address: str, result: Path) -> None:
    """One send of session `sid` to "receiver" at `address`; seconds to the answer."""
    import asyncio

    from commuter import core
    from commuter.peer import client
    from commuter.peer.identity import Identity
    from commuter.peer.peers import Peers
    from commuter.settings import Settings

    settings = Settings.from_env(dict(os.environ))
    me = Identity.load_or_create(settings)
    peer = Peers.load(settings).get("receiver")
    ref = core.find_session(settings, sid)

    async def by_file() -> dict[str, Any]:
        staging = Path(tempfile.mkdtemp(dir=settings.staging_root))
        try:
            path = staging / "bundle.commuter"
            with path.open("wb") as fh:
                await asyncio.to_thread(core.export_session, settings, fh, ref)
            return await client.send_file(settings, me, peer, path, address)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    async def by_stream() -> dict[str, Any]:
        answer, _exported = await client.send_export(
            settings, me, peer, lambda fh: core.export_session(settings, fh, ref), address
        )
        return answer

    async def by_push(streamed: bool = True) -> dict[str, Any]:
        from commuter import acks
        from commuter.peer import seal
        from commuter.pipeline import push_session
        from commuter.transports import Receipt, TransportContext
        from commuter.transports.lan import LanTransport

        class OldLan(LanTransport):
            async def send_export(self, export: Any, to: Any) -> Receipt:
                staging = Path(tempfile.mkdtemp(dir=settings.staging_root))
                try:
                    plain, sealed = staging / "bundle.commuter", staging / "bundle.sealed"
                    with plain.open("wb") as fh:
                        await asyncio.to_thread(export, fh)
                    keys = [to.public_key]
                    await asyncio.to_thread(seal.seal_file, plain, sealed, self.ctx.identity, keys)
                    return await self.send(sealed, [to])
                finally:
                    shutil.rmtree(staging, ignore_errors=True)

        ctx = TransportContext.load(settings)
        # The whole session every trial (each receiver is fresh), never a delta.
        acks.forget_ack(settings.state_dir, peer.device_id, ref.backend, ref.session_id)

        def lan(_name: str, c: TransportContext) -> LanTransport:
            return (LanTransport if streamed else OldLan)(c, address=address)

        pushed = await push_session(ctx, ref, [peer], "lan", named=True, factory=lan)
        return {"status": pushed.receipt.statuses[0], "id": pushed.receipt.item_id}

    senders = {
        "file": by_file,
        "stream": by_stream,
        "push": by_push,
        "oldpush": lambda: by_push(streamed=False),
    }
    settings.staging_root.mkdir(parents=True, exist_ok=True)
    # Warm-up, untimed: another (small) session, so that both sides have imported what an
    # export and an import need (a daemon that runs for days has).
    small = next(r for r in core.list_sessions(settings) if r.session_id != sid)
    asyncio.run(
        client.send_export(
            settings, me, peer, lambda fh: core.export_session(settings, fh, small), address
        )
    )
    import resource

    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    answer = asyncio.run(senders[mode]())
    seconds = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    result.write_text(json.dumps({"seconds": seconds, "answer": answer, "cpu": cpu}))


def _pair(sender: Path, receiver: Path) -> Path:
    """Keys for both HOMEs, each trusting the other ("receiver", "sender"); the receiver's
    HOME is the template each trial copies."""
    from commuter.peer.identity import Identity
    from commuter.peer.peers import Peer, Peers
    from commuter.settings import Settings

    receiver.mkdir(parents=True)
    settings = {home: Settings.from_env(home_env(home)) for home in (sender, receiver)}
    ids = {home: Identity.load_or_create(s) for home, s in settings.items()}
    for me, other, name in ((sender, receiver, "receiver"), (receiver, sender, "sender")):
        peers = Peers.load(settings[me])
        peers.add(Peer.new(name, ids[other].public_key, None))
        peers.save()
    return receiver


def _receiver(work: Path, template: Path, src_projects: Path, n: int) -> Path:
    """A fresh receiving HOME: the template's keys and trust store, a path map from the
    sender's projects to its own code dir, where app0 exists."""
    home = work / f"home-receiver-{n}"
    shutil.copytree(template, home, symlinks=True)
    from commuter import config
    from commuter.settings import Settings

    settings = Settings.from_env(home_env(home))
    (home / "code" / "app0").mkdir(parents=True, exist_ok=True)
    config.set_value(settings, "path-map", (str(src_projects), str(home / "code")))
    return home


def _cpu_of(pid: int) -> float:
    """CPU seconds (user + system, all threads) process `pid` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def trial_commuter(
    mode: str, work: Path, sender: Path, template: Path, big: dict[str, Any], n: int
) -> tuple[float, float, float]:
    """(seconds, the sender's CPU seconds, the receiver's CPU seconds) of one send."""
    home = _receiver(work, template, Path(big["project_dir"]).parent, n)
    port = free_port()
    address = f"127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "commuter", "serve", "--auto-import", "--no-mdns"]
    server = Server(
        [*cmd, "--host", "127.0.0.1", "--port", str(port)],
        home_env(home),
        f"http://{address}/v1/info",
        work / f"serve-{mode}-{n}.log",
    )
    result = work / f"send-{mode}-{n}.json"
    received = 0.0
    try:
        before = _cpu_of(server.proc.pid)
        p = subprocess.run(
            [sys.executable, __file__, "_send", mode, big["session_id"], address, str(result)],
            env=home_env(sender),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=300,
        )
        received = _cpu_of(server.proc.pid) - before  # with the warm-up's small import
    finally:
        server.stop()
    if p.returncode != 0 or not result.exists():
        raise BenchError(f"{mode} sender failed: {p.stderr.decode(errors='replace')[-3000:]}")
    sent = json.loads(result.read_text())
    if sent["answer"].get("status") != "imported":
        raise BenchError(f"{mode}: the peer answered {sent['answer']}: {server.tail()}")
    got = list((home / ".claude" / "projects").rglob(f"{big['session_id']}.jsonl"))
    if len(got) != 1 or _lines(got[0]) != big["lines"]:
        raise BenchError(f"{mode}: the transcript is not whole at the peer: {got}")
    shutil.rmtree(home)
    return float(sent["seconds"]), float(sent["cpu"]), received


def _lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for _ in fh)


def trial_curl(work: Path, transcript: Path) -> float:
    port = free_port()
    dst = work / "curl-received"
    dst.mkdir(exist_ok=True)
    server = Server(
        [sys.executable, str(HERE / "bench_lan.py"), "_plain_server", str(port), str(dst)],
        home_env(work / "home-plain"),
        f"http://127.0.0.1:{port}/ready",
        work / "serve-plain.log",
    )
    try:
        t0 = time.perf_counter()
        p = subprocess.run(
            ["curl", "-sS", "-X", "POST", "-T", str(transcript), f"http://127.0.0.1:{port}/upload"],
            capture_output=True,
            timeout=300,
        )
        seconds = time.perf_counter() - t0
    finally:
        server.stop()
    answer = json.loads(p.stdout or b"{}")
    if p.returncode != 0 or answer.get("size") != transcript.stat().st_size:
        raise BenchError(f"curl failed: {p.stderr.decode(errors='replace')}")
    Path(answer["path"]).unlink()
    return seconds


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "_send":
        child_send(args[1], args[2], args[3], Path(args[4]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=float, default=100.0, help="the session's size, MiB")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=20261125)
    ap.add_argument("--work-dir", type=Path)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--check", action="store_true", help="exit 1 if the target is not met")
    opts = ap.parse_args(args)
    if shutil.which("curl") is None:
        print("no curl on PATH", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench-send-", dir=opts.work_dir))
    load = [os.getloadavg()]
    try:
        sender = work / "home-sender"
        made = subprocess.run(
            [
                sys.executable,
                str(HERE / "make_home.py"),
                str(sender),
                "--sessions",
                "3",
                "--big-mb",
                str(opts.mb),
                "--seed",
                str(opts.seed),
            ],
            capture_output=True,
            check=True,
        )
        template = _pair(sender, work / "home-receiver")
        big = json.loads(made.stdout)["big"]
        transcript = Path(big["path"])
        times: dict[str, list[float]] = {m: [] for m in MODES}
        cpu: dict[str, list[tuple[float, float]]] = {m: [] for m in MODES if m != "curl"}
        n = 0
        for rep in range(opts.repeat):
            for mode in MODES if rep % 2 == 0 else MODES[::-1]:
                n += 1
                if mode == "curl":
                    times[mode].append(trial_curl(work, transcript))
                else:
                    seconds, sent_cpu, received_cpu = trial_commuter(
                        mode, work, sender, template, big, n
                    )
                    times[mode].append(seconds)
                    cpu[mode].append((sent_cpu, received_cpu))
        load.append(os.getloadavg())
    except BenchError as exc:
        print(f"bench_send: {exc}", file=sys.stderr)
        return 2
    finally:
        if not opts.keep:
            shutil.rmtree(work, ignore_errors=True)
    med = {m: statistics.median(v) for m, v in times.items()}
    cores = os.cpu_count() or 1
    send_cpu = statistics.median(c[0] for c in cpu["push"])
    recv_cpu = statistics.median(c[1] for c in cpu["push"])
    floor = (send_cpu + recv_cpu) / cores
    out = {
        "mb": opts.mb,
        "transcript_bytes": transcript.stat().st_size if opts.keep else big["size"],
        "repeat": opts.repeat,
        "seconds": times,
        "median": med,
        "ratio_file_over_curl": med["file"] / med["curl"],
        "ratio_stream_over_curl": med["stream"] / med["curl"],
        "ratio_push_over_curl": med["push"] / med["curl"],
        "ratio_push_over_oldpush": med["push"] / med["oldpush"],
        "load_start_end": load,
        "target": TARGET,
        "cpu_seconds": cpu,
        "push_cpu_sender_receiver": [send_cpu, recv_cpu],
        "cores": cores,
        "push_floor_one_machine": floor,
    }
    print(
        f"session of {opts.mb:g} MiB, medians of {opts.repeat} (load {load[0][0]:.2f} -> "
        f"{load[-1][0]:.2f}):"
    )
    for m in MODES:
        ratio = "" if m == "curl" else f"  {med[m] / med['curl']:.1f}x curl"
        print(f"  {m:7} {med[m]:.3f} s{ratio}")
    after = out["ratio_push_over_oldpush"]
    print(f"  push / oldpush (the commands after / before they streamed): {after:.2f}")
    print(
        f"  push CPU: sender {send_cpu:.3f} s, receiver {recv_cpu:.3f} s; both on these "
        f"{cores} cores: no less than {floor:.3f} s ({floor / med['curl']:.1f}x curl); "
        f"each side on one core of its own: {max(send_cpu, recv_cpu):.3f} s "
        f"({max(send_cpu, recv_cpu) / med['curl']:.1f}x curl)"
    )
    met = "met" if out["ratio_push_over_curl"] <= TARGET else "NOT met"
    print(f"target: push <= {TARGET:g}x curl: {met}")
    if opts.json:
        opts.json.parent.mkdir(parents=True, exist_ok=True)
        opts.json.write_text(json.dumps(out, indent=2))
    if opts.check and out["ratio_push_over_curl"] > TARGET:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
