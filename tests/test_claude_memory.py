"""The project's auto-memory travels with its sessions and is merged, never overwritten."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from claude_home import V332, DirSink, carry, deep_line, install, transcript
from conftest import answering, settings_for

from commuter import config
from commuter.backends import ImportSource
from commuter.backends.claude import ClaudeBackend
from commuter.backends.claude.paths import claude_project_folder
from commuter.errors import BundleError
from commuter.model import ImportOptions, ImportResult
from commuter.settings import Settings

PLAIN, TOOLS = V332.sessions["plain"], V332.sessions["tools"]
FACT = b"---\nname: codeword\ndescription: the codeword\n---\n\nThe codeword is MEMO-55.\n"
INDEX = b"- [Codeword](codeword.md) \xe2\x80\x94 the project codeword\n"
VERIFIED = ImportOptions(sender_verified=True)


def memory_of(home: Path, project: Path) -> Path:
    return home / ".claude" / "projects" / claude_project_folder(str(project)) / "memory"


@pytest.fixture
def two(tmp_path: Path) -> tuple[Path, Path, Settings, Settings, Path, Path]:
    a = install(tmp_path / "home", V332)
    b = tmp_path / "office"
    proj_a, proj_b = a / "projects" / "my.app", b / "work" / "my.app"
    proj_b.mkdir(parents=True)
    sa, sb = settings_for(a), settings_for(b)
    config.set_value(sb, "path-map", (str(a / "projects"), str(b / "work")))
    mem = memory_of(a, proj_a)
    mem.mkdir()
    (mem / "MEMORY.md").write_bytes(INDEX)
    (mem / "codeword.md").write_bytes(FACT)
    return a, b, sa, sb, proj_a, proj_b


def move(
    two, tmp_path: Path, options: ImportOptions = VERIFIED, session: str = PLAIN
) -> ImportResult:
    _a, _b, sa, sb, proj_a, _proj_b = two
    res = carry(sa, sb, tmp_path / "stage", session=session, cwd=proj_a, options=options)
    assert isinstance(res, ImportResult)
    return res


def files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_missing_memory_is_written_without_a_question_from_a_paired_peer(two, tmp_path) -> None:
    _a, b, *_rest, proj_b = two
    asked: list[str] = []
    res = move(
        two,
        tmp_path,
        ImportOptions(sender_verified=True, interactive=True, ask=answering("no", asked)),
    )
    assert files(memory_of(b, proj_b)) == {"MEMORY.md": INDEX, "codeword.md": FACT}
    assert asked == [] and res.action == "created"


def test_every_session_of_the_project_carries_the_memory(two) -> None:
    _a, _b, sa, _sb, proj_a, _ = two
    backend = ClaudeBackend(sa)
    for sid in (PLAIN, TOOLS):
        plan = backend.collect(backend.find(sid, proj_a))
        names = [name for name, _ in plan.members if name.startswith("memory/")]
        assert names == ["memory/MEMORY.md", "memory/codeword.md"]
    # ...and no other project's session does
    other = backend.collect(backend.find(V332.sessions["dot-space"], proj_a))
    assert not [n for n, _ in other.members if n.startswith("memory/")]


def test_identical_memory_is_left_alone(two, tmp_path: Path) -> None:
    _a, b, *_rest, proj_b = two
    move(two, tmp_path)
    mem = memory_of(b, proj_b)
    os.utime(mem / "codeword.md", (1_000_000, 1_000_000))
    move(two, tmp_path)
    assert (mem / "codeword.md").stat().st_mtime == 1_000_000
    assert files(mem) == {"MEMORY.md": INDEX, "codeword.md": FACT}


def test_a_memory_file_that_differs_is_kept_beside_the_local_one_once(two, tmp_path) -> None:
    _a, b, *_rest, proj_b = two
    mem = memory_of(b, proj_b)
    mem.mkdir(parents=True)
    local_fact = FACT.replace(b"MEMO-55", b"OFFICE-9")
    local_index = b"- [Codeword](codeword.md) \xe2\x80\x94 office notes\n- [Build](build.md)\n"
    (mem / "codeword.md").write_bytes(local_fact)
    (mem / "MEMORY.md").write_bytes(local_index)
    res = move(two, tmp_path)
    got = files(mem)
    assert got["codeword.md"] == local_fact
    assert got["codeword.from-a.md"] == FACT  # the bundle's origin is tester@a
    index = got["MEMORY.md"]
    assert index.startswith(local_index)
    added = index[len(local_index) :].decode().splitlines()
    assert len(added) == 1 and "](codeword.from-a.md)" in added[0]
    assert any("codeword.from-a.md" in w for w in res.warnings)
    # The same bundle again: nothing more.
    move(two, tmp_path)
    assert files(mem) == got


def test_a_differing_index_gains_only_the_links_it_lacks(two, tmp_path: Path) -> None:
    a, b, *_rest, proj_a, proj_b = two
    (memory_of(a, proj_a) / "MEMORY.md").write_bytes(INDEX + b"- [Deploy](deploy.md) - how\n")
    (memory_of(a, proj_a) / "deploy.md").write_bytes(b"deploy with make\n")
    mem = memory_of(b, proj_b)
    mem.mkdir(parents=True)
    (mem / "MEMORY.md").write_bytes(b"- [Codeword](codeword.md) - mine\n")
    move(two, tmp_path)
    assert (mem / "MEMORY.md").read_bytes() == (
        b"- [Codeword](codeword.md) - mine\n- [Deploy](deploy.md) - how\n"
    )
    assert (mem / "deploy.md").read_bytes() == b"deploy with make\n"
    assert (mem / "codeword.md").read_bytes() == FACT


def test_memory_from_a_plain_bundle_needs_consent(two, tmp_path: Path) -> None:
    _a, b, *_rest, proj_b = two
    mem = memory_of(b, proj_b)
    res = move(two, tmp_path, ImportOptions())
    assert res.action == "created"  # the session itself is placed
    assert not mem.exists() or files(mem) == {}
    assert any("project memory" in w and "--yes" in w for w in res.warnings)
    questions: list[str] = []
    move(two, tmp_path, ImportOptions(interactive=True, ask=answering("yes", questions)))
    assert len(questions) == 1 and "memory" in questions[0]
    assert files(mem) == {"MEMORY.md": INDEX, "codeword.md": FACT}


def test_dry_run_writes_no_memory(two, tmp_path: Path) -> None:
    _a, b, *_rest, proj_b = two
    res = move(two, tmp_path, ImportOptions(dry_run=True))
    assert res.action == "dry-run" and not memory_of(b, proj_b).exists()
    assert any("project memory" in w for w in res.warnings)


def test_memory_is_never_written_through_a_symlink(two, tmp_path: Path) -> None:
    _a, b, *_rest, proj_b = two
    mem = memory_of(b, proj_b)
    mem.mkdir(parents=True)
    outside = tmp_path / "outside.md"
    outside.write_bytes(b"mine\n")
    (mem / "codeword.md").symlink_to(outside)
    res = move(two, tmp_path)
    assert outside.read_bytes() == b"mine\n" and (mem / "codeword.md").is_symlink()
    assert any("symlink" in w for w in res.warnings)


def test_hostile_memory_names_write_nothing_outside(two, tmp_path: Path) -> None:
    _a, b, sa, sb, proj_a, proj_b = two
    backend = ClaudeBackend(sa)
    plan = backend.collect(backend.find(PLAIN, proj_a))
    stage = tmp_path / "stage"
    sink = DirSink(stage)
    plan.write_members(sink)
    for name in (
        "memory/../../../evil.md",
        "memory/a/../../evil.md",
        "memory/run.sh",
        "memory/.hidden.md",
        "memory/a/b/c/d/e.md",
    ):
        sink.add_bytes(name.replace("..", "dots"), b"x")  # the file exists in the stage...
        sink.names[-1] = name  # ...but the member list names it as the bundle says
    source = ImportSource(
        session_id=PLAIN,
        project_dir=plan.project_dir,
        root=stage,
        members=tuple(sink.names),
        git=None,
        meta=plan.meta,
        origin="t@a",
    )
    ClaudeBackend(sb).place(source, VERIFIED)
    assert files(memory_of(b, proj_b)) == {"MEMORY.md": INDEX, "codeword.md": FACT}
    assert not list(b.rglob("evil.md")) and not list(tmp_path.glob("evil.md"))


def test_a_refused_bundle_leaves_no_memory(two, tmp_path: Path) -> None:
    a, b, _sa, _sb, proj_a, proj_b = two
    src = transcript(a, proj_a, PLAIN)
    with src.open("a", encoding="utf-8") as fh:
        fh.write(deep_line(proj_a, 300) + "\n")
    with pytest.raises(BundleError):
        move(two, tmp_path)
    assert not memory_of(b, proj_b).exists() or files(memory_of(b, proj_b)) == {}


def test_memory_lands_in_the_named_project_folder(two, tmp_path: Path) -> None:
    _a, b, sa, _sb, proj_a, _proj_b = two
    sb = Settings.from_env(
        {
            "HOME": str(b),
            "USER": "t",
            "CLAUDE_CONFIG_DIR": str(b / ".claude"),
            "CLAUDE_CODE_PROJECT_DIR_NAME": "team",
        }
    )
    config.set_value(sb, "path-map", (str(proj_a.parent), str(b / "work")))
    carry(sa, sb, tmp_path / "stage", session=PLAIN, cwd=proj_a, options=VERIFIED)
    assert files(b / ".claude" / "projects" / "team" / "memory") == {
        "MEMORY.md": INDEX,
        "codeword.md": FACT,
    }


def test_this_machines_own_copy_coming_back_is_not_added_again(two, tmp_path: Path) -> None:
    a, b, sa, sb, proj_a, proj_b = two
    mem_b = memory_of(b, proj_b)
    mem_b.mkdir(parents=True)
    (mem_b / "codeword.md").write_bytes(b"office version\n")
    move(two, tmp_path)  # office gets codeword.from-a.md
    assert (mem_b / "codeword.from-a.md").read_bytes() == FACT
    # Back home (its host tag is "a" there): the office's copy of home's file is not added.
    sa = Settings.from_env({"HOME": str(a), "USER": "t"})
    sa = type(sa)(**{**{f: getattr(sa, f) for f in sa.__dataclass_fields__}, "hostname": "a"})
    sb_office = type(sb)(
        **{**{f: getattr(sb, f) for f in sb.__dataclass_fields__}, "hostname": "office"}
    )
    config.set_value(sa, "path-map", (str(a / "projects"), str(b / "work")))
    shutil.rmtree(tmp_path / "stage")
    carry(sb_office, sa, tmp_path / "stage", session=PLAIN, cwd=proj_b, options=VERIFIED)
    mem_a = memory_of(a, proj_a)
    assert not (mem_a / "codeword.from-a.md").exists()
    # carry() names the origin tester@a, so the office's version arrives tagged a-2 here
    assert (mem_a / "codeword.from-a-2.md").read_bytes() == b"office version\n"
    assert (mem_a / "codeword.md").read_bytes() == FACT


def test_memory_learned_later_arrives_with_an_unchanged_session(two, tmp_path: Path) -> None:
    a, b, *_rest, proj_a, proj_b = two
    assert move(two, tmp_path).action == "created"
    (memory_of(a, proj_a) / "later.md").write_bytes(b"learned in another session\n")
    res = move(two, tmp_path)
    assert res.action == "unchanged"
    assert (memory_of(b, proj_b) / "later.md").read_bytes() == b"learned in another session\n"
