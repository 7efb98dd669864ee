"""The Gemini CLI backend on copies of real gemini 0.61.0 chats (tests/data/gemini/, see its
MANIFEST.md): listing, the slug rule, export → import under another path at another home
(projects.json, markers, path rewrite), continuity by message ids, gemini's start-up cleanup
and bad input."""

from __future__ import annotations

import json
import os
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from commuter.backends.gemini import GeminiBackend
from commuter.backends.gemini.chat import (
    GeminiDirs,
    claim_slug,
    project_hash,
    read_chat,
    slugify,
)
from commuter.cli import cli
from commuter.errors import SessionNotFound
from commuter.settings import Settings

DATA = Path(__file__).parent / "data" / "gemini" / "home"
FIXTURE_HOME = "/tmp/rcfix/gemini/home"
PLAIN = "c2fbb176-8b27-41cf-a3a7-c781c1377d3c"
TOOLS = "36818c90-ee79-4cf7-8d46-b2b6a3352a88"
SUBAGENT = "a15cd176-8240-4c95-8ada-e1eeb6eac7cd"
SUB_CHILD = "95267a7f-4221-4593-a429-0c484d258e07"
RESUMED = "c3ddfac4-3e0c-4206-9cb4-24075f1d1826"
DOTSPACE = "9dc73036-af9e-44e2-a6db-52de36067aa0"
TUI = "bd7e2f24-a3b7-4eb3-b1ac-ed10ff001614"


def install(home: Path) -> Path:
    """Copy the fixture home into `home`, its paths rebased there."""
    shutil.copytree(DATA, home, dirs_exist_ok=True)
    for path in sorted(home.rglob("*")):
        if path.is_file() and (path.suffix in (".jsonl", ".json") or path.name == ".project_root"):
            text = path.read_text(encoding="utf-8").replace(FIXTURE_HOME, str(home))
            path.write_text(text, encoding="utf-8")
    return home


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def backend(home: Path, **env: str) -> GeminiBackend:
    return GeminiBackend(Settings.from_env({"HOME": str(home), "USER": "tester", **env}))


def gemini_cleanup(chats: Path, now: datetime | None = None) -> list[str]:
    """What gemini 0.61.0 does to a project's chats/ on start (sessionCleanup.ts, default
    retention 30 days): a session file without messages, or last updated more than 30 days
    ago, is deleted with every file sharing its 8-character short id (and its subagent
    folder). Returns the names deleted."""
    now = now or datetime.now(UTC)
    names = sorted(n for n in os.listdir(chats) if n.startswith("session-"))
    doomed: set[str] = set()
    for name in names:
        chat = read_chat(chats / name)
        last = datetime.fromisoformat(chat.last_updated.replace("Z", "+00:00"))
        if not chat.has_messages or last < now - timedelta(days=30):
            doomed.add(name.rsplit("-", 1)[1].split(".")[0])
    gone = []
    for name in names:
        if name.rsplit("-", 1)[1].split(".")[0] in doomed:
            sid = read_chat(chats / name).session_id
            (chats / name).unlink()
            shutil.rmtree(chats / str(sid), ignore_errors=True)
            gone.append(name)
    return gone


# --- reading --------------------------------------------------------------------------------


def test_a_home_without_gemini_has_no_sessions(home: Path) -> None:
    gem = backend(home)
    assert list(gem.sessions()) == []
    assert not gem.is_installed() or shutil.which("gemini")
    with pytest.raises(SessionNotFound):
        gem.find(None, home)
    with pytest.raises(SessionNotFound):
        gem.find("c2fb", home)
    assert run("list", "--json").exit_code == 0


def test_sessions_lists_each_main_chat_once_with_its_project(home: Path) -> None:
    install(home)
    refs = {r.session_id: r for r in backend(home).sessions()}
    assert set(refs) == {PLAIN, TOOLS, SUBAGENT, RESUMED, DOTSPACE, TUI}  # no subagent chat
    assert refs[PLAIN].project == home / "projects" / "my.app"
    assert refs[DOTSPACE].project == home / "projects" / "My Project.v2"
    assert refs[TUI].first_prompt == "Remember the codeword GRAPE-8."
    # the resumed chat's second file (no messages) is not what is listed
    resumed = refs[RESUMED].path
    assert resumed is not None and resumed.name.startswith("session-2026-11-24T14-07")
    found = backend(home).find(None, home / "projects" / "My Project.v2")
    assert found.session_id == DOTSPACE
    assert backend(home).find("9dc7", home).session_id == DOTSPACE


def test_gemini_cli_home_moves_the_data_dir(home: Path, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    install(other)
    assert {r.session_id for r in backend(home, GEMINI_CLI_HOME=str(other)).sessions()} >= {PLAIN}
    assert list(backend(home).sessions()) == []


def test_an_older_sha256_named_folder_is_read(home: Path) -> None:
    install(home)
    dirs = GeminiDirs(home / ".gemini")
    project = str(home / "projects" / "tui_app")
    legacy = dirs.tmp / project_hash(project)
    shutil.move(str(dirs.tmp / "tui-app"), legacy)
    (legacy / ".project_root").unlink()
    (dirs.history / "tui-app" / ".project_root").unlink()
    (dirs.root / "projects.json").unlink()
    refs = {r.session_id: r for r in backend(home).sessions()}
    assert refs[TUI].project == Path(project)
    assert backend(home).find(None, Path(project)).session_id == TUI


def test_slug_rule() -> None:
    assert slugify("/x/my.app") == "my-app"
    assert slugify("/x/My Project.v2") == "my-project-v2"
    assert slugify("/x/tui_app") == "tui-app"
    assert slugify("/x/...") == "project"


def test_a_slug_owned_by_another_path_gets_a_suffix(home: Path) -> None:
    install(home)
    dirs = GeminiDirs(home / ".gemini")
    assert claim_slug(dirs, "/elsewhere/my.app") == "my-app-1"
    (dirs.tmp / "my-app-1").mkdir()
    (dirs.tmp / "my-app-1" / ".project_root").write_text("/third/my.app")
    assert claim_slug(dirs, "/elsewhere/my.app") == "my-app-2"
    assert claim_slug(dirs, "/brand/new") == "new"


# --- moving ---------------------------------------------------------------------------------


def _export(home: Path, sid: str, out: Path) -> None:
    result = run("export", sid, "-o", str(out))
    assert result.exit_code == 0, result.stderr


def _import(bundle: Path, there: Path, *extra: str) -> Result:
    return run("import", str(bundle), "--project-dir", str(there), "--no-launch", *extra)


def _home_b(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """Home B: gemini has chats of its own there and another project named my.app."""
    home_b = tmp_path / "B"
    install(home_b)
    there = home_b / "work" / "my.app"
    there.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home_b))
    return home_b, there


def test_export_import_under_another_path_keeps_other_projects(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(home)
    bundle = tmp_path / "s.commuter"
    _export(home, SUBAGENT, bundle)
    home_b, there = _home_b(tmp_path, monkeypatch)
    before = json.loads((home_b / ".gemini" / "projects.json").read_text())["projects"]
    imported = _import(bundle, there)
    assert imported.exit_code == 0, imported.stderr
    assert f"cd {there} && gemini --resume {SUBAGENT}" in imported.stdout
    projects = json.loads((home_b / ".gemini" / "projects.json").read_text())["projects"]
    assert projects == {**before, str(there): "my-app-1"}
    folder = home_b / ".gemini" / "tmp" / "my-app-1"
    assert (folder / ".project_root").read_text() == str(there)
    assert (home_b / ".gemini" / "history" / "my-app-1" / ".project_root").read_text() == str(there)
    chat = folder / "chats" / "session-2026-11-24T14-07-a15cd176.jsonl"
    text = chat.read_text()
    assert str(there) in text and str(folder) in text
    # the source paths are gone from the context, tool args and results; the prompt (prose)
    # keeps what the person typed
    lines = [json.loads(line) for line in text.splitlines()]
    assert str(home) not in json.dumps(lines[1])
    sub = folder / "chats" / SUBAGENT / f"{SUB_CHILD}.jsonl"
    head = json.loads(sub.read_text().splitlines()[0])
    assert head["directories"] == [str(there)] and head["kind"] == "subagent"
    assert read_chat(chat).session_id == SUBAGENT
    refs = {r.session_id: r for r in backend(home_b).sessions()}
    assert refs[SUBAGENT].project == there
    assert backend(home_b).find(None, there).session_id == SUBAGENT
    # B's own my.app chats are where they were
    assert (
        home_b / ".gemini" / "tmp" / "my-app" / "chats" / "session-2026-11-24T14-07-c2fbb176.jsonl"
    ).is_file()
    assert gemini_cleanup(folder / "chats") == []


def test_dot_space_project_and_continuity(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(home)
    bundle = tmp_path / "d.commuter"
    _export(home, DOTSPACE, bundle)
    home_b = tmp_path / "B"
    there = home_b / "w" / "Other Name.v3"
    there.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home_b))
    first = _import(bundle, there)
    assert first.exit_code == 0, first.stderr
    chats = home_b / ".gemini" / "tmp" / "other-name-v3" / "chats"
    placed = chats / "session-2026-11-24T14-08-9dc73036.jsonl"
    assert placed.is_file() and "KIWI-314" in placed.read_text()
    assert "My Project.v2" not in placed.read_text().split("KIWI")[0]
    again = _import(bundle, there)
    assert again.exit_code == 0 and "unchanged" in again.stdout.lower() + again.stderr.lower()
    # B continues the chat; the same bundle coming again changes nothing (local newer)
    grown = (
        placed.read_text()
        + json.dumps(
            {
                "id": "b-1",
                "timestamp": "2026-11-25T10:00:00.000Z",
                "type": "user",
                "content": [{"text": "more at B"}],
            }
        )
        + "\n"
    )
    placed.write_text(grown)
    assert _import(bundle, there).exit_code == 0
    assert placed.read_text() == grown
    # ... and B's continued chat back at A: updated after a backup
    monkeypatch.setenv("HOME", str(home_b))
    back = tmp_path / "back.commuter"
    _export(home_b, DOTSPACE, back)
    monkeypatch.setenv("HOME", str(home))
    updated = _import(back, home / "projects" / "My Project.v2")
    assert updated.exit_code == 0, updated.stderr
    original = home / ".gemini" / "tmp" / "my-project-v2" / "chats" / placed.name
    assert "more at B" in original.read_text()
    backups = Settings.from_env({"HOME": str(home)}).backups_dir
    saved = list(backups.glob(f"*-{DOTSPACE}-*/{placed.name}"))
    assert len(saved) == 1 and "more at B" not in saved[0].read_text()


def test_divergence_keeps_both_as_a_fork(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(home)
    bundle = tmp_path / "p.commuter"
    _export(home, PLAIN, bundle)
    chat = home / ".gemini" / "tmp" / "my-app" / "chats" / "session-2026-11-24T14-07-c2fbb176.jsonl"
    mine = chat.read_text()
    chat.write_text(
        mine
        + json.dumps(
            {"id": "a-local", "type": "user", "timestamp": "x", "content": [{"text": "local turn"}]}
        )
        + "\n"
    )
    staged = tmp_path / "p2.commuter"
    # a diverged bundle: the original plus another turn
    shadow = tmp_path / "shadow"
    install(shadow)
    sc = shadow / ".gemini" / "tmp" / "my-app" / "chats" / chat.name
    sc.write_text(
        sc.read_text().replace(str(shadow), str(home))
        + json.dumps(
            {
                "id": "b-remote",
                "type": "user",
                "timestamp": "y",
                "content": [{"text": "remote turn"}],
            }
        )
        + "\n"
    )
    monkeypatch.setenv("HOME", str(shadow))
    _export(shadow, PLAIN, staged)
    monkeypatch.setenv("HOME", str(home))
    forked = _import(staged, home / "projects" / "my.app")
    assert forked.exit_code == 0, forked.stderr
    assert "fork" in forked.stdout + forked.stderr
    assert "local turn" in chat.read_text()
    forks = [
        r
        for r in backend(home).sessions()
        if r.first_prompt == "Remember the codeword PINEAPPLE-42." and r.session_id != PLAIN
    ]
    assert len(forks) == 1
    fork = forks[0]
    assert fork.path is not None and "remote turn" in fork.path.read_text()
    assert fork.path.name.endswith(f"-{fork.session_id[:8]}.jsonl")
    # made in its origin's start minute: the same time in its name, its own short id
    assert fork.path.name.startswith("session-2026-11-24T14-07-") and fork.path != chat
    assert fork.session_id[:8] not in {
        n.rsplit("-", 1)[1][:8] for n in os.listdir(chat.parent) if n != fork.path.name
    }
    assert read_chat(fork.path).session_id == fork.session_id
    # the same diverged bundle again: no second fork
    assert _import(staged, home / "projects" / "my.app").exit_code == 0
    assert (
        len(
            [
                r
                for r in backend(home).sessions()
                if r.first_prompt == "Remember the codeword PINEAPPLE-42."
            ]
        )
        == 2
    )
    # the message-less leftover of the project's resumed chat went into the backups: gemini's
    # next start (which no longer resumes that chat: the fork is `latest`) deletes nothing
    resumed = chat.parent / "session-2026-11-24T14-07-c3ddfac4.jsonl"
    assert not (chat.parent / "session-2026-11-24T14-08-c3ddfac4.jsonl").exists()
    assert gemini_cleanup(chat.parent, datetime(2026, 11, 25, tzinfo=UTC)) == []
    assert fork.path.is_file() and chat.is_file() and resumed.is_file()


def test_an_imported_chat_survives_gemini_cleanup(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(home)
    chats_a = home / ".gemini" / "tmp" / "my-app" / "chats"
    bundle = tmp_path / "r.commuter"
    _export(home, RESUMED, bundle)
    home_b, there = _home_b(tmp_path, monkeypatch)
    chats = home_b / ".gemini" / "tmp" / "my-app-1" / "chats"
    chats.mkdir(parents=True)
    # a message-less file with the same short id (what a resume here left) would take the
    # imported chat with it on the next gemini start
    shutil.copy(
        chats_a / "session-2026-11-24T14-08-c3ddfac4.jsonl",
        chats / "session-2026-11-24T14-08-c3ddfac4.jsonl",
    )
    imported = _import(bundle, there)
    assert imported.exit_code == 0, imported.stderr
    placed = chats / "session-2026-11-24T14-07-c3ddfac4.jsonl"
    assert placed.is_file()
    # even 29 days after the import and long after its last message at the source
    assert gemini_cleanup(chats, datetime.now(UTC) + timedelta(days=29)) == []
    assert placed.is_file() and "MANGO-77" in placed.read_text()


def test_an_old_chat_is_not_swept_after_import(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(home)
    chat = home / ".gemini" / "tmp" / "my-app" / "chats" / "session-2026-11-24T14-07-c2fbb176.jsonl"
    chat.write_text(chat.read_text().replace("2026-11-24T", "2020-01-01T"))
    bundle = tmp_path / "o.commuter"
    _export(home, PLAIN, bundle)
    home_b, there = _home_b(tmp_path, monkeypatch)
    assert _import(bundle, there).exit_code == 0
    chats = home_b / ".gemini" / "tmp" / "my-app-1" / "chats"
    assert gemini_cleanup(chats) == []
    assert (chats / "session-2020-01-01T14-07-c2fbb176.jsonl").is_file()


# --- bad input --------------------------------------------------------------------------------


def test_a_broken_projects_json_is_kept_and_nothing_is_written(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(home)
    bundle = tmp_path / "p.commuter"
    _export(home, PLAIN, bundle)
    home_b, there = _home_b(tmp_path, monkeypatch)
    (home_b / ".gemini" / "projects.json").write_text("{broken")
    result = _import(bundle, there)
    assert result.exit_code != 0
    assert "projects.json" in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1
    assert (home_b / ".gemini" / "projects.json").read_text() == "{broken"
    assert not (home_b / ".gemini" / "tmp" / "my-app-1" / "chats").exists()


def test_placing_checks_ids_and_member_names(home: Path, tmp_path: Path) -> None:
    from commuter.backends import ImportSource
    from commuter.errors import BundleError
    from commuter.model import ImportOptions

    install(home)
    root = tmp_path / "unpacked"
    (root / "session" / "x").mkdir(parents=True)
    src = home / ".gemini" / "tmp" / "my-app" / "chats" / "session-2026-11-24T14-07-c2fbb176.jsonl"
    shutil.copy(src, root / "session" / "not-a-uuid.jsonl")
    gem = backend(home)
    source = ImportSource(
        "not-a-uuid", str(home / "projects" / "my.app"), root, ("session/not-a-uuid.jsonl",)
    )
    with pytest.raises(BundleError):
        gem.place(source, ImportOptions(project_dir=home / "projects" / "my.app"))
    shutil.copy(src, root / "session" / f"{TOOLS}.jsonl")  # a chat of another session
    source = ImportSource(
        TOOLS, str(home / "projects" / "my.app"), root, (f"session/{TOOLS}.jsonl",)
    )
    with pytest.raises(BundleError):
        gem.place(source, ImportOptions(project_dir=home / "projects" / "my.app"))
    assert not gem.is_session_id("../x") and gem.is_session_id(PLAIN)


def test_project_config_travels_with_consent(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(home)
    project = home / "projects" / "my.app"
    (project / "GEMINI.md").write_text("Be brief.\n")
    (project / ".gemini" / "commands").mkdir(parents=True)
    (project / ".gemini" / "settings.json").write_text('{"hooks": {}}')
    (project / ".gemini" / "commands" / "ship.toml").write_text('prompt = "ship it"\n')
    bundle = tmp_path / "c.commuter"
    _export(home, PLAIN, bundle)
    _home_b_dir, there = _home_b(tmp_path, monkeypatch)
    plain = _import(bundle, there)  # a plain file, not sealed by a paired peer: asks first
    assert plain.exit_code == 0, plain.stderr
    assert not (there / "GEMINI.md").exists() and "--yes" in plain.output
    again = _import(bundle, there, "--yes")
    assert again.exit_code == 0, again.stderr
    assert (there / "GEMINI.md").read_text() == "Be brief.\n"
    assert (there / ".gemini" / "commands" / "ship.toml").is_file()
    assert oct((there / ".gemini" / "settings.json").stat().st_mode & 0o777) == "0o600"


def test_a_chat_of_home_itself_carries_no_gemini_settings(home: Path, tmp_path: Path) -> None:
    from commuter.backends.gemini import _project_members

    install(home)
    (home / "GEMINI.md").write_text("x")
    assert _project_members(home, home / ".gemini") == []


def test_a_line_nested_too_deep_is_one_error_and_nothing_is_written(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(home)
    chat = home / ".gemini" / "tmp" / "my-app" / "chats" / "session-2026-11-24T14-07-c2fbb176.jsonl"
    deep = '{"id":"deep","type":"user","content":' + "[" * 100_000 + "]" * 100_000 + "}\n"
    chat.write_text(chat.read_text() + deep)
    assert PLAIN in {r.session_id for r in backend(home).sessions()}  # listing copes
    bundle = tmp_path / "deep.commuter"
    _export(home, PLAIN, bundle)
    home_b, there = _home_b(tmp_path, monkeypatch)
    before = sorted(p.relative_to(home_b) for p in (home_b / ".gemini").rglob("*"))
    result = _import(bundle, there)
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert sorted(p.relative_to(home_b) for p in (home_b / ".gemini").rglob("*")) == before


def test_a_symlinked_chats_folder_is_not_written_through(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(home)
    bundle = tmp_path / "p.commuter"
    _export(home, PLAIN, bundle)
    home_b, there = _home_b(tmp_path, monkeypatch)
    outside = tmp_path / "outside"
    outside.mkdir()
    folder = home_b / ".gemini" / "tmp" / "my-app-1"
    folder.mkdir()
    (folder / "chats").symlink_to(outside)
    result = _import(bundle, there)
    assert result.exit_code != 0 and "symlink" in result.stderr
    assert list(outside.iterdir()) == []


def test_a_running_gemini_in_the_project_blocks_an_update(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess
    import sys

    install(home)
    bundle = tmp_path / "d.commuter"
    _export(home, DOTSPACE, bundle)
    project = home / "projects" / "My Project.v2"
    chat = (
        home
        / ".gemini"
        / "tmp"
        / "my-project-v2"
        / "chats"
        / "session-2026-11-24T14-08-9dc73036.jsonl"
    )
    before = chat.read_text()
    chat.write_text("\n".join(before.splitlines()[:4]) + "\n")  # the bundle continues it
    fake = tmp_path / "bin" / "gemini"  # a stand-in gemini sleeping in the project
    fake.parent.mkdir()
    fake.write_text("import time\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, str(fake)], cwd=project)
    try:
        time.sleep(0.3)
        busy = _import(bundle, project)
        assert busy.exit_code != 0 and "gemini is running" in busy.stderr
        assert len(chat.read_text().splitlines()) == 4
    finally:
        proc.kill()
        proc.wait()
    done = _import(bundle, project)
    assert done.exit_code == 0, done.stderr
    assert len(chat.read_text().splitlines()) == len(before.splitlines()) + 1  # + lastUpdated


def test_doctor_and_list_show_gemini(home: Path) -> None:
    install(home)
    checks = {c["check"]: c for c in json.loads(run("doctor", "--json").stdout)}
    assert checks["gemini chats"]["ok"] and "6 in" in checks["gemini chats"]["detail"]
    listed = json.loads(run("list", "--json").stdout)
    assert {d["session_id"] for d in listed if d["backend"] == "gemini"} >= {PLAIN, DOTSPACE}


def test_projects_json_is_written_under_geminis_lock(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    install(home)
    bundle = tmp_path / "p.commuter"
    _export(home, PLAIN, bundle)
    home_b, there = _home_b(tmp_path, monkeypatch)
    registry = home_b / ".gemini" / "projects.json"
    lock = registry.with_name("projects.json.lock")
    lock.mkdir()  # a running gemini holds the lock and adds an entry before releasing it

    def gemini_writes() -> None:
        time.sleep(0.5)
        data = json.loads(registry.read_text())
        data["projects"]["/somewhere/else"] = "else"
        registry.write_text(json.dumps(data))
        lock.rmdir()

    writer = threading.Thread(target=gemini_writes)
    writer.start()
    result = _import(bundle, there)
    writer.join()
    assert result.exit_code == 0, result.stderr
    projects = json.loads(registry.read_text())["projects"]
    assert projects["/somewhere/else"] == "else" and projects[str(there)] == "my-app-1"
    assert not lock.exists()


def test_a_lock_left_by_a_writer_that_died_is_waited_out(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """proper-lockfile counts a lock unrefreshed for 10 s as its dead writer's: one 4 s old
    (a gemini killed while registering) is taken once it is stale, and the project lands."""
    install(home)
    bundle = tmp_path / "p.commuter"
    _export(home, PLAIN, bundle)
    home_b, there = _home_b(tmp_path, monkeypatch)
    lock = home_b / ".gemini" / "projects.json.lock"
    lock.mkdir()
    old = time.time() - 4
    os.utime(lock, (old, old))
    result = _import(bundle, there)
    assert result.exit_code == 0, result.stderr
    assert "locked" not in result.stderr
    projects = json.loads((home_b / ".gemini" / "projects.json").read_text())["projects"]
    assert projects[str(there)] == "my-app-1"
    assert not lock.exists()


LEGACY = "0e1d2c3b-4a59-4678-8796-a5b4c3d2e1f0"


def test_an_older_whole_file_json_chat_moves(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(home)
    chats = home / ".gemini" / "tmp" / "my-app" / "chats"
    chat = read_chat(chats / "session-2026-11-24T14-07-c2fbb176.jsonl")
    legacy = {
        "sessionId": LEGACY,
        "projectHash": chat.project_hash,
        "startTime": chat.start_time,
        "lastUpdated": chat.last_updated,
        "kind": "main",
        "messages": [chat.messages[m] for m in chat.ids],
    }
    (chats / f"session-2026-11-24T14-07-{LEGACY[:8]}.json").write_text(json.dumps(legacy, indent=2))
    refs = {r.session_id: r for r in backend(home).sessions()}
    assert refs[LEGACY].first_prompt == "Remember the codeword PINEAPPLE-42."
    bundle = tmp_path / "l.commuter"
    _export(home, LEGACY, bundle)
    home_b, there = _home_b(tmp_path, monkeypatch)
    assert _import(bundle, there).exit_code == 0
    placed = (
        home_b
        / ".gemini"
        / "tmp"
        / "my-app-1"
        / "chats"
        / f"session-2026-11-24T14-07-{LEGACY[:8]}.json"
    )
    data = json.loads(placed.read_text())
    assert data["sessionId"] == LEGACY and len(data["messages"]) == 3
    assert data["lastUpdated"] > chat.last_updated  # gemini's 30-day cleanup counts from here
    assert str(there) in data["messages"][0]["content"][0]["text"]
    assert str(home) not in placed.read_text()
    assert _import(bundle, there).exit_code == 0  # the same again: unchanged
    assert backend(home_b).find(None, there).session_id == LEGACY


def test_the_rewriter_keeps_prose_and_respects_path_boundaries() -> None:
    from commuter.backends.gemini.chat import Rewriter

    rw = Rewriter([("/a/my.app", "/b/app"), ("/a/.gemini/tmp/my-app", "/b/.gemini/tmp/app")])
    record = {
        "id": "1",
        "type": "gemini",
        "content": "I read /a/my.app/x",  # the model's text
        "toolCalls": [
            {
                "name": "read_file",
                "args": {"file_path": "/a/my.app/x", "pattern": "/a/my.app/x"},
                "result": [
                    {
                        "functionResponse": {
                            "response": {"output": "see /a/my.app/y and /a/my.app2/z, '/a/my.app'"}
                        }
                    }
                ],
                "resultDisplay": "wrote /a/my.app/n.txt",
            }
        ],
    }
    out = rw.record(record)
    assert out["content"] == "I read /a/my.app/x"
    call = out["toolCalls"][0]
    assert call["args"] == {"file_path": "/b/app/x", "pattern": "/a/my.app/x"}
    assert call["result"][0]["functionResponse"]["response"]["output"] == (
        "see /b/app/y and /a/my.app2/z, '/b/app'"
    )
    assert call["resultDisplay"] == "wrote /b/app/n.txt"
    context = {
        "$set": {
            "messages": [
                {
                    "id": "c",
                    "type": "user",
                    "content": [
                        {
                            "text": (
                                "<session_context>\nThe project's temporary directory is: "
                                "/a/.gemini/tmp/my-app\n"
                                "  - /a/my.app\n/a/my.app/\n"
                            )
                        }
                    ],
                }
            ]
        }
    }
    text = rw.record(context)["$set"]["messages"][0]["content"][0]["text"]
    assert "/b/.gemini/tmp/app\n" in text and "  - /b/app\n/b/app/\n" in text
    assert "/a/" not in text


# --- which chat `gemini --resume latest` takes --------------------------------------------------


def gemini_latest(chats: Path) -> str | None:
    """The session `gemini --resume latest` takes (0.61.0 getSessionFiles): files
    `session-*.json(l)` with resumable messages, subagents skipped, per session id the one
    updated last, sorted by startTime; the last one."""
    best: dict[str, tuple[datetime, datetime]] = {}
    for name in sorted(os.listdir(chats)):
        if not name.startswith("session-") or not name.endswith((".json", ".jsonl")):
            continue
        chat = read_chat(chats / name)
        if not chat.session_id or not chat.has_messages or chat.kind == "subagent":
            continue
        start = datetime.fromisoformat(
            (chat.start_time or chat.last_updated).replace("Z", "+00:00")
        )
        last = datetime.fromisoformat((chat.last_updated or chat.start_time).replace("Z", "+00:00"))
        if chat.session_id not in best or last > best[chat.session_id][1]:
            best[chat.session_id] = (start, last)
    return max(best, key=lambda sid: best[sid][0]) if best else None


def _own_chat(chats: Path, project: Path, started: datetime) -> tuple[str, Path]:
    """A chat gemini made at this home (metadata line, a prompt, an answer)."""
    sid = "0123abcd-1111-4222-8333-444455556666"
    when = started.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    path = chats / f"session-{started:%Y-%m-%dT%H-%M}-{sid[:8]}.jsonl"
    records = [
        {
            "sessionId": sid,
            "projectHash": project_hash(str(project)),
            "startTime": when,
            "lastUpdated": when,
            "kind": "main",
        },
        {"id": "m1", "timestamp": when, "type": "user", "content": [{"text": "Mine: FIG-1."}]},
        {"id": "m2", "timestamp": when, "type": "gemini", "content": "OK"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return sid, path


def test_resume_latest_takes_the_imported_chat_over_newer_local_ones(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """B's own chat of the project started after the incoming one (which is the one the person
    was last in): the import starts after it, so `--resume latest` takes the import, and B's
    chat is left as it was."""
    install(home)
    tools, plain = tmp_path / "t.commuter", tmp_path / "p.commuter"
    _export(home, TOOLS, tools)
    _export(home, PLAIN, plain)
    home_b, there = _home_b(tmp_path, monkeypatch)
    assert _import(tools, there).exit_code == 0
    [folder] = [
        p.parent
        for p in (home_b / ".gemini" / "tmp").glob("*/.project_root")
        if p.read_text() == str(there)
    ]
    chats = folder / "chats"
    own, own_path = _own_chat(chats, there, datetime.now(UTC) - timedelta(minutes=5))
    before = own_path.read_bytes()
    assert gemini_latest(chats) == own
    result = _import(plain, there)
    assert result.exit_code == 0, result.stderr
    assert gemini_latest(chats) == PLAIN
    assert own_path.read_bytes() == before
    [placed] = [
        cf
        for cf in GeminiBackend(Settings.from_env({"HOME": str(home_b)})).sessions()
        if cf.session_id == PLAIN
    ]
    assert placed.path is not None
    # the chat's own first line keeps its start; a $set after it moves it (gemini merges it)
    first = json.loads(placed.path.read_text().splitlines()[0])
    assert first["startTime"].startswith("2026-11-24T14:07")
    assert read_chat(placed.path).start_time > read_chat(own_path).start_time
    # the same bundle again changes nothing, a third import of another chat goes after it
    assert _import(plain, there).exit_code == 0
    assert gemini_latest(chats) == PLAIN


def test_one_pull_of_several_chats_resumes_the_one_last_active_at_its_source(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from commuter.model import ImportResult

    install(home)
    tools, plain = tmp_path / "t.commuter", tmp_path / "p.commuter"
    _export(home, TOOLS, tools)
    _export(home, PLAIN, plain)
    home_b, there = _home_b(tmp_path, monkeypatch)
    assert _import(tools, there).exit_code == 0
    assert _import(plain, there).exit_code == 0
    b = GeminiBackend(Settings.from_env({"HOME": str(home_b)}))
    placed = {r.session_id: r.path for r in b.sessions() if r.session_id in (TOOLS, PLAIN)}
    chats = placed[PLAIN].parent  # type: ignore[union-attr]
    own, _ = _own_chat(chats, there, datetime.now(UTC) - timedelta(minutes=1))
    assert gemini_latest(chats) == own
    # tools was last active at its source after plain, though imported first
    results = [
        ImportResult(TOOLS, there, "created", placed[TOOLS], last_activity=2000.0),
        ImportResult(PLAIN, there, "created", placed[PLAIN], last_activity=1000.0),
        ImportResult(SUBAGENT, there, "unchanged", None, last_activity=3000.0),
    ]
    b.arrange(results)
    assert gemini_latest(chats) == TOOLS
    b.arrange(list(reversed(results)))  # the order of the results plays no part
    assert gemini_latest(chats) == TOOLS
    results[1] = ImportResult(PLAIN, there, "updated", placed[PLAIN], last_activity=2500.0)
    b.arrange(results)
    assert gemini_latest(chats) == PLAIN
    for path in placed.values():
        assert path is not None and read_chat(path).has_messages
