"""What `commuter list` loads at start: the module of the invoked command alone, no entry-point
scan while the sys.path folders are unchanged (a plug-in installed or removed is still seen),
no built-in backend whose data dir is missing; and the static tables that make this possible
kept equal to what they stand for (each module's commands, each backend's data dir)."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import click
import pytest
from claude_home import install
from click.testing import CliRunner

from commuter import plugins
from commuter.backends import BUILTIN, DATA_DIRS, ENTRY_POINT_GROUP
from commuter.backends.codex import CodexBackend
from commuter.backends.gemini import GeminiBackend
from commuter.cli import LAZY_COMMANDS, cli
from commuter.settings import Settings

PACKAGE = Path(__file__).parent.parent / "commuter"
OLD = (1_700_000_000, 1_700_000_000)  # a folder's mtime long settled
OTHER_COMMANDS = tuple(
    f"commuter.commands.{n}"
    for n in ("transfer", "ssh", "peer", "relay", "doctor", "status", "service", "backups")
)

PLUGIN = """
import json
from datetime import UTC, datetime
from pathlib import Path

from commuter.errors import SessionNotFound
from commuter.model import SessionRef


class NotesBackend:
    name = "notes"

    def __init__(self, settings):
        self.root = settings.home / ".notes"

    def is_installed(self):
        return self.root.is_dir()

    def sessions(self):
        for path in sorted(self.root.glob("*.json")):
            when = datetime.fromtimestamp(path.stat().st_mtime, UTC)
            project = Path(json.loads(path.read_text())["project"])
            yield SessionRef("notes", path.stem, project, when, path, 1, "remember the milk")

    def find(self, session, cwd):
        raise SessionNotFound(f"no notes session {session}")

    def collect(self, ref):
        raise NotImplementedError

    def place(self, source, options):
        raise NotImplementedError
"""


def write_plugin(site: Path) -> Path:
    """A `notes` backend installed as a distribution in `site` (a folder for PYTHONPATH), as
    pip lays one out; returns its dist-info folder."""
    site.mkdir(parents=True, exist_ok=True)
    (site / "notesplug.py").write_text(PLUGIN)
    dist = site / "notesplug-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: notesplug\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\nnotes = notesplug:NotesBackend\n"
    )
    return dist


_PROBE = textwrap.dedent(
    """
    import contextlib, io, json, runpy, sys
    sys.argv = ["commuter", *sys.argv[1:]]
    out = io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out):
        try:
            runpy.run_module("commuter", run_name="__main__")
        except SystemExit as exc:
            code = exc.code
    print(json.dumps({"code": code, "out": out.getvalue(), "modules": sorted(sys.modules)}))
    """
)


def run_probe(
    home: Path,
    cwd: Path,
    *args: str,
    pythonpath: Path | None = None,
    user: str | None = None,
) -> dict[str, Any]:
    """`commuter ARGS` in a fresh interpreter: its exit code, stdout and sys.modules at exit."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "COMMUTER_"))}
    env.pop("PYTHONPATH", None)
    env.update(HOME=str(home), NO_COLOR="1", COLUMNS="200")
    if user is not None:  # $USER as given ("": none), what getpass reads before it unset
        for name in ("LOGNAME", "LNAME", "USERNAME"):
            env.pop(name, None)
        env["USER"] = user
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    result["stderr"] = done.stderr
    return result


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """The probe's working directory (on its sys.path), settled."""
    folder = tmp_path / "work"
    folder.mkdir()
    os.utime(folder, OLD)
    return folder


def test_the_table_holds_every_command_each_module_registers():
    found: dict[str, str] = {}
    modules = [f"commuter.commands.{p.stem}" for p in sorted((PACKAGE / "commands").glob("*.py"))]
    for name in [*modules, "commuter.completion"]:
        module = importlib.import_module(name)
        if not hasattr(module, "register"):
            continue
        group = click.Group()
        module.register(group)
        for command_name, command in group.commands.items():
            attr = next(a for a, obj in vars(module).items() if obj is command)
            found[command_name] = f"{name}:{attr}"
    assert "list" in found and "completion" in found
    assert found == LAZY_COMMANDS


def test_help_lists_every_command_with_its_short_help():
    shown = CliRunner().invoke(cli, ["--help"])
    assert shown.exit_code == 0, shown.output
    rows = {
        line.split()[0]: line.split(maxsplit=1)[1:]
        for line in shown.output.split("Commands:", 1)[1].splitlines()
        if line.startswith("  ") and not line.startswith("   ")
    }
    assert set(rows) == {*LAZY_COMMANDS, "config"}
    assert all(help_text for help_text in rows.values())
    assert "Did you mean 'list'?" in CliRunner().invoke(cli, ["lsit"]).output


def test_list_loads_its_own_command_module_and_no_entry_point_scan_once_cached(
    tmp_path: Path, work: Path
) -> None:
    home = install(tmp_path / "h")
    first = run_probe(home, work, "list")
    assert first["code"] == 0 and "my.app" in first["out"]
    assert (home / ".cache" / "commuter" / plugins.CACHE_FILE).is_file()
    again = run_probe(home, work, "list")
    assert again["out"] == first["out"]
    loaded = set(again["modules"])
    assert "commuter.commands.session" in loaded
    assert not loaded & {*OTHER_COMMANDS, "asyncio", "importlib.metadata", "logging"}
    assert not loaded & {"commuter.backends.codex", "commuter.backends.gemini"}
    (home / ".gemini").mkdir()  # now Gemini CLI may have chats here: asked
    gemini = run_probe(home, work, "list")
    assert "commuter.backends.gemini" in gemini["modules"]
    assert "commuter.backends.codex" not in gemini["modules"]


# What `list` does not use: settings' fallbacks for other systems (platformdirs, socket,
# getpass with $USER set), the fork records' sqlite3 without a record, and what only export,
# import and the caches' writes need (rewrite, fsutil with tempfile, subprocess).
LIST_SPARES = (
    "platformdirs",
    "socket",
    "getpass",
    "sqlite3",
    "commuter.forks",
    "commuter.backends.claude.rewrite",
    "commuter.fsutil",
    "tempfile",
    "subprocess",
)


def test_a_warm_list_loads_nothing_it_does_not_use(tmp_path: Path, work: Path) -> None:
    home = install(tmp_path / "h")
    first = run_probe(home, work, "list", user="me")  # writes the caches
    assert "commuter.fsutil" in first["modules"]  # a cache written: then it is needed
    again = run_probe(home, work, "list", user="me")
    assert again["out"] == first["out"] and "my.app" in again["out"]
    assert [m for m in LIST_SPARES if m in again["modules"]] == []
    without_user = run_probe(home, work, "list", user="")
    assert without_user["out"] == first["out"] and "getpass" in without_user["modules"]


def test_a_plugin_installed_as_a_distribution_is_listed_and_its_removal_is_seen(
    tmp_path: Path, work: Path
) -> None:
    home = install(tmp_path / "h")
    (home / ".notes").mkdir()
    (home / ".notes" / "n1.json").write_text(json.dumps({"project": str(home / "p")}))
    site = tmp_path / "site"
    dist = write_plugin(site)
    os.utime(site, OLD)

    def listed() -> tuple[set[str], set[str]]:
        done = run_probe(home, work, "list", "--json", pythonpath=site)
        assert done["code"] == 0, done["stderr"]
        return {r["backend"] for r in json.loads(done["out"])}, set(done["modules"])

    assert listed()[0] == {"claude", "notes"}
    backends, loaded = listed()  # from the cache
    assert backends == {"claude", "notes"}
    assert "notesplug" in loaded and "importlib.metadata" not in loaded
    shutil.rmtree(dist)  # pip uninstall
    assert listed()[0] == {"claude"}
    unknown = run_probe(home, work, "list", "--agent", "notes", pythonpath=site)
    assert unknown["code"] == 1 and "unknown agent 'notes'" in unknown["stderr"]


def test_a_name_the_cache_does_not_know_is_looked_up_afresh(tmp_path: Path, work: Path) -> None:
    home = install(tmp_path / "h")
    site = tmp_path / "site"
    site.mkdir()
    os.utime(site, OLD)
    assert run_probe(home, work, "list", pythonpath=site)["code"] == 0  # cached: no plug-in
    write_plugin(site)
    os.utime(site, OLD)  # as if the install had not changed the folder's mtime
    (home / ".notes").mkdir()
    (home / ".notes" / "n1.json").write_text(json.dumps({"project": str(home / "p")}))
    done = run_probe(home, work, "list", "--json", "--agent", "notes", pythonpath=site)
    assert done["code"] == 0, done["stderr"]
    assert [r["session_id"] for r in json.loads(done["out"])] == ["n1"]


def test_the_cache_is_used_for_this_layout_only_and_foreign_content_is_not_believed(
    tmp_path: Path,
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    file = cache / plugins.CACHE_FILE
    key, _settled = plugins._site_key()
    assert key is not None
    group = "commuter.test.v1"
    real = plugins._scan(group)
    mine = {"version": 1, "sites": [{"key": key, "groups": {group: {"x": "mod:attr"}}}]}
    file.write_text(json.dumps(mine))
    assert plugins.entry_point_specs(group, cache) == {"x": "mod:attr"}
    assert plugins.entry_point_specs(group, None) == real
    other = json.dumps([*json.loads(key)[:-1], ["/elsewhere", 1]])
    foreign: list[object] = [
        "{not json",
        {"version": 2, "sites": mine["sites"]},
        {"version": 1, "sites": [{"key": other, "groups": {group: {"x": "mod:attr"}}}]},
        {"version": 1, "sites": [{"key": key, "groups": {group: {"x": 1}}}]},
        {"version": 1, "sites": [{"key": key, "groups": {group: ["x"]}}, 7]},
        {"version": 1, "sites": {"key": key}},
    ]
    for doc in foreign:
        file.write_text(doc if isinstance(doc, str) else json.dumps(doc))
        assert plugins.entry_point_specs(group, cache) == real, doc


@pytest.mark.parametrize(
    "extra", [{}, {"CODEX_HOME": "/srv/codex", "GEMINI_CLI_HOME": "/srv/gemini"}]
)
def test_the_data_dirs_are_where_the_backends_look(tmp_path: Path, extra: dict[str, str]):
    settings = Settings.from_env({"HOME": str(tmp_path / "h"), "USER": "t", **extra})
    assert set(DATA_DIRS) <= set(BUILTIN) - {"claude"}
    assert CodexBackend(settings).home in DATA_DIRS["codex"](settings)
    assert GeminiBackend(settings).dirs.root in DATA_DIRS["gemini"](settings)


def test_doctor_reads_the_plugins_afresh_and_refreshes_the_cache(
    tmp_path: Path, work: Path
) -> None:
    home = install(tmp_path / "h")
    (home / ".notes").mkdir()
    (home / ".notes" / "n1.json").write_text(json.dumps({"project": str(home / "p")}))
    site = tmp_path / "site"
    site.mkdir()
    os.utime(site, OLD)

    def backends() -> set[str]:
        done = run_probe(home, work, "list", "--json", pythonpath=site)
        return {r["backend"] for r in json.loads(done["out"])}

    assert backends() == {"claude"}
    write_plugin(site)
    os.utime(site, OLD)  # an install the folder's mtime does not show
    assert backends() == {"claude"}  # the cache, stale
    doctor = run_probe(home, work, "doctor", "--json", pythonpath=site)
    assert "notes" in {c["check"] for c in json.loads(doctor["out"])}
    assert backends() == {"claude", "notes"}
