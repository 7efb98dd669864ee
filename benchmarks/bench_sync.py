"""Sync daemon benchmark: quiet -> resumable latency on loopback, and the idle cost.

1. Two fake machines (temp HOMEs, paired, known loopback ports) each run
   `commuter serve --sync --quiet Q` as a subprocess. A 10 MiB Claude Code session
   (benchmarks/make_home.py) appears at A; from its last write, after Q seconds of quiet, how
   long until B's daemon has imported it (its "imported" line: the transcript is in place and
   `claude --resume` would take it)? Then 20 messages are appended at A: the same for the
   increment, and the bytes each send put on the wire (A's "sent" lines).
2. A daemon watching 1,000 sessions (all in step with its one paired peer): CPU time and
   memory (VmRSS, VmHWM from /proc) over an idle window, default quiet (30 s).

    .venv/bin/python benchmarks/bench_sync.py [--mb 10] [--quiet 2] [--sessions 1000]
        [--idle-seconds 120] [--json out.json] [--check]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from make_home import make_home

from commuter.peer.identity import Identity
from commuter.peer.peers import Peer, Peers
from commuter.settings import Settings

CLK_TCK = os.sysconf("SC_CLK_TCK")


def env_of(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "COMMUTER_"))}
    env.update(
        HOME=str(home), USER="bench", COMMUTER_MDNS_INTERFACES="127.0.0.1", PYTHONUNBUFFERED="1"
    )
    env.pop("CLAUDE_CONFIG_DIR", None)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Daemon:
    """`serve --sync` of one fake machine; stdout lines stamped as they arrive."""

    def __init__(self, home: Path, port: int, quiet: float | None) -> None:
        extra = [] if quiet is None else ["--quiet", f"{quiet:g}"]
        self.lines: list[tuple[float, str]] = []
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "commuter",
                "serve",
                "--sync",
                *extra,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-mdns",
            ],
            env=env_of(home),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        self.wait("sync: quiet", 60)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.time(), line.rstrip("\n")))

    def wait(self, pattern: str, within: float, after: int = 0) -> tuple[float, str]:
        deadline = time.monotonic() + within
        rx = re.compile(pattern)
        while time.monotonic() < deadline:
            for stamp, line in self.lines[after:]:
                if rx.search(line):
                    return stamp, line
            time.sleep(0.01)
        raise SystemExit(
            f"no line matching {pattern!r}:\n" + "\n".join(text for _, text in self.lines)
        )

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def pair(home_a: Path, home_b: Path, addr_a: str | None, addr_b: str | None) -> None:
    sa, sb = Settings.from_env(env_of(home_a)), Settings.from_env(env_of(home_b))
    ka, kb = Identity.load_or_create(sa), Identity.load_or_create(sb)
    for settings, name, key, address in ((sa, "b", kb, addr_b), (sb, "a", ka, addr_a)):
        peers = Peers.load(settings)
        peers.add(Peer.new(name, key.public_key, address))
        peers.save()


def append_messages(path: Path, n: int) -> None:
    last: dict[str, Any] | None = None
    with path.open("rb") as fh:
        fh.seek(max(0, path.stat().st_size - (1 << 20)))
        for raw in fh.read().splitlines():
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("uuid"):
                last = entry
    assert last is not None
    with path.open("a") as out:
        for i in range(n):
            entry = {**last, "type": "user", "uuid": str(uuid.uuid4()), "parentUuid": last["uuid"]}
            entry["message"] = {"role": "user", "content": f"one more thing ({i})"}
            out.write(json.dumps(entry, separators=(",", ":")) + "\n")
            last = entry


def latency(tmp: Path, mb: float, quiet: float) -> dict[str, Any]:
    home_a, home_b = tmp / "a", tmp / "b"
    home_a.mkdir(parents=True)
    home_b.mkdir(parents=True)
    port_a, port_b = free_port(), free_port()
    pair(home_a, home_b, f"127.0.0.1:{port_a}", f"127.0.0.1:{port_b}")
    info = make_home(home_a, sessions=1, big_mb=mb)
    transcript = Path(info.big.path)
    later = time.time() + 3600  # "still being written" until the daemons run
    os.utime(transcript, (later, later))
    b = Daemon(home_b, port_b, quiet)
    a = Daemon(home_a, port_a, quiet)
    try:
        time.sleep(1.0)  # both have listed their stores
        os.utime(transcript)  # the last write: from here the session is quiet
        t0 = transcript.stat().st_mtime
        first_at, first = b.wait(r"^imported ", 120)
        size = transcript.stat().st_size
        n_b = len(b.lines)
        append_messages(transcript, 20)
        t1 = transcript.stat().st_mtime
        second_at, second = b.wait(r"^imported ", 120, after=n_b)
        time.sleep(0.5)
        sent_lines = [line for _, line in a.lines if line.startswith("sent ")]
    finally:
        a.stop()
        b.stop()
    found = (re.search(r"(\d+) bytes", line) for line in sent_lines)
    bytes_sent = [int(m.group(1)) for m in found if m]
    first_bytes = bytes_sent[0] if bytes_sent else None
    inc = bytes_sent[1] if len(bytes_sent) > 1 else None
    return {
        "session_bytes": size,
        "session_mib": round(size / 2**20, 2),
        "quiet_s": quiet,
        "first_latency_after_quiet_s": round(first_at - t0 - quiet, 3),
        "increment_latency_after_quiet_s": round(second_at - t1 - quiet, 3),
        "first_import_line": first,
        "increment_import_line": second,
        "sent_lines": sent_lines,
        "first_bytes": first_bytes,
        "increment_bytes": inc,
        "increment_ratio": round(inc / first_bytes, 4) if inc and first_bytes else None,
    }


def proc_times(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_mem(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def idle(tmp: Path, sessions: int, seconds: float, settle: float) -> dict[str, Any]:
    from commuter import core
    from commuter.sync.state import SyncState
    from commuter.sync.watch import version_of

    home_a, home_b = tmp / "idle-a", tmp / "idle-b"
    made = time.perf_counter()
    make_home(home_a, sessions=sessions, big_mb=0.1)
    made = time.perf_counter() - made
    home_b.mkdir(parents=True)
    pair(home_a, home_b, None, f"127.0.0.1:{free_port()}")  # b is away; a has nothing for it
    settings = Settings.from_env(env_of(home_a))
    peer = Peers.load(settings).all()[0]
    state = SyncState.open(settings)
    refs = core.list_sessions(settings)
    for ref in refs:  # in step with b already: the steady state of a synced machine
        got = version_of(ref)
        if got is not None:
            state.mark_sent(peer.device_id, ref.backend, ref.session_id, got[0], "lan")
    state.close()
    a = Daemon(home_a, free_port(), None)
    try:
        time.sleep(settle)
        cpu0, wall0 = proc_times(a.proc.pid), time.monotonic()
        time.sleep(seconds)
        cpu1, wall1 = proc_times(a.proc.pid), time.monotonic()
        mem = proc_mem(a.proc.pid)
        sent = [line for _, line in a.lines if line.startswith(("sent ", "queued "))]
    finally:
        a.stop()
    return {
        "sessions": len(refs),
        "home_made_s": round(made, 1),
        "idle_window_s": round(wall1 - wall0, 1),
        "cpu_s": round(cpu1 - cpu0, 3),
        "cpu_percent": round(100 * (cpu1 - cpu0) / (wall1 - wall0), 3),
        "rss_mib": round(mem.get("VmRSS", 0) / 2**20, 1),
        "peak_rss_mib": round(mem.get("VmHWM", 0) / 2**20, 1),
        "sends_while_idle": len(sent),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=10.0)
    ap.add_argument("--quiet", type=float, default=2.0)
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--idle-seconds", type=float, default=120.0)
    ap.add_argument("--settle", type=float, default=20.0, help="seconds before the idle window")
    ap.add_argument("--skip-idle", action="store_true")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
        result: dict[str, Any] = {"latency": latency(Path(tmp), args.mb, args.quiet)}
        if not args.skip_idle:
            result["idle"] = idle(Path(tmp), args.sessions, args.idle_seconds, args.settle)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    missed = []
    if result["latency"]["first_latency_after_quiet_s"] > 1.0:
        missed.append("first transfer over 1 s after the quiet period")
    if "idle" in result:
        if result["idle"]["cpu_percent"] > 1.0:
            missed.append("idle CPU over 1%")
        if result["idle"]["peak_rss_mib"] > 100:
            missed.append("RSS over 100 MB")
    for m in missed:
        print(f"target missed: {m}", file=sys.stderr)
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
