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
TARGET_TIME = 3.0
TARGET_MEM = 4.0
TARGET_LIST = 0.95  # "no slower", with 5 % allowed for noise on shared machines


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
    drop = {"CLAUDE_CONFIG_DIR"} | (set() if keep_pythonpath else {"PYTHONPATH"})
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


def report(orig: Tool, ours: Tool, info: HomeInfo) -> dict[str, Any]:
    """Print the side-by-side table and return the result document."""
    so, su = summarize(orig), summarize(ours)
    ratios = {
        "export_import_time": so["export_import_s"] / su["export_import_s"],
        "export_import_peak_mem": so["export_import_rss_mb"] / su["export_import_rss_mb"],
        "list_time": so["list_s"] / su["list_s"],
    }
    targets = {
        "export_import_time": {
            "target": TARGET_TIME,
            "met": ratios["export_import_time"] >= TARGET_TIME,
        },
        "export_import_peak_mem": {
            "target": TARGET_MEM,
            "met": ratios["export_import_peak_mem"] >= TARGET_MEM,
        },
        "list_time": {"target": TARGET_LIST, "met": ratios["list_time"] >= TARGET_LIST},
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
    for key, label in (
        ("export_import_time", "export+import time"),
        ("export_import_peak_mem", "export+import peak memory"),
        ("list_time", "list time"),
    ):
        tg = targets[key]
        print(
            f"{label:28} ratio {ratios[key]:6.2f}x  target >= {tg['target']:g}x  {'MET' if tg['met'] else 'NOT MET'}"
        )
    return {
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
            doc = report(orig, ours, info)
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
