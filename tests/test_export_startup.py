"""What `commuter export` and `commuter import` load at start: the backend of the session and
nothing a plain bundle does not need (no nacl without an identity key, no SQLite without a
fork record, no zstandard before a bundle is written or read), each in a fresh interpreter."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from claude_home import PLAIN, TOOLS, install, transcript

from commuter import core, forks
from commuter.backends.claude.heads import HEADS_FILE
from commuter.peer.identity import Identity
from commuter.settings import FORKS_FILE, KEY_FILE, Settings

_PROBE = textwrap.dedent(
    """
    import contextlib, io, json, runpy, sys
    sys.argv = ["commuter", *sys.argv[1:]]
    code = 0
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            runpy.run_module("commuter", run_name="__main__")
        except SystemExit as exc:
            code = exc.code
    print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
    """
)
NACL = {"nacl", "commuter.peer.identity"}
SQLITE = {"sqlite3", "commuter.forks"}
OTHER_BACKENDS = {"commuter.backends.codex", "commuter.backends.gemini"}


def probe(home: Path, cwd: Path, *args: str) -> tuple[int, set[str]]:
    """`commuter ARGS` in a fresh interpreter: its exit code and sys.modules at exit."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "COMMUTER_"))}
    env.pop("PYTHONPATH", None)
    env.update(HOME=str(home), NO_COLOR="1")
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
    result = json.loads(done.stdout.splitlines()[-1])
    return result["code"], set(result["modules"])


def settings_of(home: Path) -> Settings:
    return Settings.from_env({"HOME": str(home)})


def test_export_latest_and_its_import_load_one_backend_and_no_nacl_or_sqlite(tmp_path: Path):
    home = install(tmp_path / "a")
    bundle = tmp_path / "s.bundle"
    latest = ("export", "--latest", "-o", str(bundle))
    code, loaded = probe(home, home / "projects" / "my.app", *latest)
    assert code == 0 and bundle.is_file()
    assert "commuter.backends.claude" in loaded and "zstandard" in loaded
    assert not loaded & (NACL | SQLITE | OTHER_BACKENDS | {"asyncio"})
    assert core.read_manifest(bundle).origin.device_id is None
    assert not (settings_of(home).config_dir / KEY_FILE).exists()

    dst = tmp_path / "b"
    (dst / "work").mkdir(parents=True)
    args = ("import", str(bundle), "--no-launch", "--yes", "--project-dir", str(dst / "work"))
    code, loaded = probe(dst, tmp_path, *args)
    assert code == 0 and "commuter.backends.claude.place" in loaded
    assert not loaded & (NACL | OTHER_BACKENDS | {"asyncio"})


def test_an_export_that_finds_no_session_loads_no_zstandard(tmp_path: Path):
    home = install(tmp_path / "a")
    out = tmp_path / "x.bundle"
    code, loaded = probe(home, tmp_path, "export", "0000dead", "-o", str(out))
    assert code != 0 and not out.exists()
    assert not loaded & {"zstandard", *NACL, *SQLITE}


def test_a_gemini_data_dir_brings_in_its_backend_for_the_lookup_only(tmp_path: Path):
    home = install(tmp_path / "a")
    (home / ".gemini").mkdir()
    out = tmp_path / "s.bundle"
    code, loaded = probe(home, home / "projects" / "my.app", "export", PLAIN[:8], "-o", str(out))
    assert code == 0 and core.read_manifest(out).session_id == PLAIN
    assert "commuter.backends.gemini" in loaded and "commuter.backends.codex" not in loaded


def test_with_an_identity_key_the_origin_names_this_device(tmp_path: Path):
    home = install(tmp_path / "a")
    identity = Identity.load_or_create(settings_of(home))
    bundle = tmp_path / "s.bundle"
    latest = ("export", "--latest", "-o", str(bundle))
    code, loaded = probe(home, home / "projects" / "my.app", *latest)
    assert code == 0 and "nacl" in loaded
    assert core.read_manifest(bundle).origin.device_id == identity.device_id


def test_a_recorded_fork_is_still_marked_in_the_bundle(tmp_path: Path):
    assert forks._path(tmp_path) == tmp_path / FORKS_FILE
    home = install(tmp_path / "a")
    settings = settings_of(home)
    origin = "11111111-2222-4333-8444-555555555555"
    forks.record(settings.state_dir, "claude", TOOLS, origin, "office")
    out = io.BytesIO()
    manifest = core.export_to(settings, out, session=TOOLS)
    assert manifest.meta["fork_of"] == origin and manifest.meta["fork_from"] == "office"


def test_export_to_takes_a_ref_found_already(tmp_path: Path):
    home = install(tmp_path / "a")
    settings = settings_of(home)
    project = home / "projects" / "my.app"
    ref = core.find_session(settings, PLAIN, project)
    assert ref.path == transcript(home, project, PLAIN)
    newest = core.find_session(settings, None, project)
    assert newest.session_id != PLAIN  # so the ref, not the cwd, decides
    manifest = core.export_to(settings, io.BytesIO(), cwd=project, ref=ref)
    assert manifest.session_id == PLAIN


def heads_cache(home: Path) -> Path:
    return home / ".cache" / "commuter" / HEADS_FILE


def test_export_latest_in_a_sessions_own_folder_lists_no_other_session(tmp_path: Path):
    home = install(tmp_path / "a")
    project = home / "projects" / "my.app"
    newest = core.find_session(settings_of(home), None, project)
    out = tmp_path / "s.bundle"
    code, _ = probe(home, project, "export", "--latest", "-o", str(out))
    assert code == 0 and core.read_manifest(out).session_id == newest.session_id
    assert not heads_cache(home).exists()  # a listing would have cached every head


def test_export_latest_below_a_project_finds_it_through_the_listing(tmp_path: Path):
    home = install(tmp_path / "a")
    project = home / "projects" / "my.app"
    newest = core.find_session(settings_of(home), None, project)
    below = project / "src" / "deep"
    below.mkdir(parents=True)
    out = tmp_path / "s.bundle"
    code, _ = probe(home, below, "export", "--latest", "-o", str(out))
    assert code == 0 and core.read_manifest(out).session_id == newest.session_id
    assert heads_cache(home).is_file()
