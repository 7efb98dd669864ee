"""Core benchmark: export+import and list, this commuter against commuter 0.2.0, in one run."""

# ruff: noqa: E501  (long f-strings in the report)

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_home import HomeInfo, SessionInfo, claude_project_folder

HERE = Path(__file__).resolve().parent
ORIG_VERSION = "0.2.0"
# issue 17's targets (ratios 0.2.0 / ours unless said otherwise)
TARGET_TIME = 5.0
TARGET_MEM = 10.0
TARGET_LIST = 10.0  # list over --list-sessions (10,000) sessions
TARGET_LIST_WARM_S = 0.3  # seconds, ours, warm
TARGET_UPDATE = 1.2  # ours: update of the big session / its first import (at most)
TARGET_FLAT_MB = 16.0  # ours: peak growth from the smallest to the largest --flat-mb size


@dataclass
class Sample:
    """One measured subprocess: wall seconds, peak RSS in MiB, exit code."""

    wall: float
    rss_mb: float
    rc: int


@dataclass
class Tool:
    """One commuter under test: its command line and the extra flags it needs."""

    label: str
    key: str
    cmd: list[str]
    import_extra: list[str]
    keep_pythonpath: bool = True
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)


class BenchError(Exception):
    """A measured command failed or did not do the work."""


def tool_env(home: Path, work: Path, *, keep_pythonpath: bool = True) -> dict[str, str]:
    """Environment for a tool run: HOME and XDG dirs inside the synthetic home."""
    # PYTHONDONTWRITEBYTECODE: an installed commuter runs from compiled modules (pip compiles
    # 0.2.0's at install); a source tree must be allowed to write its own, or every command
    # compiles its modules anew.
    drop = {"CLAUDE_CONFIG_DIR", "PYTHONDONTWRITEBYTECODE"} | (
        set() if keep_pythonpath else {"PYTHONPATH"}
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("XDG_", "COMMUTER_")) and k not in drop
    }
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        XDG_STATE_HOME=str(home / ".local" / "state"),
        XDG_CACHE_HOME=str(home / ".cache"),
        GIT_CEILING_DIRECTORIES=str(work),
        NO_COLOR="1",
        COLUMNS="160",
        TERM="dumb",
    )
    return env


# Runs one command and reports wall time, peak RSS and exit status. It is a separate,
# tiny process because Linux carries the spawning process's RSS high-water mark into
# the child's ru_maxrss across fork/vfork+exec: measured from this (bigger) process,
# every tool would look at least as large as the benchmark itself.
WRAPPER = """
import os, sys, time
res, cmd = sys.argv[1], sys.argv[2:]
t0 = time.perf_counter()
pid = os.posix_spawnp(cmd[0], cmd, os.environ)
_, st, ru = os.wait4(pid, 0)
wall = time.perf_counter() - t0
with open(res, "w") as f:
    f.write(f"{wall!r} {ru.ru_maxrss} {os.waitstatus_to_exitcode(st)}")
"""


def measure(cmd: list[str], *, cwd: Path, env: dict[str, str], log: Path) -> Sample:
    """Run cmd once (stdin /dev/null, output to log) under the wrapper; wall time and peak RSS."""
    log.parent.mkdir(parents=True, exist_ok=True)
    res = log.with_suffix(".rusage")
    res.unlink(missing_ok=True)
    exe = shutil.which(cmd[0], path=env.get("PATH")) if "/" not in cmd[0] else cmd[0]
    if not exe:
        raise BenchError(f"cannot run {shlex.join(cmd)}: {cmd[0]} not found")
    with open(log, "wb") as out:
        out.write(("$ " + shlex.join(cmd) + f"\n# cwd={cwd}\n").encode())
        out.flush()
        wrapped = [sys.executable, "-I", "-S", "-c", WRAPPER, str(res), exe, *cmd[1:]]
        p = subprocess.run(
            wrapped, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    if p.returncode != 0 or not res.exists():
        raise BenchError(
            f"measuring wrapper failed for {shlex.join(cmd)} (exit {p.returncode}); see {log}"
        )
    wall, rss_kb, rc = res.read_text().split()
    return Sample(wall=float(wall), rss_mb=int(rss_kb) / 1024, rc=int(rc))


def fail(tool: Tool, what: str, log: Path, why: str) -> BenchError:
    """Build a loud error with the tail of the command's output."""
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    return BenchError(f"[{tool.label}] {what}: {why}\n--- {log} (tail) ---\n{tail}")


def ensure_orig_venv(venv: Path) -> Path:
    """Create the 0.2.0 venv if missing; return its commuter executable."""
    exe = venv / "bin" / "commuter"
    if not exe.exists():
        print(f"creating {venv} with commuter=={ORIG_VERSION} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "-q",
                f"commuter=={ORIG_VERSION}",
            ],
            check=True,
        )
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True).stdout
    if ORIG_VERSION not in out:
        raise BenchError(f"{exe} is not commuter {ORIG_VERSION}: {out.strip()}")
    return exe


def generate_home(home: Path, *, sessions: int, big_mb: float, seed: int) -> HomeInfo:
    """Run make_home.py in its own process (keeps this one small) and read its summary."""
    cmd = [
        sys.executable,
        str(HERE / "make_home.py"),
        str(home),
        "--sessions",
        str(sessions),
        "--big-mb",
        str(big_mb),
        "--seed",
        str(seed),
    ]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise BenchError(f"make_home.py failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
    d = json.loads(p.stdout)
    d["big"] = SessionInfo(**d["big"])
    return HomeInfo(**d)


def verify_import(
    tool: Tool, dst_home: Path, dst_project: Path, info: HomeInfo, log: Path
) -> dict[str, Any]:
    """Check the import really wrote the transcript where Claude Code looks, with cwd rewritten."""
    sid = info.big.session_id
    found = sorted((dst_home / ".claude" / "projects").glob(f"*/{sid}.jsonl"))
    if not found:
        raise fail(tool, "import", log, f"no {sid}.jsonl under {dst_home}/.claude/projects/")
    path = found[0]
    want = claude_project_folder(str(dst_project.resolve()))
    lines = 0
    cwd_ok = False
    file_path_rewritten = False
    with open(path, "rb") as f:
        for raw in f:
            lines += 1
            if lines <= 400:
                entry = json.loads(raw)
                if entry.get("cwd") and not cwd_ok:
                    cwd_ok = entry["cwd"] == str(dst_project)
                if b'"file_path":"' + str(dst_project).encode() in raw:
                    file_path_rewritten = True
    if lines < info.big.lines:
        raise fail(
            tool, "import", log, f"{path} has {lines} lines, the source has {info.big.lines}"
        )
    if not cwd_ok:
        raise fail(tool, "import", log, f"cwd in {path} was not rewritten to {dst_project}")
    return {
        "path": str(path),
        "folder": path.parent.name,
        "folder_is_claudes": path.parent.name == want,
        "lines": lines,
        "source_lines": info.big.lines,
        "bytes": path.stat().st_size,
        "cwd_rewritten": cwd_ok,
        "file_paths_rewritten": file_path_rewritten,
    }


def run_round(tools: list[Tool], rep: int, info: HomeInfo, work: Path) -> None:
    """One repetition: export, import, list for each tool, interleaved."""
    src_home = Path(info.home)
    src_project = Path(info.big.project_dir)
    order = tools if rep % 2 == 0 else tools[::-1]
    bundles: dict[str, Path] = {}
    for t in order:
        bundle = work / "bundles" / f"{t.key}-{rep}.bundle"
        bundle.parent.mkdir(parents=True, exist_ok=True)
        log = work / "logs" / f"{t.key}-export-{rep}.log"
        s = measure(
            [*t.cmd, "export", "--latest", "-o", str(bundle)],
            cwd=src_project,
            env=tool_env(src_home, work, keep_pythonpath=t.keep_pythonpath),
            log=log,
        )
        if s.rc != 0 or not bundle.exists() or bundle.stat().st_size == 0:
            raise fail(t, "export", log, f"exit {s.rc}, bundle exists={bundle.exists()}")
        t.samples.setdefault("export", []).append(s)
        bundles[t.key] = bundle
    for t in order:
        dst_home = work / f"dst-{t.key}-{rep}"
        dst_project = dst_home / "work" / "app0-moved"
        dst_project.mkdir(parents=True)
        log = work / "logs" / f"{t.key}-import-{rep}.log"
        cmd = [
            *t.cmd,
            "import",
            str(bundles[t.key]),
            "--no-launch",
            "--project-dir",
            str(dst_project),
            *t.import_extra,
        ]
        s = measure(
            cmd,
            cwd=dst_project,
            env=tool_env(dst_home, work, keep_pythonpath=t.keep_pythonpath),
            log=log,
        )
        if s.rc != 0:
            raise fail(t, "import", log, f"exit {s.rc}")
        t.samples.setdefault("import", []).append(s)
        t.checks.append(verify_import(t, dst_home, dst_project, info, log))
        shutil.rmtree(dst_home)
        bundles[t.key].unlink()
    for t in order:
        log = work / "logs" / f"{t.key}-list-{rep}.log"
        s = measure(
            [*t.cmd, "list"],
            cwd=src_home,
            env=tool_env(src_home, work, keep_pythonpath=t.keep_pythonpath),
            log=log,
        )
        if s.rc != 0:
            raise fail(t, "list", log, f"exit {s.rc}")
        if info.big.session_id[:7] not in log.read_text(errors="replace"):
            raise fail(t, "list", log, f"newest session {info.big.session_id[:7]} not listed")
        t.samples.setdefault("list", []).append(s)


def summarize(t: Tool) -> dict[str, float]:
    """Medians over repetitions; export+import are summed (time) or maxed (memory) per repetition."""
    ex, im, ls = t.samples["export"], t.samples["import"], t.samples["list"]
    return {
        "export_s": statistics.median(s.wall for s in ex),
        "import_s": statistics.median(s.wall for s in im),
        "export_import_s": statistics.median(a.wall + b.wall for a, b in zip(ex, im, strict=True)),
        "export_rss_mb": statistics.median(s.rss_mb for s in ex),
        "import_rss_mb": statistics.median(s.rss_mb for s in im),
        "export_import_rss_mb": statistics.median(
            max(a.rss_mb, b.rss_mb) for a, b in zip(ex, im, strict=True)
        ),
        "list_s": statistics.median(s.wall for s in ls),
        "list_rss_mb": statistics.median(s.rss_mb for s in ls),
    }


def report(
    orig: Tool, ours: Tool, info: HomeInfo, extras: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Print the side-by-side table and return the result document."""
    extras = extras or {}
    so, su = summarize(orig), summarize(ours)
    ratios = {
        "export_import_time": so["export_import_s"] / su["export_import_s"],
        "export_import_peak_mem": so["export_import_rss_mb"] / su["export_import_rss_mb"],
        "list_200_time": so["list_s"] / su["list_s"],
    }
    scale = extras.get("list_scale")
    if scale:
        ratios["list_time"] = scale["orig"]["median_s"] / scale["ours"]["median_s"]
    targets = {
        "export_import_time": {
            "target": TARGET_TIME,
            "met": ratios["export_import_time"] >= TARGET_TIME,
        },
        "export_import_peak_mem": {
            "target": TARGET_MEM,
            "met": ratios["export_import_peak_mem"] >= TARGET_MEM,
        },
    }
    if scale:
        warm = scale["ours"]["median_s"]
        targets["list_time"] = {"target": TARGET_LIST, "met": ratios["list_time"] >= TARGET_LIST}
        targets["list_warm_s"] = {
            "target": TARGET_LIST_WARM_S,
            "value": warm,
            "met": warm <= TARGET_LIST_WARM_S,
        }
    upd = extras.get("update")
    if upd:
        r = upd["ratio_update_over_first"]
        targets["update_over_first"] = {
            "target": TARGET_UPDATE,
            "value": r,
            "met": r <= TARGET_UPDATE,
        }
    flat = extras.get("flat")
    if flat:
        g = flat["growth_mb"]
        targets["flat_memory_growth_mb"] = {
            "target": TARGET_FLAT_MB,
            "value": g,
            "met": g <= TARGET_FLAT_MB,
        }
    rows = [
        ("export wall (s)", "export_s", "{:.2f}"),
        ("import wall (s)", "import_s", "{:.2f}"),
        ("export+import wall (s)", "export_import_s", "{:.2f}"),
        ("export peak RSS (MiB)", "export_rss_mb", "{:.0f}"),
        ("import peak RSS (MiB)", "import_rss_mb", "{:.0f}"),
        ("export+import peak RSS (MiB)", "export_import_rss_mb", "{:.0f}"),
        ("list wall (s)", "list_s", "{:.2f}"),
        ("list peak RSS (MiB)", "list_rss_mb", "{:.0f}"),
    ]
    print()
    print(
        f"home: {info.sessions} sessions, {info.total_bytes / 2**20:.0f} MiB; newest {info.big.session_id[:8]} "
        f"{info.big.size / 2**20:.1f} MiB, {info.big.lines} lines; medians of {len(orig.samples['list'])} runs"
    )
    print(f"{'':32}{orig.label:>14}{ours.label:>14}{'orig/ours':>12}")
    for name, key, fmt in rows:
        print(
            f"{name:32}{fmt.format(so[key]):>14}{fmt.format(su[key]):>14}{so[key] / su[key]:>11.2f}x"
        )
    print()
    if scale:
        print(
            f"list over {scale['sessions']} sessions (s)   {scale['orig']['median_s']:>14.2f}{scale['ours']['median_s']:>14.2f}{ratios['list_time']:>11.2f}x"
        )
    lim = extras.get("limits")
    if lim and "cp" in lim:
        print(
            f"limits on the big transcript: cp {lim['cp']:.2f} s, zstd -1 -T2 {lim['zstd_compress']:.2f} s, "
            f"zstd -d {lim['zstd_decompress']:.2f} s; ours export at {lim['zstd_compress'] / su['export_s']:.0%} "
            f"of zstd -1 -T2, import at {lim['zstd_decompress'] / su['import_s']:.0%} of zstd -d, "
            f"{(lim['zstd_decompress'] + lim['cp']) / su['import_s']:.0%} of zstd -d + cp"
        )
    if upd:
        print(
            f"update of the big session {upd['update_s']:.2f} s, its first import {upd['first_s']:.2f} s "
            f"(update/first {upd['ratio_update_over_first']:.2f}, peak {upd['update_rss_mb']:.0f} MiB)"
        )
    if flat:
        sizes = [k for k in flat if k != "growth_mb"]
        print(
            "ours peak RSS export/import by session size: "
            + ", ".join(
                f"{k} MiB {flat[k]['export_rss_mb']:.0f}/{flat[k]['import_rss_mb']:.0f} MiB"
                for k in sizes
            )
            + f"; growth {flat['growth_mb']:+.1f} MiB"
        )
    print()
    for key, label in (
        ("export_import_time", "export+import time"),
        ("export_import_peak_mem", "export+import peak memory"),
        ("list_time", "list time (scale)"),
    ):
        if key not in targets:
            continue
        tg = targets[key]
        print(
            f"{label:28} ratio {ratios[key]:6.2f}x  target >= {tg['target']:g}x  {'MET' if tg['met'] else 'NOT MET'}"
        )
    for key, label, unit, op in (
        ("list_warm_s", "list warm (ours)", " s", "<="),
        ("update_over_first", "update / first import", "x", "<="),
        ("flat_memory_growth_mb", "peak growth (flat)", " MiB", "<="),
    ):
        if key in targets:
            tg = targets[key]
            print(
                f"{label:28} value {tg['value']:6.2f}{unit}  target {op} {tg['target']:g}{unit}  {'MET' if tg['met'] else 'NOT MET'}"
            )
    return {
        "extras": extras,
        "home": {k: v for k, v in asdict(info).items() if k != "small"},
        "tools": {
            t.label: {
                "cmd": t.cmd,
                "medians": s,
                "samples": {k: [asdict(x) for x in v] for k, v in t.samples.items()},
                "imports": t.checks,
            }
            for t, s in ((orig, so), (ours, su))
        },
        "ratios_orig_over_ours": ratios,
        "targets": targets,
        "all_met": all(v["met"] for v in targets.values()),
    }


# --- issue 17: list at scale, update vs first import, the machine's limits, flat memory ------


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def list_scale(
    tools: list[Tool], work: Path, sessions: int, repeat: int, seed: int
) -> dict[str, Any]:
    """`list` over a home of `sessions` small sessions; ours warm (its heads cache built by a
    first, unmeasured listing), interleaved rounds."""
    info = generate_home(work / "list-home", sessions=sessions, big_mb=1, seed=seed + 1)
    home = Path(info.home)
    out: dict[str, Any] = {"sessions": sessions, "seconds_to_generate": info.seconds}
    for t in tools:  # warm-up: page cache for both, heads cache for ours
        measure(
            [*t.cmd, "list"],
            cwd=home,
            env=tool_env(home, work, keep_pythonpath=t.keep_pythonpath),
            log=work / "logs" / f"{t.key}-list10k-warm.log",
        )
    walls: dict[str, list[float]] = {t.key: [] for t in tools}
    for rep in range(repeat):
        for t in tools if rep % 2 == 0 else tools[::-1]:
            log = work / "logs" / f"{t.key}-list10k-{rep}.log"
            smp = measure(
                [*t.cmd, "list"],
                cwd=home,
                env=tool_env(home, work, keep_pythonpath=t.keep_pythonpath),
                log=log,
            )
            if smp.rc != 0:
                raise fail(t, "list (scale)", log, f"exit {smp.rc}")
            walls[t.key].append(smp.wall)
    for t in tools:
        out[t.key] = {"median_s": _median(walls[t.key]), "samples": walls[t.key]}
    shutil.rmtree(home, ignore_errors=True)
    return out


def _prefix_bundle(ours: Tool, info: HomeInfo, work: Path, keep: float = 0.9) -> Path:
    """A bundle of the big session as it was earlier (its first `keep` of lines), made by
    cutting the transcript for a moment (restored with its size and mtime)."""
    src = Path(info.big.path)
    saved = work / "big-full.jsonl"
    shutil.copy2(src, saved)
    try:
        with saved.open("rb") as fh:
            lines = fh.readlines()
        with src.open("wb") as fh:
            fh.writelines(lines[: int(len(lines) * keep)])
        shutil.copystat(saved, src)
        bundle = work / "bundles" / "prefix.bundle"
        log = work / "logs" / "ours-export-prefix.log"
        smp = measure(
            [*ours.cmd, "export", "--latest", "-o", str(bundle)],
            cwd=Path(info.big.project_dir),
            env=tool_env(Path(info.home), work),
            log=log,
        )
        if smp.rc != 0:
            raise fail(ours, "export (prefix)", log, f"exit {smp.rc}")
    finally:
        shutil.copy2(saved, src)
        saved.unlink()
    return bundle


def update_vs_first(ours: Tool, info: HomeInfo, work: Path, repeat: int) -> dict[str, Any]:
    """Import of the big session over an earlier copy of it (an update) against its first
    import into an empty home, interleaved; ratio update / first."""
    prefix = _prefix_bundle(ours, info, work)
    full = work / "bundles" / "full.bundle"
    log = work / "logs" / "ours-export-full.log"
    smp = measure(
        [*ours.cmd, "export", "--latest", "-o", str(full)],
        cwd=Path(info.big.project_dir),
        env=tool_env(Path(info.home), work),
        log=log,
    )
    if smp.rc != 0:
        raise fail(ours, "export (full)", log, f"exit {smp.rc}")
    first: list[Sample] = []
    update: list[Sample] = []
    for rep in range(repeat):
        for kind in ("first", "update") if rep % 2 == 0 else ("update", "first"):
            dst = work / f"dst-{kind}-{rep}"
            project = dst / "work" / "app0-moved"
            project.mkdir(parents=True)
            env = tool_env(dst, work)
            cmd = [*ours.cmd, "import"]
            flags = ["--no-launch", "--project-dir", str(project), *ours.import_extra]
            if kind == "update":
                pre = measure(
                    [*cmd, str(prefix), *flags],
                    cwd=project,
                    env=env,
                    log=work / "logs" / f"ours-import-prefix-{rep}.log",
                )
                if pre.rc != 0:
                    raise fail(
                        ours,
                        "import (prefix)",
                        work / "logs" / f"ours-import-prefix-{rep}.log",
                        f"exit {pre.rc}",
                    )
            # The disk settled first, for both kinds: an update's earlier copy was imported
            # long before (its 90 MB are on disk, not still being written back behind the
            # update's own flushes), and a first import starts from the same quiet disk.
            os.sync()
            log = work / "logs" / f"ours-import-{kind}-{rep}.log"
            smp = measure([*cmd, str(full), *flags], cwd=project, env=env, log=log)
            text = log.read_text(errors="replace")
            want = "updated:" if kind == "update" else "imported:"
            if smp.rc != 0 or want not in text:
                raise fail(ours, f"import ({kind})", log, f"exit {smp.rc}, no {want!r} line")
            (update if kind == "update" else first).append(smp)
            shutil.rmtree(dst)
    ratios = [u.wall / f.wall for u, f in zip(update, first, strict=True)]
    return {
        "first_s": _median([x.wall for x in first]),
        "update_s": _median([x.wall for x in update]),
        "update_rss_mb": _median([x.rss_mb for x in update]),
        "ratio_update_over_first": _median(ratios),
        "samples": {"first": [asdict(x) for x in first], "update": [asdict(x) for x in update]},
    }


def limits(ours: Tool, info: HomeInfo, work: Path, repeat: int) -> dict[str, Any]:
    """What the machine does with the big transcript without commuter: `cp`, `zstd -1 -T2`
    (compress), `zstd -d` (decompress); each once per round, medians."""
    src = Path(info.big.path)
    zst = work / "limit.zst"
    env = dict(os.environ)
    cmds = {
        "cp": ["cp", str(src), str(work / "limit.copy")],
        "zstd_compress": ["zstd", "-q", "-f", "-1", "-T2", str(src), "-o", str(zst)],
        "zstd_decompress": ["zstd", "-q", "-f", "-d", str(zst), "-o", str(work / "limit.out")],
    }
    if shutil.which("zstd") is None:
        return {"skipped": "no zstd on PATH"}
    walls: dict[str, list[float]] = {k: [] for k in cmds}
    for rep in range(repeat):
        for key, cmd in cmds.items():
            smp = measure(cmd, cwd=work, env=env, log=work / "logs" / f"limit-{key}-{rep}.log")
            if smp.rc != 0:
                raise BenchError(f"{shlex.join(cmd)} failed (exit {smp.rc})")
            walls[key].append(smp.wall)
    for name in ("limit.copy", "limit.zst", "limit.out"):
        (work / name).unlink(missing_ok=True)
    return {k: _median(v) for k, v in walls.items()}


def flat_memory(ours: Tool, work: Path, sizes: list[float], seed: int) -> dict[str, Any]:
    """Ours only: peak RSS of export and of import of a session of each size (MiB)."""
    out: dict[str, Any] = {}
    for mb in sizes:
        info = generate_home(work / f"flat-{mb:g}", sessions=20, big_mb=mb, seed=seed + 2)
        home = Path(info.home)
        bundle = work / "bundles" / f"flat-{mb:g}.bundle"
        ex = measure(
            [*ours.cmd, "export", "--latest", "-o", str(bundle)],
            cwd=Path(info.big.project_dir),
            env=tool_env(home, work),
            log=work / "logs" / f"flat-export-{mb:g}.log",
        )
        dst = work / f"flat-dst-{mb:g}"
        project = dst / "work" / "app0-moved"
        project.mkdir(parents=True)
        im = measure(
            [
                *ours.cmd,
                "import",
                str(bundle),
                "--no-launch",
                "--project-dir",
                str(project),
                *ours.import_extra,
            ],
            cwd=project,
            env=tool_env(dst, work),
            log=work / "logs" / f"flat-import-{mb:g}.log",
        )
        if ex.rc or im.rc:
            raise BenchError(
                f"flat-memory run at {mb:g} MiB failed (export {ex.rc}, import {im.rc})"
            )
        out[f"{mb:g}"] = {
            "export_rss_mb": ex.rss_mb,
            "import_rss_mb": im.rss_mb,
            "export_s": ex.wall,
            "import_s": im.wall,
        }
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(dst, ignore_errors=True)
        bundle.unlink(missing_ok=True)
    first, last = out[f"{sizes[0]:g}"], out[f"{sizes[-1]:g}"]
    out["growth_mb"] = max(last["export_rss_mb"], last["import_rss_mb"]) - max(
        first["export_rss_mb"], first["import_rss_mb"]
    )
    return out


def load_now() -> str:
    """The machine's load averages (1, 5, 15 min), as `uptime` shows them."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--ours",
        help="command line of the commuter under test (default: this Python's -m commuter)",
    )
    ap.add_argument(
        "--ours-import-flags", default="--yes", help="extra flags for our import (default: --yes)"
    )
    ap.add_argument(
        "--orig-venv",
        type=Path,
        default=HERE / ".venv-orig",
        help="venv holding commuter 0.2.0 (created if missing)",
    )
    ap.add_argument("--big-mb", type=float, default=100.0, help="size of the newest session in MiB")
    ap.add_argument("--sessions", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=20261125)
    ap.add_argument(
        "--work-dir", type=Path, help="where to build homes and bundles (default: a new temp dir)"
    )
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs, synthetic home)")
    ap.add_argument("--orig-only", action="store_true", help="measure 0.2.0 only (no ratios)")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--check", action="store_true", help="exit 1 if a target is not met")
    ap.add_argument(
        "--list-sessions",
        type=int,
        default=10_000,
        help="sessions of the list-at-scale home (0: skip that part)",
    )
    ap.add_argument(
        "--flat-mb",
        default="10,400",
        help="session sizes (MiB, comma-separated) for ours' peak memory (empty: skip)",
    )
    ap.add_argument("--no-extras", action="store_true", help="only the export/import/list rounds")
    args = ap.parse_args(argv)

    orig_exe = ensure_orig_venv(args.orig_venv.resolve())
    orig = Tool("0.2.0", "orig", [str(orig_exe)], [], keep_pythonpath=False)
    ours_cmd = shlex.split(args.ours) if args.ours else [sys.executable, "-m", "commuter"]
    if "/" in ours_cmd[0]:
        ours_cmd[0] = os.path.abspath(ours_cmd[0])  # tools run elsewhere; keep venv symlinks
    ours = Tool("ours", "ours", ours_cmd, shlex.split(args.ours_import_flags))
    tools = [orig] if args.orig_only else [orig, ours]

    work = (args.work_dir or Path(tempfile.mkdtemp(prefix="commuter-bench-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    print(f"work dir: {work}", flush=True)
    load_start = load_now()
    print(f"load average at start: {load_start} ({os.cpu_count()} CPUs)", flush=True)
    extras: dict[str, Any] = {}
    try:
        info = generate_home(
            work / "src-home", sessions=args.sessions, big_mb=args.big_mb, seed=args.seed
        )
        print(
            f"generated {info.sessions} sessions ({info.total_bytes / 2**20:.0f} MiB) in {info.seconds:.1f} s; "
            f"newest {info.big.session_id} = {info.big.size / 2**20:.1f} MiB in {info.big.project_dir}",
            flush=True,
        )
        for t in tools:
            log = work / "logs" / f"{t.key}-warmup.log"
            s = measure(
                [*t.cmd, "--help"],
                cwd=work,
                env=tool_env(work / "src-home", work, keep_pythonpath=t.keep_pythonpath),
                log=log,
            )
            if s.rc != 0:
                raise fail(t, "--help", log, f"exit {s.rc}")
        # one unmeasured round: every module each command loads is compiled and cached,
        # and the source transcript is in the page cache, for both tools alike
        run_round(tools, -1, info, work)
        for t in tools:
            t.samples.clear()
            t.checks.clear()
        for rep in range(args.repeat):
            run_round(tools, rep, info, work)
            print(
                f"round {rep + 1}/{args.repeat}: "
                + "  ".join(
                    f"{t.label}: export {t.samples['export'][-1].wall:.2f}s/{t.samples['export'][-1].rss_mb:.0f}MiB "
                    f"import {t.samples['import'][-1].wall:.2f}s/{t.samples['import'][-1].rss_mb:.0f}MiB "
                    f"list {t.samples['list'][-1].wall:.2f}s"
                    for t in tools
                ),
                flush=True,
            )
        if not args.orig_only and not args.no_extras:
            extras["limits"] = limits(ours, info, work, args.repeat)
            print(f"limits: {extras['limits']}", flush=True)
            extras["update"] = update_vs_first(ours, info, work, args.repeat)
            print(
                f"update {extras['update']['update_s']:.2f} s vs first {extras['update']['first_s']:.2f} s",
                flush=True,
            )
            if args.list_sessions:
                extras["list_scale"] = list_scale(
                    tools, work, args.list_sessions, args.repeat, args.seed
                )
                print(
                    f"list over {args.list_sessions}: "
                    + "  ".join(
                        f"{t.label} {extras['list_scale'][t.key]['median_s']:.2f}s" for t in tools
                    ),
                    flush=True,
                )
            sizes = [float(x) for x in args.flat_mb.split(",") if x.strip()]
            if sizes:
                extras["flat"] = flat_memory(ours, work, sizes, args.seed)
        extras["load"] = {"start": load_start, "end": load_now(), "cpus": os.cpu_count()}
        if args.orig_only:
            doc: dict[str, Any] = {
                "home": {k: v for k, v in asdict(info).items() if k != "small"},
                "tools": {
                    orig.label: {
                        "cmd": orig.cmd,
                        "medians": summarize(orig),
                        "imports": orig.checks,
                    }
                },
            }
            print(json.dumps(doc["tools"][orig.label]["medians"], indent=2))
        else:
            doc = report(orig, ours, info, extras)
            print(f"load average: {load_start} at start, {extras['load']['end']} at the end")
        doc["config"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(doc, indent=2) + "\n")
            print(f"results: {args.json}")
    except BenchError as e:
        print(f"BENCHMARK FAILED: {e}", file=sys.stderr)
        print(f"(work dir kept: {work})", file=sys.stderr)
        return 2
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"kept: {work}")
    if args.check and not args.orig_only and not doc["all_met"]:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
