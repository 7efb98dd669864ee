"""A second agent tool plugs in through the `commuter.backends.v1` entry points, and the CLI
(list, export, inspect, import, push, pull, doctor) serves it unchanged next to Claude Code:
the toy backend below is all it takes (its ids are no UUIDs, its resume line is its own)."""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import ClassVar

import pytest
from claude_home import TOOLS, install
from click.testing import CliRunner

from commuter.backends import ExportPlan, ImportSource, all_env_vars, backend_names
from commuter.cli import cli
from commuter.errors import SessionNotFound
from commuter.model import ImportOptions, ImportResult, SessionRef
from commuter.placing import resolve_target
from commuter.settings import Settings

NOTE_ID = "note-2026.milk_01"  # not a UUID: a bundle may carry any plain-name id


class NotesBackend:
    """A toy agent: one JSON file per session in ~/.notes (or $NOTES_HOME), naming its
    project. Besides the five methods every backend has, it says how to resume a session."""

    name: ClassVar[str] = "notes"
    env_vars: ClassVar[tuple[str, ...]] = ("NOTES_HOME",)

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = Path(settings.env.get("NOTES_HOME") or settings.home / ".notes")

    def is_installed(self) -> bool:
        return self.root.is_dir()

    def sessions(self) -> Iterator[SessionRef]:
        for path in sorted(self.root.glob("*.json")) if self.root.is_dir() else []:
            data = json.loads(path.read_text())
            yield SessionRef(
                "notes",
                path.stem,
                Path(data["project"]),
                datetime.fromtimestamp(path.stat().st_mtime, UTC),
                path,
                path.stat().st_size,
                data["text"],
            )

    def find(self, session: str | None, cwd: Path) -> SessionRef:
        refs = [
            r
            for r in self.sessions()
            if (r.session_id.startswith(session) if session else r.project == cwd)
        ]
        if not refs:
            raise SessionNotFound(f"no notes session {session or cwd}")
        return max(refs, key=lambda r: r.updated_at)

    def collect(self, ref: SessionRef) -> ExportPlan:
        assert ref.path is not None and ref.project is not None
        return ExportPlan(
            "notes",
            ref.session_id,
            str(ref.project),
            1,
            None,
            {},
            ((f"session/{ref.session_id}.json", ref.path),),
        )

    def place(self, source: ImportSource, options: ImportOptions) -> ImportResult:
        target = resolve_target(self.settings, source, options).project  # shared: path-maps
        data = json.loads(source.member(f"session/{source.session_id}.json").read_text())
        data["project"] = str(target)
        dest = self.root / f"{source.session_id}.json"
        if not options.dry_run:
            self.root.mkdir(parents=True, exist_ok=True)
            dest.write_text(json.dumps(data))
        return ImportResult(
            source.session_id,
            target,
            "dry-run" if options.dry_run else "created",
            dest,
            origin=source.origin or None,
        )

    def resume_command(self, result: ImportResult) -> str:
        return f"cd {shlex.quote(str(result.project_dir))} && notes open {result.session_id}"


@pytest.fixture
def notes_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    real = importlib.metadata.entry_points

    def entry_points(**kw):
        if kw.get("group") == "commuter.backends.v1":
            return [EntryPoint("notes", "test_backend_plugin:NotesBackend", kw["group"])]
        return real(**kw)

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_a_plugin_backend_travels_through_the_unchanged_cli(
    notes_plugin: None, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(home)  # Claude Code sessions too: both tools side by side
    project = home / "projects" / "my.app"
    (home / ".notes").mkdir()
    (home / ".notes" / f"{NOTE_ID}.json").write_text(
        json.dumps({"project": str(project), "text": "remember the milk"})
    )
    listed = json.loads(run("list", "--json").stdout)
    assert {d["backend"] for d in listed} == {"claude", "notes"}
    assert run("export", TOOLS[:8], "-o", str(tmp_path / "c.bundle")).exit_code == 0
    out = tmp_path / "n.bundle"
    exported = run("export", NOTE_ID[:8], "-o", str(out))
    assert exported.exit_code == 0, exported.stderr
    assert "backend:   notes" in run("inspect", str(out)).stdout
    home_b = tmp_path / "B"
    there = home_b / "work" / "app"
    there.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home_b))
    imported = run("import", str(out), "--project-dir", str(there), "--no-launch")
    assert imported.exit_code == 0, imported.stderr
    assert f"imported: session {NOTE_ID} in {there}" in imported.stdout
    assert f"resume:   cd {there} && notes open {NOTE_ID}" in imported.stdout
    assert "claude" not in imported.stdout and "continue:" not in imported.stdout
    placed = json.loads((home_b / ".notes" / f"{NOTE_ID}.json").read_text())
    assert placed == {"project": str(there), "text": "remember the milk"}


def test_a_plugin_session_is_pushed_and_pulled_through_the_folder(
    notes_plugin: None, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    project = home / "projects" / "my.app"
    project.mkdir(parents=True)
    (home / ".notes").mkdir()
    (home / ".notes" / f"{NOTE_ID}.json").write_text(
        json.dumps({"project": str(project), "text": "remember the milk"})
    )
    assert run("config", "set", "transfer-dir", str(shared)).exit_code == 0
    pushed = run("push", NOTE_ID, "--via", "folder")
    assert pushed.exit_code == 0, pushed.stderr
    assert f"pushed {NOTE_ID[:7]}" in pushed.stdout and "via folder" in pushed.stdout
    home_b = tmp_path / "B"
    there = home_b / "work" / "my.app"
    there.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home_b))
    assert run("config", "set", "transfer-dir", str(shared)).exit_code == 0
    assert (
        run("config", "set", "path-map", str(home / "projects"), str(home_b / "work")).exit_code
        == 0
    )
    pulled = run("pull")
    assert pulled.exit_code == 0, pulled.stderr
    assert f"imported: session {NOTE_ID} in {there}" in pulled.stdout
    assert f"resume:   cd {there} && notes open {NOTE_ID}" in pulled.stdout
    assert "claude" not in pulled.stdout
    placed = json.loads((home_b / ".notes" / f"{NOTE_ID}.json").read_text())
    assert placed == {"project": str(there), "text": "remember the milk"}
    assert run("pull").stdout.strip() == "nothing to pull"


def test_a_plugin_brings_its_own_variables_and_doctor_line(
    notes_plugin: None, home: Path, tmp_path: Path
) -> None:
    assert "NOTES_HOME" in all_env_vars() and "CLAUDE_CONFIG_DIR" in all_env_vars()
    elsewhere = tmp_path / "notes-here"
    settings = Settings.from_env({"HOME": str(home), "NOTES_HOME": str(elsewhere)})
    assert NotesBackend(settings).root == elsewhere
    checks = {c["check"]: c for c in json.loads(run("doctor", "--json").stdout)}
    assert checks["notes"] == {
        "check": "notes",
        "ok": False,
        "status": "info",  # not installed here: information, not a fault
        "detail": "not found here",
    }
    assert "sessions" in checks  # Claude Code's own


def test_an_id_prefix_found_in_two_tools_is_ambiguous(
    notes_plugin: None, home: Path, tmp_path: Path
) -> None:
    install(home)
    (home / ".notes").mkdir()
    clash = TOOLS[:8] + NOTE_ID[8:]  # shares the first 8 characters with a Claude session
    (home / ".notes" / f"{clash}.json").write_text(json.dumps({"project": "/x", "text": "t"}))
    result = run("export", TOOLS[:8], "-o", str(tmp_path / "x.bundle"))
    assert result.exit_code == 1
    assert "several tools" in result.stderr and "notes:" in result.stderr
    assert run("export", TOOLS, "-o", str(tmp_path / "x.bundle")).exit_code == 0


def test_a_backend_that_fails_on_one_item_does_not_stop_the_pull(
    notes_plugin: None, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The toy backend's place() parses its session with json.loads: a broken one raises
    # JSONDecodeError, which is no CommuterError. The pull reports it and imports the rest.
    install(home)
    shared = tmp_path / "shared"
    shared.mkdir()
    (home / ".notes").mkdir()
    (home / ".notes" / f"{NOTE_ID}.json").write_text(
        json.dumps({"project": str(home / "projects" / "my.app"), "text": "t"})
    )
    assert run("config", "set", "transfer-dir", str(shared)).exit_code == 0
    monkeypatch.chdir(home / "projects" / "my.app")
    assert run("export", NOTE_ID, "-o", str(shared / "a-notes.commuter")).exit_code == 0
    assert run("export", TOOLS, "-o", str(shared / "b-claude.commuter")).exit_code == 0
    (home / ".notes" / f"{NOTE_ID}.json").unlink()
    from commuter import bundle  # the bundle is valid; only its member is not JSON
    from commuter.bundle import BundleWriter

    staged = bundle.unpack(shared / "a-notes.commuter", tmp_path / "stage")
    member = staged.root / f"session/{NOTE_ID}.json"
    member.write_text("{not json")
    with (shared / "a-notes.commuter").open("wb") as fh:
        writer = BundleWriter(fh, staged.manifest)
        writer.add_file(f"session/{NOTE_ID}.json", member)
        writer.close()
    home_b = tmp_path / "B"
    (home_b / "projects" / "my.app").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home_b))
    assert run("config", "set", "transfer-dir", str(shared)).exit_code == 0
    pulled = run("pull", "--via", "folder")
    assert pulled.exit_code == 0, pulled.stderr
    assert "Traceback" not in pulled.output
    assert "unexpected JSONDecodeError" in pulled.stderr
    assert f"session {TOOLS}" in pulled.stdout
    assert not (home_b / ".notes" / f"{NOTE_ID}.json").exists()


def test_agent_narrows_list_and_export_to_one_agent(
    notes_plugin: None, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(home)
    project = home / "projects" / "my.app"
    (home / ".notes").mkdir()
    note = home / ".notes" / f"{NOTE_ID}.json"
    note.write_text(json.dumps({"project": str(project), "text": "remember the milk"}))
    os.utime(note, (2_000_000_000, 2_000_000_000))  # the newest session of the project
    monkeypatch.chdir(project)
    human = run("list").stdout.splitlines()[1:]  # below the header
    assert {line.split()[1] for line in human} == {"claude", "notes"}  # the agent column
    only = json.loads(run("list", "--json", "--agent", "notes").stdout)
    assert [d["backend"] for d in only] == ["notes"]
    newest = tmp_path / "newest.bundle"
    assert run("export", "--latest", "-o", str(newest)).exit_code == 0
    assert "backend:   notes" in run("inspect", str(newest)).stdout  # across agents
    claude = tmp_path / "claude.bundle"
    assert run("export", "--latest", "--agent", "claude", "-o", str(claude)).exit_code == 0
    assert "backend:   claude" in run("inspect", str(claude)).stdout
    wrong = run("export", "--latest", "--agent", "nope", "-o", str(tmp_path / "x"))
    assert wrong.exit_code == 1
    known = ", ".join(backend_names())  # claude, the other built-ins, notes
    assert wrong.stderr.strip() == f"Error: unknown agent 'nope' (known: {known})"
    assert not (tmp_path / "x").exists()
