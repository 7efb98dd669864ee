"""The import plumbing every backend shares: project config by a backend's own list, consent,
backups and the all-or-nothing pending write."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import answering

from commuter.backends import ImportSource
from commuter.model import ImportOptions
from commuter.placing import Backups, Pending, ProjectConfig, project_conflicts, write_project_files
from commuter.settings import Settings

SPEC = ProjectConfig(
    files=("AGENTS.md", ".tool/hooks.toml"),
    dirs=(".tool/prompts",),
    runs_commands=(".tool/hooks.toml",),
    steers="steers the tool",
)


def source(tmp_path: Path, files: dict[str, bytes]) -> ImportSource:
    root = tmp_path / "stage"
    for rel, data in files.items():
        (root / "project" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "project" / rel).write_bytes(data)
    return ImportSource("s1", "/src", root, tuple(f"project/{rel}" for rel in files))


def write(settings: Settings, src: ImportSource, target: Path, options: ImportOptions):
    warnings: list[str] = []
    backed_up: list[Path] = []
    write_project_files(
        src,
        target,
        SPEC,
        options,
        backups=Backups(settings),
        sid="s1",
        warnings=warnings,
        backed_up=backed_up,
    )
    return warnings, backed_up


def test_only_the_backends_files_come_and_commands_need_a_yes(
    tmp_path: Path, settings: Settings
) -> None:
    target = tmp_path / "proj"
    target.mkdir()
    src = source(
        tmp_path,
        {
            "AGENTS.md": b"a",
            ".tool/hooks.toml": b"h",
            ".tool/prompts/x.md": b"p",
            "CLAUDE.md": b"c",
            ".tool/other": b"o",
        },
    )
    dry = project_conflicts(src, target, SPEC, ImportOptions(sender_verified=True))
    assert dry == [
        "the bundle brings .tool/hooks.toml, which can run commands; "
        "import writes it only with --yes"
    ]
    warnings, _ = write(settings, src, target, ImportOptions(sender_verified=True))
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()) == [
        ".tool/prompts/x.md",
        "AGENTS.md",
    ]
    assert warnings == [
        "did not write the bundle's .tool/hooks.toml: it can run commands; --yes takes it"
    ]
    asked: list[str] = []
    options = ImportOptions(interactive=True, ask=answering("yes", asked))
    (target / "AGENTS.md").write_bytes(b"mine")
    warnings, backed_up = write(settings, src, target, options)
    assert warnings == [] and (target / "AGENTS.md").read_bytes() == b"a"
    assert [p.read_bytes() for p in backed_up] == [b"mine"]
    assert any("steers the tool; replace yours?" in q for q in asked)
    assert (target / ".tool/hooks.toml").stat().st_mode & 0o777 == 0o600


def test_a_pending_write_that_fails_leaves_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "new" / "deep"
    with pytest.raises(RuntimeError), Pending() as pending:
        with pending.writer(dest / "a") as out:
            out.write(b"a")
        raise RuntimeError("boom")
    assert not (tmp_path / "new").exists()
    two = tmp_path / "two"
    two.write_bytes(b"2")
    with Pending() as pending:
        with pending.writer(dest / "first") as out:
            out.write(b"1")
        pending.copy(two, dest / "second")
        assert not (dest / "first").exists()  # nothing is visible before commit
        pending.commit()
    assert (dest / "first").read_bytes() == b"1" and (dest / "second").read_bytes() == b"2"
