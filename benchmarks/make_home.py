"""Generate a synthetic HOME full of Claude Code 2.1.197 sessions, for benchmarks."""

# ruff: noqa: E501  (long f-strings that build sample output)

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

VERSION = "2.1.197"
MODEL = "claude-opus-4-8"
PROJECT_NAMES = ("app0", "my.app", "api-server", "data_pipeline", "infra", "docs-site")
BIG_PROJECT = "app0"
BASE_TIME = datetime(2026, 9, 1, 8, 0, 0, tzinfo=UTC)
MAX_BACKUPS_PER_SESSION = 100
MAX_PERSISTED_PER_SESSION = 40
MIB = 1024 * 1024

WORDS = (  # noqa: SIM905
    "alpha beta gamma delta config parser handler request response session bundle "
    "export import token cache index buffer stream reader writer client server "
    "router model view update delete create fetch retry backoff timeout queue worker "
    "schedule payload header schema migrate record field value result error status "
    "manifest checksum archive path folder project branch commit diff patch merge "
    "rebase build deploy test fixture mock "
).split()
PROMPTS = (
    "Fix the failing test in {f}",
    "Refactor {f} so the parser streams instead of loading everything",
    "Why does the build break after the last merge? Look at {f}",
    "Add retries with backoff to the client in {f}",
    "Explain what {f} does and write a short summary",
    "Rename the handler in {f} and update every caller",
    "Can you make the CLI output nicer? Start from {f} — keep it short",
    "Add type hints to {f} and run mypy",
    "The café endpoint returns 500 for ünïcode names, check {f}",
    "Write tests for the edge cases in {f}",
)
USAGE = {
    "input_tokens": 10,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 0,
    "output_tokens": 3,
    "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0},
    "service_tier": "standard",
    "cache_creation": {"ephemeral_1h_input_tokens": 0, "ephemeral_5m_input_tokens": 0},
    "inference_geo": "",
    "iterations": [],
    "speed": "standard",
}


def claude_project_folder(path: str) -> str:
    """Claude Code's folder name under ~/.claude/projects/ for a project path (§1.2)."""
    units = path.encode("utf-16-le")
    codes = [int.from_bytes(units[i : i + 2], "little") for i in range(0, len(units), 2)]
    enc = "".join(chr(c) if chr(c).isascii() and chr(c).isalnum() else "-" for c in codes)
    if len(enc) <= 200:
        return enc
    h = 0
    for c in codes:
        h = (h * 31 + c) & 0xFFFFFFFF
    h = abs(h - (1 << 32) if h & 0x80000000 else h)
    digits = ""
    while True:
        h, r = divmod(h, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[r] + digits
        if h == 0:
            return enc[:200] + "-" + digits


def dumps(obj: Any) -> str:
    """Serialise one entry the way Claude Code does (compact, raw UTF-8)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def iso(t: datetime) -> str:
    """ISO timestamp with milliseconds and Z, as in the transcripts."""
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


@dataclass
class SessionInfo:
    """What the benchmark needs to know about one generated session."""

    session_id: str
    project_dir: str
    path: str
    size: int
    lines: int
    first_ts: str
    last_ts: str


@dataclass
class HomeInfo:
    """Summary of a generated home."""

    home: str
    projects: list[str]
    big: SessionInfo
    sessions: int
    total_bytes: int
    seconds: float
    small: list[SessionInfo] = field(default_factory=list)


class TextPool:
    """Pre-generated code and log lines; slices of them make file contents and outputs."""

    def __init__(self, rng: random.Random) -> None:
        """Build the pools once (a few MB) so generation stays fast."""
        self.rng = rng
        self.code = [self._code_line(i) for i in range(40000)]
        self.log = [self._log_line(i) for i in range(40000)]

    def _code_line(self, i: int) -> str:
        """One line of plausible Python."""
        r = self.rng
        w = r.sample(WORDS, 4)
        kind = i % 7
        indent = "    " * r.randint(0, 3)
        if kind == 0:
            return f"{indent}def {w[0]}_{w[1]}(self, {w[2]}: str, {w[3]}: int = {r.randint(0, 99)}) -> None:"
        if kind == 1:
            return f'{indent}"""Return the {w[0]} {w[1]} for the given {w[2]}."""'
        if kind == 2:
            return f"{indent}{w[0]}_{w[1]} = self.{w[2]}.get({w[3]!r}, {r.randint(0, 9999)})"
        if kind == 3:
            return f"{indent}if {w[0]} is None or {w[1]} > {r.randint(1, 500)}:"
        if kind == 4:
            return f'{indent}raise {w[0].title()}Error(f"cannot {w[1]} {{{w[2]}}}: {w[3]}")'
        if kind == 5:
            return f"{indent}# {w[0]} the {w[1]} before the {w[2]}, keeps {w[3]} stable"
        return f"{indent}return [{w[0]} for {w[0]} in {w[1]}s if {w[0]}.{w[2]}]"

    def _log_line(self, i: int) -> str:
        """One line of build/test/ls output."""
        r = self.rng
        w = r.sample(WORDS, 3)
        kind = i % 5
        if kind == 0:
            return f"tests/test_{w[0]}.py::test_{w[1]}_{w[2]} PASSED{' ' * r.randint(1, 20)}[{r.randint(0, 100):3d}%]"
        if kind == 1:
            return f"-rw-r--r-- 1 dev dev {r.randint(100, 99999):6d} Nov {r.randint(1, 30):2d} 12:{r.randint(10, 59)} {w[0]}_{w[1]}.py"
        if kind == 2:
            return f"INFO  [{w[0]}.{w[1]}] {w[2]} finished in {r.random() * 900:.1f}ms (id={r.getrandbits(48):012x})"
        if kind == 3:
            return f"src/{w[0]}/{w[1]}.py:{r.randint(1, 900)}:{r.randint(1, 80)}: E501 line too long ({r.randint(89, 140)} > 88)"
        return f"  {w[0]}-{w[1]}@{r.randint(0, 9)}.{r.randint(0, 30)}.{r.randint(0, 9)}  resolved  {w[2]}"

    def chunk(self, lines: list[str], nbytes: int) -> str:
        """A run of consecutive pool lines about nbytes long."""
        n = max(1, nbytes // 48)
        start = self.rng.randrange(0, len(lines) - n) if n < len(lines) else 0
        return "\n".join(lines[start : start + n])


class SessionWriter:
    """Builds one session transcript entry by entry, keeping the uuid chain and clock."""

    def __init__(
        self,
        rng: random.Random,
        pool: TextPool,
        claude_dir: Path,
        project_dir: str,
        start: datetime,
        interactive: bool,
    ) -> None:
        """Start a new session of project_dir at time start."""
        self.rng = rng
        self.pool = pool
        self.claude_dir = claude_dir
        self.cwd = project_dir
        self.enc = claude_project_folder(project_dir)
        self.sid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        self.now = start
        self.parent: str | None = None
        self.out: list[str] = []
        self.size = 0
        self.interactive = interactive
        self.files = [
            f"{project_dir}/src/{rng.choice(WORDS)}/{rng.choice(WORDS)}_{i}.py" for i in range(40)
        ]
        self.versions: dict[str, int] = {}
        self.backups = 0
        self.persisted = 0
        self.first_ts = iso(start)
        self.prompts: list[tuple[str, datetime]] = []

    def _uuid(self) -> str:
        """A deterministic random uuid4 string."""
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _tick(self, lo: float, hi: float) -> str:
        """Advance the clock by a random amount and return the timestamp."""
        self.now += timedelta(seconds=self.rng.uniform(lo, hi))
        return iso(self.now)

    def _emit(self, entry: dict[str, Any]) -> None:
        """Append one line."""
        line = dumps(entry)
        self.out.append(line)
        self.size += len(line.encode()) + 1

    def _common(self) -> dict[str, Any]:
        """Fields every conversation entry carries."""
        return {
            "userType": "external",
            "entrypoint": "cli" if self.interactive else "sdk-cli",
            "cwd": self.cwd,
            "sessionId": self.sid,
            "version": VERSION,
            "gitBranch": "main",
        }

    def _assistant(self, msg_id: str, block: dict[str, Any], stop: str | None) -> str:
        """Emit one assistant entry holding one content block; return its uuid."""
        u = self._uuid()
        self._emit(
            {
                "parentUuid": self.parent,
                "isSidechain": False,
                "message": {
                    "id": msg_id,
                    "type": "message",
                    "role": "assistant",
                    "model": MODEL,
                    "content": [block],
                    "stop_reason": stop,
                    "stop_sequence": None,
                    "usage": USAGE,
                    "stop_details": None,
                },
                "type": "assistant",
                "uuid": u,
                "timestamp": self._tick(0.5, 8.0),
            }
            | self._common()
        )
        self.parent = u
        return u

    def turn(self, tools: int, scale: float) -> None:
        """One user prompt, a few tool calls, a final answer."""
        r = self.rng
        prompt = r.choice(PROMPTS).format(f=r.choice(self.files))
        prompt_id = self._uuid()
        ts = self._tick(20, 600)
        self.prompts.append((prompt, self.now))
        if not self.interactive:
            self._emit(
                {
                    "type": "queue-operation",
                    "operation": "enqueue",
                    "timestamp": ts,
                    "sessionId": self.sid,
                    "content": prompt,
                }
            )
            self._emit(
                {
                    "type": "queue-operation",
                    "operation": "dequeue",
                    "timestamp": ts,
                    "sessionId": self.sid,
                }
            )
        u = self._uuid()
        user: dict[str, Any] = {
            "parentUuid": self.parent,
            "isSidechain": False,
            "promptId": prompt_id,
            "type": "user",
            "message": {"role": "user", "content": prompt},
            "uuid": u,
            "timestamp": self._tick(0.05, 0.2),
            "permissionMode": "default",
        }
        if self.interactive:
            user["origin"] = {"kind": "human"}
        user["promptSource"] = "typed" if self.interactive else "sdk"
        self._emit(user | self._common())
        self.parent = u
        snap_ts = self._tick(0.01, 0.05)
        tracked: dict[str, Any] = {}
        self._emit(
            {
                "type": "file-history-snapshot",
                "messageId": u,
                "snapshot": {"messageId": u, "trackedFileBackups": {}, "timestamp": snap_ts},
                "isSnapshotUpdate": False,
            }
        )
        for _ in range(tools):
            self._tool_cycle(prompt_id, u, snap_ts, tracked, scale)
        msg_id = "msg_" + f"{r.getrandbits(96):024x}"
        self._assistant(
            msg_id, {"type": "text", "text": self._prose(r.randint(80, 900))}, "end_turn"
        )
        if self.interactive:
            sys_u = self._uuid()
            self._emit(
                {
                    "parentUuid": self.parent,
                    "isSidechain": False,
                    "type": "system",
                    "subtype": "turn_duration",
                    "durationMs": r.randint(2000, 400000),
                    "messageCount": len(self.out),
                    "timestamp": self._tick(0.01, 0.1),
                    "uuid": sys_u,
                    "isMeta": False,
                }
                | self._common()
            )
            self.parent = sys_u

    def _prose(self, n: int) -> str:
        """Assistant-style text of about n characters, naming a file or two."""
        r = self.rng
        parts: list[str] = []
        total = 0
        while total < n:
            s = f"I {r.choice(('checked', 'updated', 'read', 'ran'))} the {r.choice(WORDS)} {r.choice(WORDS)}"
            if r.random() < 0.3:
                s += f" in `{r.choice(self.files)}`"
            s += ". "
            parts.append(s)
            total += len(s)
        return "".join(parts)

    def _tool_cycle(
        self, prompt_id: str, user_uuid: str, snap_ts: str, tracked: dict[str, Any], scale: float
    ) -> None:
        """Assistant text + tool_use, then the tool_result user entry (and snapshot update)."""
        r = self.rng
        msg_id = "msg_" + f"{r.getrandbits(96):024x}"
        if r.random() < 0.4:
            self._assistant(msg_id, {"type": "text", "text": self._prose(r.randint(60, 400))}, None)
        tool_id = "toolu_" + f"{r.getrandbits(96):024x}"
        x = r.random()
        path = r.choice(self.files)
        size = int(r.randint(800, 12000) * scale)
        result: Any
        persisted: tuple[str, str] | None = None
        if x < 0.35:
            name = "Read"
            inp: dict[str, Any] = {"file_path": path}
            body = self.pool.chunk(self.pool.code, size)
            lines = body.split("\n")
            content = "\n".join(f"{i + 1}\t{ln}" for i, ln in enumerate(lines))
            result = {
                "type": "text",
                "file": {
                    "filePath": path,
                    "content": body,
                    "numLines": len(lines),
                    "startLine": 1,
                    "totalLines": len(lines),
                },
            }
        elif x < 0.60:
            name = "Bash"
            cmd = r.choice(
                (
                    "pytest -q",
                    "npm run build",
                    "ls -la src",
                    "ruff check .",
                    f"cat {path}",
                    f"grep -rn {r.choice(WORDS)} {self.cwd}/src",
                )
            )
            inp = {"command": cmd, "description": "Run " + cmd.split()[0]}
            big = r.random() < 0.12
            out = self.pool.chunk(
                self.pool.log, int(r.randint(40000, 90000) * scale) if big else size // 2
            )
            result = {
                "stdout": out,
                "stderr": "",
                "interrupted": False,
                "isImage": False,
                "noOutputExpected": False,
            }
            content = out
            if big and len(out) > 30000:
                rid = "".join(r.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(9))
                ppath = f"{self.claude_dir}/projects/{self.enc}/{self.sid}/tool-results/{rid}.txt"
                result["stdout"] = out[:30000]
                result["persistedOutputPath"] = ppath
                result["persistedOutputSize"] = len(out.encode())
                content = (
                    f"<persisted-output>\nOutput too large ({len(out) / 1024:.1f}KB). Full output saved to: {ppath}\n\n"
                    f"Preview (first 2KB):\n{out[:2000]}\n...\n</persisted-output>"
                )
                if self.persisted < MAX_PERSISTED_PER_SESSION:
                    persisted = (ppath, out)
                    self.persisted += 1
        elif x < 0.80:
            name = "Edit"
            original = self.pool.chunk(self.pool.code, size)
            old = original.split("\n")[0]
            new = old.replace("self", "ctx", 1) + "  # edited"
            inp = {"replace_all": False, "file_path": path, "old_string": old, "new_string": new}
            content = f"The file {path} has been updated successfully. (file state is current in your context — no need to Read it back)"
            result = {
                "filePath": path,
                "oldString": old,
                "newString": new,
                "originalFile": original,
                "structuredPatch": [
                    {
                        "oldStart": 1,
                        "oldLines": 1,
                        "newStart": 1,
                        "newLines": 1,
                        "lines": ["-" + old, "+" + new],
                    }
                ],
                "userModified": False,
                "replaceAll": False,
            }
            self._backup(path, original, snap_ts, user_uuid, tracked)
        elif x < 0.88:
            name = "Write"
            body = self.pool.chunk(self.pool.code, size)
            inp = {"file_path": path, "content": body}
            content = f"File created successfully at: {path} (file state is current in your context — no need to Read it back)"
            result = {
                "type": "create",
                "filePath": path,
                "content": body,
                "structuredPatch": [],
                "originalFile": None,
                "userModified": False,
            }
            self._backup(path, None, snap_ts, user_uuid, tracked)
        else:
            name = "Grep"
            pat = r.choice(WORDS)
            inp = {"pattern": pat, "path": f"{self.cwd}/src", "output_mode": "content", "-n": True}
            hits = [
                f"{r.choice(self.files)}:{r.randint(1, 400)}:{ln}"
                for ln in self.pool.chunk(self.pool.code, size // 3).split("\n")
            ]
            content = "\n".join(hits)
            result = {
                "mode": "content",
                "numFiles": len({h.split(":")[0] for h in hits}),
                "filenames": [],
                "content": content,
                "numLines": len(hits),
            }
        a_uuid = self._assistant(
            msg_id, {"type": "tool_use", "id": tool_id, "name": name, "input": inp}, "tool_use"
        )
        u = self._uuid()
        block: dict[str, Any] = {"tool_use_id": tool_id, "type": "tool_result", "content": content}
        if name == "Bash":
            block["is_error"] = False
        self._emit(
            {
                "parentUuid": self.parent,
                "isSidechain": False,
                "promptId": prompt_id,
                "type": "user",
                "message": {"role": "user", "content": [block]},
                "uuid": u,
                "timestamp": self._tick(0.05, 30.0),
                "toolUseResult": result,
                "sourceToolAssistantUUID": a_uuid,
            }
            | self._common()
        )
        self.parent = u
        if persisted:
            p = Path(persisted[0])
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(persisted[1])
        if name in ("Edit", "Write"):
            self._emit(
                {
                    "type": "file-history-snapshot",
                    "messageId": a_uuid,
                    "snapshot": {
                        "messageId": user_uuid,
                        "trackedFileBackups": dict(tracked),
                        "timestamp": snap_ts,
                    },
                    "isSnapshotUpdate": True,
                }
            )

    def _backup(
        self, path: str, original: str | None, snap_ts: str, user_uuid: str, tracked: dict[str, Any]
    ) -> None:
        """Record a file-history backup (writing the backup file, within a cap)."""
        rel = os.path.relpath(path, self.cwd)
        if rel in tracked:
            return
        v = self.versions.get(path, 0) + 1
        self.versions[path] = v
        name: str | None = None
        if original is not None:
            name = hashlib.sha256(path.encode()).hexdigest()[:16] + f"@v{v}"
            if self.backups < MAX_BACKUPS_PER_SESSION:
                p = self.claude_dir / "file-history" / self.sid / name
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text(original)
                self.backups += 1
        tracked[rel] = {"backupFileName": name, "version": v, "backupTime": iso(self.now)}

    def finish(self) -> str:
        """Add the trailing last-prompt entry; return the last timestamp."""
        if self.prompts:
            last = self.prompts[-1][0]
            short = last if len(last) <= 200 else last[:199] + "…"
            self._emit(
                {
                    "type": "last-prompt",
                    "lastPrompt": short,
                    "leafUuid": self.parent,
                    "sessionId": self.sid,
                }
            )
        return iso(self.now)


def _write_session(w: SessionWriter, last_ts: str) -> SessionInfo:
    """Write the transcript (0600) with mtime = its last timestamp."""
    folder = w.claude_dir / "projects" / w.enc
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{w.sid}.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(w.out))
        f.write("\n")
    path.chmod(0o600)
    t = w.now.timestamp()
    os.utime(path, (t, t))
    return SessionInfo(w.sid, w.cwd, str(path), w.size, len(w.out), w.first_ts, last_ts)


def make_home(
    home: Path, *, sessions: int = 200, big_mb: float = 100.0, seed: int = 20261125
) -> HomeInfo:
    """Create the synthetic home; the newest session (mtime and timestamps) is ~big_mb MiB."""
    t0 = time.perf_counter()
    home.mkdir(parents=True, exist_ok=True)
    home = home.resolve()
    rng = random.Random(seed)
    pool = TextPool(rng)
    claude_dir = home / ".claude"
    projects: list[str] = []
    for name in PROJECT_NAMES:
        p = home / "projects" / name
        (p / ".claude").mkdir(parents=True, exist_ok=True)
        (p / "CLAUDE.md").write_text(
            f"# {name}\n\nRun `pytest -q` before committing. Keep functions small.\n"
        )
        (p / ".claude" / "settings.json").write_text(
            json.dumps({"permissions": {"allow": ["Bash(pytest:*)", "Read"]}}, indent=2) + "\n"
        )
        projects.append(str(p))
    big_project = str(home / "projects" / BIG_PROJECT)

    small: list[SessionInfo] = []
    history: list[dict[str, Any]] = []
    clock = BASE_TIME
    for i in range(max(0, sessions - 1)):
        proj = projects[i % len(projects)] if i % 3 else projects[rng.randrange(len(projects))]
        clock += timedelta(minutes=rng.uniform(60, 600))
        w = SessionWriter(rng, pool, claude_dir, proj, clock, interactive=rng.random() < 0.7)
        target = rng.randint(12, 70) * 1024
        while w.size < target:
            w.turn(tools=rng.randint(1, 4), scale=0.25)
        last = w.finish()
        small.append(_write_session(w, last))
        clock = max(clock, w.now)
        if w.interactive:
            history += [
                {
                    "display": p,
                    "pastedContents": {},
                    "timestamp": int(t.timestamp() * 1000),
                    "project": proj,
                    "sessionId": w.sid,
                }
                for p, t in w.prompts
            ]

    w = SessionWriter(
        rng, pool, claude_dir, big_project, clock + timedelta(hours=1), interactive=True
    )
    target = int(big_mb * MIB)
    while w.size < target:
        w.turn(tools=rng.randint(3, 9), scale=1.0)
    last = w.finish()
    big = _write_session(w, last)
    history += [
        {
            "display": p,
            "pastedContents": {},
            "timestamp": int(t.timestamp() * 1000),
            "project": big_project,
            "sessionId": w.sid,
        }
        for p, t in w.prompts[-20:]
    ]

    (claude_dir / "history.jsonl").write_text("".join(dumps(h) + "\n" for h in history))
    claude_json: dict[str, Any] = {
        "numStartups": 42,
        "hasCompletedOnboarding": True,
        "projects": {
            p: {"hasTrustDialogAccepted": True, "lastVersionBase": VERSION} for p in projects
        },
    }
    claude_json["projects"][big_project]["lastSessionId"] = big.session_id
    (home / ".claude.json").write_text(json.dumps(claude_json, indent=2))
    total = big.size + sum(s.size for s in small)
    return HomeInfo(
        str(home), projects, big, len(small) + 1, total, round(time.perf_counter() - t0, 2), small
    )


def main(argv: list[str] | None = None) -> int:
    """Command line: make_home.py HOME [--sessions N] [--big-mb MB] [--seed S]."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("home", type=Path, help="directory to fill (created; should be empty)")
    ap.add_argument(
        "--sessions", type=int, default=200, help="number of sessions, the big one included"
    )
    ap.add_argument("--big-mb", type=float, default=100.0, help="size of the newest session in MiB")
    ap.add_argument("--seed", type=int, default=20261125)
    args = ap.parse_args(argv)
    info = make_home(args.home, sessions=args.sessions, big_mb=args.big_mb, seed=args.seed)
    d = asdict(info)
    d.pop("small")
    json.dump(d, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
