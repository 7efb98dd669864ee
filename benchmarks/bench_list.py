"""`commuter list` over 10,000 sessions, warm: ours against 0.2.0 (and, with --base REV, an
earlier commit of ours), interleaved rounds, one run; prints medians and ratios.

Targets (issue 17): ours ≤ 0.3 s warm and ≥ 10x faster than 0.2.0. The same measurement as
bench_core.py's "list at scale" part, alone, with more rounds and ours' CPU time beside its
wall time (on a shared machine the wall time mostly says how busy the others are). Every
tool runs byte-compiled (PYTHONDONTWRITEBYTECODE is dropped and the trees are compiled
first), as an installed commuter does. Each round also lists an empty home with every tool:
its start-up alone (imports, settings, the backends asked), the part of the time that does
not grow with the sessions. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import compileall
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
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from bench_core import (  # noqa: E402  (the benchmarks' shared helpers)
    TARGET_LIST,
    TARGET_LIST_WARM_S,
    ensure_orig_venv,
    generate_home,
    tool_env,
)

# wall seconds, CPU seconds (user + system) of the child, exit status
WRAPPER = """
import os, sys, time
res, cmd = sys.argv[1], sys.argv[2:]
t0 = time.perf_counter()
pid = os.posix_spawnp(cmd[0], cmd, os.environ)
_, st, ru = os.wait4(pid, 0)
wall = time.perf_counter() - t0
with open(res, "w") as f:
    f.write(f"{wall!r} {ru.ru_utime + ru.ru_stime!r} {os.waitstatus_to_exitcode(st)}")
"""


def measure(cmd: list[str], cwd: Path, env: dict[str, str], work: Path) -> tuple[float, float]:
    res = work / "measure.txt"
    with (work / "list.out").open("wb") as out:
        subprocess.run(
            [sys.executable, "-I", "-S", "-c", WRAPPER, str(res), *cmd],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=True,
        )
    wall, cpu, rc = res.read_text().split()
    if int(rc) != 0:
        raise SystemExit(f"{cmd} failed: {(work / 'list.out').read_text()[-2000:]}")
    return float(wall), float(cpu)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--seed", type=int, default=20261126)
    ap.add_argument("--home", type=Path, help="an existing synthetic home (else one is made)")
    ap.add_argument("--base", help="also time this git revision of ours (e.g. HEAD~3)")
    ap.add_argument("--orig-venv", type=Path, default=HERE / ".venv-orig")
    ap.add_argument("--no-orig", action="store_true", help="leave 0.2.0 out")
    ap.add_argument("--work-dir", type=Path)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    opts = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-list-", dir=opts.work_dir))
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    try:
        home = opts.home or Path(
            generate_home(work / "home", sessions=opts.sessions, big_mb=1, seed=opts.seed).home
        )
        # Its folders there and settled, as in a home in use: `python -m` puts the working
        # directory (the home) on sys.path, and the plug-in cache (plugins.json) is kept only
        # for folders unchanged for 2 s, so a home whose .cache the first listing makes would
        # have every listing of the next seconds read the entry points afresh.
        for sub in (".cache", ".config", ".local/share", ".local/state"):
            (home / sub).mkdir(parents=True, exist_ok=True)
        settled = time.time() - 60
        os.utime(home, (settled, settled))
        tools: dict[str, tuple[list[str], dict[str, str]]] = {}
        compileall.compile_dir(ROOT / "commuter", quiet=1)
        tools["ours"] = ([sys.executable, "-m", "commuter", "list"], {})
        if opts.base:
            tree = work / "base"
            tree.mkdir()
            archive = subprocess.run(
                ["git", "-C", str(ROOT), "archive", opts.base, "commuter"],
                capture_output=True,
                check=True,
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
            compileall.compile_dir(tree / "commuter", quiet=1)
            # its own cache and state: the formats differ
            extra = {
                "PYTHONPATH": str(tree),
                "XDG_CACHE_HOME": str(work / "base-cache"),
                "XDG_DATA_HOME": str(work / "base-data"),
            }
            tools["base"] = ([sys.executable, "-m", "commuter", "list"], extra)
        if not opts.no_orig:
            orig = ensure_orig_venv(opts.orig_venv)
            tools["0.2.0"] = ([str(orig), "list"], {})
        envs = {
            k: {**tool_env(home, work, keep_pythonpath=k != "0.2.0"), **extra}
            for k, (_cmd, extra) in tools.items()
        }
        empty = work / "empty-home"  # a home as a real one is: its folders there, settled
        for sub in (".cache", ".config", ".local/share", ".local/state"):
            (empty / sub).mkdir(parents=True)
        os.utime(empty, (settled, settled))
        empty_envs = {
            k: {**tool_env(empty, work, keep_pythonpath=k != "0.2.0"), **extra}
            for k, (_cmd, extra) in tools.items()
        }
        for k, (cmd, _extra) in tools.items():  # warm: page cache, heads and count caches
            for _ in range(2):
                measure(cmd, home, envs[k], work)
                measure(cmd, empty, empty_envs[k], work)
        walls: dict[str, list[float]] = {k: [] for k in tools}
        cpus: dict[str, list[float]] = {k: [] for k in tools}
        start_cpus: dict[str, list[float]] = {k: [] for k in tools}
        load = [os.getloadavg()]
        order = list(tools)
        for rep in range(opts.repeat):
            for k in order if rep % 2 == 0 else order[::-1]:
                wall, cpu = measure(tools[k][0], home, envs[k], work)
                walls[k].append(wall)
                cpus[k].append(cpu)
                start_cpus[k].append(measure(tools[k][0], empty, empty_envs[k], work)[1])
        load.append(os.getloadavg())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in walls.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpus.items()}
    start_med = {k: statistics.median(v) for k, v in start_cpus.items()}
    out: dict[str, Any] = {
        "sessions": opts.sessions,
        "repeat": opts.repeat,
        "wall_s": walls,
        "cpu_s": cpus,
        "median_wall_s": med,
        "median_cpu_s": cpu_med,
        "startup_cpu_s": start_cpus,
        "median_startup_cpu_s": start_med,
        "load_start_end": load,
    }
    print(
        f"list over {opts.sessions} sessions, warm, medians of {opts.repeat} "
        f"(load {load[0][0]:.2f} -> {load[-1][0]:.2f}):"
    )
    for k in tools:
        print(
            f"  {k:6} {med[k]:.3f} s wall, {cpu_med[k]:.3f} s CPU"
            f" (start-up, empty home: {start_med[k]:.3f} s CPU)"
        )
    missed = med["ours"] > TARGET_LIST_WARM_S
    for k in ("base", "0.2.0"):
        if k in med:
            out[f"ratio_{k}_over_ours"] = med[k] / med["ours"]
            print(f"  {k} / ours: {med[k] / med['ours']:.1f}x wall")
    if "0.2.0" in med:
        missed = missed or med["0.2.0"] / med["ours"] < TARGET_LIST
    print(
        f"targets: ours <= {TARGET_LIST_WARM_S:g} s, >= {TARGET_LIST:g}x 0.2.0: "
        + ("NOT met" if missed else "met")
    )
    if opts.json:
        opts.json.parent.mkdir(parents=True, exist_ok=True)
        opts.json.write_text(json.dumps(out, indent=2))
    return 1 if opts.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
