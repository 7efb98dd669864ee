"""Codex benchmark: export+import of a big Codex rollout against the Claude backend's export+import
of a transcript of the same size, interleaved in one run, at two sizes (memory flat)."""

# ruff: noqa: E501  (long f-strings in the report)

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_core import BenchError, Sample, generate_home, measure, tool_env
from make_home import MIB, TextPool, dumps, iso

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
FIXTURE = REPO / "tests" / "data" / "codex" / "home"
FIXTURE_HOME = "/tmp/rcfix/codex/home"
TEMPLATE = "01a20de1-ba31-7a80-9ef1-1e5d41423c07"  # the fixture's tool-tour thread
TARGET_TIME = 1.5  # codex export+import / claude export+import, at the big size
FLAT_MIB = 16.0  # peak RSS may grow this much from the small to the big size


@dataclass
class Case:
    """One agent at one size: its source home, project, session id and samples."""

    agent: str
    mb: float
    home: Path
    project: Path
    session_id: str
    size: int
    lines: int
    samples: dict[str, list[Sample]] = field(default_factory=dict)


# --- the synthetic codex home ------------------------------------------------------------------


def _uuid7(rng: random.Random, when: datetime) -> str:
    raw = bytearray(int(when.timestamp() * 1000).to_bytes(6, "big") + rng.randbytes(10))
    raw[6] = (raw[6] & 0x0F) | 0x70
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def install_fixture(home: Path) -> None:
    """The real 0.169.0 ~/.codex of tests/data at `home` (paths moved there; rows via SQLite)."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copytree(FIXTURE, home, dirs_exist_ok=True)
    for path in (home / ".codex" / "sessions").rglob("*.jsonl"):
        path.write_bytes(path.read_bytes().replace(FIXTURE_HOME.encode(), str(home).encode()))
    conn = sqlite3.connect(home / ".codex" / "state_5.sqlite")
    try:
        with conn:
            conn.execute(
                "UPDATE threads SET rollout_path = replace(rollout_path, ?, ?), "
                "cwd = replace(cwd, ?, ?)",
                (FIXTURE_HOME, str(home)) * 2,
            )
    finally:
        conn.close()


def make_codex_home(home: Path, *, big_mb: float, seed: int) -> Case:
    """The fixture's codex home plus one big thread in `<home>/projects/app0`, newest of all: the
    tool-tour turn of the real rollout repeated with fresh ordinals, times and ids, its command
    outputs, file contents and patches made of code/log text (as make_home.py does for Claude)."""
    home = home.resolve()
    install_fixture(home)
    rng = random.Random(seed)
    pool = TextPool(rng)
    project = home / "projects" / "app0"
    (project / "src").mkdir(parents=True, exist_ok=True)
    (project / "README.md").write_text("# app0\n")
    src = next((home / ".codex" / "sessions").rglob(f"rollout-*-{TEMPLATE}.jsonl"))
    text = src.read_text().replace(f"{home}/projects/my.app", str(project))
    records = [json.loads(x) for x in text.splitlines() if x.strip()]
    start = datetime(2026, 11, 25, 9, 0, 0, tzinfo=UTC)
    tid = _uuid7(rng, start)
    text_ids = json.dumps(records).replace(TEMPLATE, tid)
    records = json.loads(text_ids)
    head, turn = records[:6], records[6:]
    name = f"rollout-{start:%Y-%m-%dT%H-%M-%S}-{tid}.jsonl"
    path = home / ".codex" / "sessions" / f"{start:%Y}" / f"{start:%m}" / f"{start:%d}" / name
    files = [f"{project}/src/{w}_{i}.py" for i, w in enumerate(("core", "api", "db", "cli") * 10)]
    now = start
    ordinal = 0
    size = 0
    n = 0
    target = int(big_mb * MIB)

    def emit(out: Any, rec: dict[str, Any]) -> None:
        nonlocal ordinal, size, n, now
        rec["ordinal"] = ordinal
        rec["timestamp"] = iso(now)[:23] + "Z"
        ordinal += 1
        now += timedelta(milliseconds=rng.randint(5, 900))
        line = dumps(rec) + "\n"
        out.write(line)
        size += len(line.encode())
        n += 1

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as out:
        for rec in head:
            emit(out, rec)
        while size < target:
            turn_id = _uuid7(rng, now)
            body = pool.chunk(
                pool.code if rng.random() < 0.6 else pool.log, rng.randint(2, 60) * 1024
            )
            file = rng.choice(files)
            for tmpl in turn:
                rec = copy.deepcopy(tmpl)
                p = rec["payload"]
                kind = p.get("type")
                if "turn_id" in p:
                    p["turn_id"] = turn_id
                if kind == "function_call_output":
                    p["output"] = (
                        "Chunk ID: 3d64ad\nWall time: 0.0000 seconds\nProcess exited with code 0\nOutput:\n"
                        + body
                    )
                elif kind == "function_call":
                    p["arguments"] = p["arguments"].replace(f"{project}/a.txt", file)
                elif kind == "item_completed" and isinstance(p.get("item"), dict):
                    item = p["item"]
                    if item.get("type") == "CommandExecution":
                        item["aggregated_output"] = body
                    elif item.get("type") == "FileChange":
                        item["changes"] = {
                            file: {"type": "add", "content": pool.chunk(pool.code, 2048)}
                        }
                elif kind == "message" and p.get("role") == "user" and rec is not None:
                    for part in p.get("content") or []:
                        if isinstance(part, dict) and not part.get("text", "").startswith("<"):
                            part["text"] = (
                                f"Look at {file} and fix the failing test.\n"
                                + pool.chunk(pool.log, 512)
                            )
                emit(out, rec)
    path.chmod(0o600)
    stamp = now.timestamp()
    os.utime(path, (stamp, stamp))
    conn = sqlite3.connect(home / ".codex" / "state_5.sqlite")
    try:
        with conn:
            cols = [r[1] for r in conn.execute("PRAGMA table_info(threads)")]
            row = dict(
                zip(
                    cols,
                    conn.execute("SELECT * FROM threads WHERE id = ?", (TEMPLATE,)).fetchone(),
                    strict=True,
                )
            )
            ms = int(stamp * 1000)
            row.update(
                id=tid,
                rollout_path=str(path),
                cwd=str(project),
                created_at=int(start.timestamp()),
                created_at_ms=int(start.timestamp() * 1000),
                updated_at=ms // 1000,
                updated_at_ms=ms,
                recency_at=ms // 1000,
                recency_at_ms=ms,
                title="Look at the failing test",
                first_user_message="Look at the failing test",
                preview="Look at the failing test",
            )
            conn.execute(
                f"INSERT INTO threads ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                list(row.values()),
            )
    finally:
        conn.close()
    return Case("codex", big_mb, home, project, tid, size, n)


# --- measuring ---------------------------------------------------------------------------------


def env_for(home: Path, work: Path) -> dict[str, str]:
    env = tool_env(home, work)
    env.pop("CODEX_HOME", None)
    env.pop("GEMINI_CLI_HOME", None)
    return env


def verify(case: Case, dst_home: Path, dst_project: Path, log: Path) -> None:
    """The import wrote the session where its agent looks, whole, its cwd translated."""
    sid = case.session_id
    if case.agent == "codex":
        found = sorted((dst_home / ".codex" / "sessions").rglob(f"rollout-*-{sid}.jsonl"))
        conn = sqlite3.connect(
            f"{(dst_home / '.codex' / 'state_5.sqlite').as_uri()}?mode=ro", uri=True
        )
        try:
            row = conn.execute(
                "SELECT cwd, rollout_path FROM threads WHERE id = ?", (sid,)
            ).fetchone()
        finally:
            conn.close()
        if row is None or row[0] != str(dst_project) or not found or row[1] != str(found[0]):
            raise BenchError(f"codex import: thread row {row} / rollout {found} wrong; see {log}")
    else:
        found = sorted((dst_home / ".claude" / "projects").glob(f"*/{sid}.jsonl"))
    if not found:
        raise BenchError(f"{case.agent} import: {sid} not found under {dst_home}; see {log}")
    with open(found[0], "rb") as f:
        first = f.readline()
        n = 1 + sum(1 for _ in f)
    if n < case.lines:
        raise BenchError(f"{case.agent} import: {n} lines, the source has {case.lines}; see {log}")
    if case.agent == "codex":
        cwd = json.loads(first)["payload"]["cwd"]
        if cwd != str(dst_project):
            raise BenchError(f"codex import: session_meta cwd {cwd!r} not translated; see {log}")


def run_case(cmd: list[str], case: Case, rep: int, work: Path) -> None:
    """Export the case's session, import it at a second home (codex: one whose databases
    exist), check it, clean up."""
    key = f"{case.agent}-{case.mb:g}-{rep}"
    bundle = work / "bundles" / f"{key}.bundle"
    bundle.parent.mkdir(parents=True, exist_ok=True)
    log = work / "logs" / f"{key}-export.log"
    s = measure(
        [*cmd, "export", "--agent", case.agent, "--latest", "-o", str(bundle)],
        cwd=case.project,
        env=env_for(case.home, work),
        log=log,
    )
    if s.rc != 0 or not bundle.is_file():
        raise BenchError(f"{case.agent} export failed (exit {s.rc}); see {log}")
    case.samples.setdefault("export", []).append(s)
    dst_home = work / f"dst-{key}"
    if case.agent == "codex":
        install_fixture(dst_home)
    dst_project = dst_home / "work" / "app0 moved.v2"
    dst_project.mkdir(parents=True)
    log = work / "logs" / f"{key}-import.log"
    s = measure(
        [*cmd, "import", str(bundle), "--no-launch", "--yes", "--project-dir", str(dst_project)],
        cwd=dst_project,
        env=env_for(dst_home, work),
        log=log,
    )
    if s.rc != 0:
        raise BenchError(f"{case.agent} import failed (exit {s.rc}); see {log}")
    case.samples.setdefault("import", []).append(s)
    verify(case, dst_home, dst_project, log)
    shutil.rmtree(dst_home)
    bundle.unlink()


def medians(case: Case) -> dict[str, float]:
    ex, im = case.samples["export"], case.samples["import"]
    return {
        "export_s": statistics.median(s.wall for s in ex),
        "import_s": statistics.median(s.wall for s in im),
        "export_import_s": statistics.median(a.wall + b.wall for a, b in zip(ex, im, strict=True)),
        "export_rss_mb": statistics.median(s.rss_mb for s in ex),
        "import_rss_mb": statistics.median(s.rss_mb for s in im),
        "peak_rss_mb": max(max(s.rss_mb for s in ex), max(s.rss_mb for s in im)),
    }


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--big-mb", type=float, default=100.0, help="the big session, MiB (ratio measured here)"
    )
    ap.add_argument(
        "--small-mb", type=float, default=10.0, help="the small session, MiB (memory flatness)"
    )
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=20261202)
    ap.add_argument(
        "--cmd", default="", help="commuter command line (default: this Python's -m commuter)"
    )
    ap.add_argument("--work-dir", type=Path)
    ap.add_argument("--keep", action="store_true", help="keep the work dir")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = ap.parse_args(argv)
    cmd = args.cmd.split() if args.cmd else [sys.executable, "-m", "commuter"]
    work = (args.work_dir or Path(tempfile.mkdtemp(prefix="commuter-bench-codex-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    print(f"work dir: {work}", flush=True)
    ok = False
    try:
        cases: list[Case] = []
        for mb in (args.small_mb, args.big_mb):
            info = generate_home(work / f"claude-{mb:g}", sessions=7, big_mb=mb, seed=args.seed)
            cases.append(
                Case(
                    "claude",
                    mb,
                    Path(info.home),
                    Path(info.big.project_dir),
                    info.big.session_id,
                    info.big.size,
                    info.big.lines,
                )
            )
            cases.append(make_codex_home(work / f"codex-{mb:g}", big_mb=mb, seed=args.seed))
        for c in cases:
            print(
                f"{c.agent} {c.mb:g}: {c.session_id} {c.size / MIB:.1f} MiB, {c.lines} lines",
                flush=True,
            )
        measure(
            [*cmd, "--help"], cwd=work, env=env_for(work, work), log=work / "logs" / "warmup.log"
        )
        for rep in range(args.repeat):
            for mb in (args.small_mb, args.big_mb):
                pair = [c for c in cases if c.mb == mb]
                for c in pair if rep % 2 == 0 else pair[::-1]:
                    run_case(cmd, c, rep, work)
            print(
                f"round {rep + 1}/{args.repeat}: "
                + "  ".join(
                    f"{c.agent}@{c.mb:g}: {c.samples['export'][-1].wall:.2f}+{c.samples['import'][-1].wall:.2f}s "
                    f"{max(c.samples['export'][-1].rss_mb, c.samples['import'][-1].rss_mb):.0f}MiB"
                    for c in cases
                ),
                flush=True,
            )
        by = {(c.agent, c.mb): medians(c) for c in cases}
        cx, cl = by[("codex", args.big_mb)], by[("claude", args.big_mb)]
        ratio = cx["export_import_s"] / cl["export_import_s"]
        growth = {
            a: by[(a, args.big_mb)]["peak_rss_mb"] - by[(a, args.small_mb)]["peak_rss_mb"]
            for a in ("codex", "claude")
        }
        print()
        print(f"medians of {args.repeat} interleaved rounds")
        print(
            f"{'':10}{'MiB':>6}{'export s':>10}{'import s':>10}{'exp+imp s':>11}{'exp RSS':>9}{'imp RSS':>9}{'peak':>7}"
        )
        for c in cases:
            m = by[(c.agent, c.mb)]
            print(
                f"{c.agent:10}{c.mb:>6g}{m['export_s']:>10.2f}{m['import_s']:>10.2f}{m['export_import_s']:>11.2f}"
                f"{m['export_rss_mb']:>9.0f}{m['import_rss_mb']:>9.0f}{m['peak_rss_mb']:>7.0f}"
            )
        time_met = ratio <= TARGET_TIME
        flat_met = growth["codex"] <= FLAT_MIB
        print()
        print(
            f"codex/claude export+import time at {args.big_mb:g} MiB: {ratio:.2f}x  target <= {TARGET_TIME:g}x  {'MET' if time_met else 'NOT MET'}"
        )
        print(
            f"peak RSS growth {args.small_mb:g} -> {args.big_mb:g} MiB: codex {growth['codex']:+.1f} MiB, "
            f"claude {growth['claude']:+.1f} MiB  target codex <= {FLAT_MIB:g} MiB  {'MET' if flat_met else 'NOT MET'}"
        )
        doc = {
            "cases": [
                {
                    **{k: v for k, v in asdict(c).items() if k != "samples"},
                    "home": str(c.home),
                    "project": str(c.project),
                    "medians": by[(c.agent, c.mb)],
                    "samples": {k: [asdict(s) for s in v] for k, v in c.samples.items()},
                }
                for c in cases
            ],
            "ratio_codex_over_claude": ratio,
            "rss_growth_mb": growth,
            "targets": {
                "time": {"target": TARGET_TIME, "met": time_met},
                "flat": {"target": FLAT_MIB, "met": flat_met},
            },
        }
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(doc, indent=2, default=str) + "\n")
        ok = True
        return 1 if args.check and not (time_met and flat_met) else 0
    except BenchError as exc:
        print(f"bench_codex: {exc}", file=sys.stderr)
        return 2
    finally:
        if ok and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
