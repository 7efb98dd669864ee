"""Backups are pruned (newest N per session, at most M MB; configurable; `backups list|prune`),
so repeated updates of a big session do not pile up copies; `uninstall-data` removes
commuter's own config, keys and data and nothing else."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
from claude_home import TOOLS, install, transcript
from click.testing import CliRunner
from conftest import settings_for

from commuter import backups, config
from commuter.backups import Backup, Limits, plan_prune
from commuter.cli import cli


def run(home: Path, *args: str, input: str | None = None):
    return CliRunner(env={"HOME": str(home), "USER": "tester"}).invoke(cli, list(args), input=input)


def _grow(path: Path, size: int) -> None:
    entry = {
        "type": "user",
        "uuid": str(uuid.uuid4()),
        "sessionId": TOOLS,
        "message": {"role": "user", "content": "x" * size},
    }
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry, separators=(",", ":")) + "\n")


def test_three_updates_of_a_big_session_keep_at_most_two_copies(tmp_path: Path) -> None:
    a = install(tmp_path / "A")
    b = tmp_path / "B"
    (b / "code" / "my.app").mkdir(parents=True)
    sb = settings_for(b)
    config.set_value(sb, "path-map", (str(a / "projects"), str(b / "code")))
    at_a = transcript(a, a / "projects" / "my.app", TOOLS)
    _grow(at_a, 2 << 20)  # a "big" session: 2 MB stands in for 100 MB, same ratios
    size = at_a.stat().st_size
    for i in range(4):  # one import, then three updates
        if i:
            _grow(at_a, 10)
        bundle = tmp_path / f"b{i}.bundle"
        exported = run(a, "export", TOOLS, "-o", str(bundle))
        assert exported.exit_code == 0, exported.output
        imported = run(b, "import", str(bundle), "--no-launch")
        assert imported.exit_code == 0, imported.output
        assert ("updated" if i else "imported") in imported.stdout
    found = backups.list_backups(sb)
    assert len(found) == 2  # the newest two of the three the updates made
    total = sum(x.size for x in found)
    assert total < 3 * size and total <= 2 * at_a.stat().st_size


def _b(stamp: str, sid: str, size: int) -> Backup:
    return Backup(Path(f"/x/{stamp}-{sid}-abcdef"), stamp, sid, size)


def test_plan_keeps_newest_n_per_session_then_fits_the_cap_oldest_first() -> None:
    mb = 1 << 20
    newest_first = [
        _b("20261203T000000", "s1", 40 * mb),
        _b("20261202T000000", "s2", 30 * mb),
        _b("20261201T000000", "s1", 40 * mb),
        _b("20261130T000000", "s2", 30 * mb),
        _b("20261129T000000", "s1", 40 * mb),
    ]
    gone = plan_prune(newest_first, Limits(keep=2, max_bytes=1000 * mb))
    assert [g.stamp for g in gone] == ["20261129T000000"]
    gone = plan_prune(newest_first, Limits(keep=2, max_bytes=100 * mb))
    # beyond two per session, then oldest first down to 100 MB: 70 MB left
    assert [g.stamp for g in gone] == ["20261129T000000", "20261130T000000", "20261201T000000"]
    # A cap below the newest backups alone still keeps the newest of each session.
    gone = plan_prune(newest_first, Limits(keep=5, max_bytes=1 * mb))
    kept = {b.stamp for b in newest_first} - {g.stamp for g in gone}
    assert kept == {"20261203T000000", "20261202T000000"}


def _folder(settings, stamp: str, sid: str, size: int) -> Path:
    path = settings.backups_dir / f"{stamp}-{sid}-{os.urandom(3).hex()}"
    path.mkdir(parents=True)
    (path / f"{sid}.jsonl").write_bytes(b"x" * size)
    return path


def test_backups_list_and_prune_commands_with_config_and_foreign_entries_kept(
    home: Path, settings
) -> None:
    old = _folder(settings, "20250101T000000", TOOLS, 1000)
    mid = _folder(settings, "20250102T000000", TOOLS, 1000)
    new = _folder(settings, "20250103T000000", TOOLS, 1000)
    foreign = settings.backups_dir / "my-notes"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    elsewhere = home / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious").write_text("do not touch")
    link = settings.backups_dir / f"20250104T000000-{TOOLS}-aaaaaa"
    link.symlink_to(elsewhere, target_is_directory=True)
    listed = json.loads(run(home, "backups", "list", "--json").stdout)
    assert [x["path"] for x in listed] == [str(new), str(mid), str(old)]
    assert {x["size"] for x in listed} == {1000}
    dry = run(home, "backups", "prune", "--keep", "1", "--dry-run")
    assert dry.exit_code == 0 and f"would remove {old}" in dry.stdout
    assert old.exists() and mid.exists()
    assert run(home, "config", "set", "backups-keep", "1").exit_code == 0
    pruned = run(home, "backups", "prune")
    assert pruned.exit_code == 0, pruned.output
    assert not old.exists() and not mid.exists() and new.exists()
    assert (foreign / "keep.txt").read_text() == "mine"
    assert (elsewhere / "precious").read_text() == "do not touch" and link.is_symlink()
    bad = run(home, "config", "set", "backups-max-mb", "lots")
    assert bad.exit_code == 1 and "positive whole number" in bad.stderr


def test_uninstall_data_removes_commuters_own_folders_only(home: Path, settings) -> None:
    install(home)
    assert run(home, "config", "set", "name", "laptop").exit_code == 0
    from commuter.peer.identity import KEY_FILE, Identity

    Identity.load_or_create(settings)
    assert (settings.config_dir / KEY_FILE).is_file()
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    (settings.state_dir / "pulled.json").write_text("{}")
    refused = run(home, "uninstall-data")
    assert refused.exit_code == 1 and "--yes" in refused.stderr
    assert settings.config_dir.exists() and settings.data_dir.exists()
    done = run(home, "uninstall-data", "--yes")
    assert done.exit_code == 0, done.output
    assert not settings.config_dir.exists() and not settings.data_dir.exists()
    assert (home / ".claude" / "projects").is_dir()  # the agents' sessions stay
    again = run(home, "uninstall-data", "--yes")
    assert again.exit_code == 0 and "nothing to remove" in again.stdout


def test_uninstall_data_refuses_a_data_dir_that_is_home(home: Path) -> None:
    result = CliRunner(
        env={"HOME": str(home), "COMMUTER_DATA_DIR": str(home), "USER": "tester"}
    ).invoke(cli, ["uninstall-data", "--yes"])
    assert result.exit_code == 1 and "not a folder of commuter's own" in result.stderr
    assert home.is_dir()


@pytest.mark.parametrize("value", ["0", "-1", "1.5"])
def test_backup_limits_must_be_positive_whole_numbers(home: Path, value: str) -> None:
    result = run(home, "config", "set", "backups-keep", value)
    assert result.exit_code != 0
