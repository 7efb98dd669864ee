"""A session made by the real claude at home A resumes at home B after export/import, and back."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .fake_model import FakeModel
from .harness import check, project_folder, read_transcript, run_claude, session_files

pytestmark = pytest.mark.e2e


def commuter(
    home: Path, cwd: Path, *args: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python -m commuter *args` as the user whose HOME is `home`; stdin is not a TTY."""
    env = {
        "HOME": str(home),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "COMMUTER_MDNS_INTERFACES": "127.0.0.1",
    }
    return subprocess.run(
        [sys.executable, "-m", "commuter", *args],
        cwd=cwd,
        env=env,
        input=stdin.decode() if stdin is not None else None,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    shown = f"{proc.args}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    assert proc.returncode == 0, shown
    return proc


def test_export_import_continue_and_back(
    tmp_path: Path, claude_bin: Path, fake_model: FakeModel
) -> None:
    home_a, home_b, shared = tmp_path / "a", tmp_path / "b", tmp_path / "Dropbox"
    proj_a = home_a / "projects" / "my.app v2"
    proj_b = home_b / "code" / "my.app v2"
    for d in (proj_a, proj_b, shared):
        d.mkdir(parents=True)

    check(run_claude(claude_bin, home_a, proj_a, ["-p", "Remember KIWI-314."], fake_model.base_url))
    [transcript_a] = session_files(home_a, proj_a)
    sid = transcript_a.stem

    bundle = tmp_path / "s.bundle"
    ok(commuter(home_a, proj_a, "export", "--latest", "-o", str(bundle)))
    assert bundle.is_file()
    assert b"KIWI-314" not in bundle.read_bytes()[:64]  # a container, not a raw transcript

    ok(
        commuter(
            home_b,
            proj_b,
            "config",
            "set",
            "path-map",
            str(home_a / "projects"),
            str(home_b / "code"),
        )
    )
    imported = ok(commuter(home_b, proj_b, "import", str(bundle), "--no-launch"))
    assert f"claude --resume {sid}" in imported.stdout
    [transcript_b] = session_files(home_b, proj_b)
    assert transcript_b.stem == sid
    assert transcript_b.parent == project_folder(home_b, proj_b)
    cwds = {e["cwd"] for e in read_transcript(transcript_b) if "cwd" in e}
    assert cwds == {str(proj_b)}

    fake_model.clear()
    out = check(
        run_claude(
            claude_bin, home_b, proj_b, ["-p", "--continue", "Which codeword?"], fake_model.base_url
        )
    )
    assert out.stdout.strip() == "Codewords seen: KIWI-314."
    assert fake_model.session_ids() == [sid]

    # B carries on and pushes through the shared folder; A pulls and continues with both.
    check(
        run_claude(
            claude_bin, home_b, proj_b, ["-p", "--continue", "Also PEAR-9."], fake_model.base_url
        )
    )
    for home in (home_a, home_b):
        ok(commuter(home, home, "config", "set", "transfer-dir", str(shared)))
    pushed = ok(commuter(home_b, proj_b, "push"))
    assert "folder" in (pushed.stdout + pushed.stderr)
    ok(
        commuter(
            home_a,
            proj_a,
            "config",
            "set",
            "path-map",
            str(home_a / "projects"),
            str(home_b / "code"),
        )
    )
    pulled = ok(commuter(home_a, proj_a, "pull"))
    assert f"claude --resume {sid}" in pulled.stdout
    backups_dir = home_a / ".local" / "share" / "commuter" / "backups"
    # an update that only appended is backed up by a record of the old length and sha256
    # (the new transcript starts with the old one); any other replacement by a copy
    backups = [*backups_dir.rglob("*.jsonl"), *backups_dir.rglob("prefix.json")]
    assert backups, "the older local copy must be backed up before it is replaced"
    assert session_files(home_a, proj_a) == [transcript_a]

    fake_model.clear()
    out = check(
        run_claude(
            claude_bin,
            home_a,
            proj_a,
            ["-p", "--continue", "Which codewords?"],
            fake_model.base_url,
        )
    )
    assert out.stdout.strip() == "Codewords seen: KIWI-314, PEAR-9."
    assert fake_model.session_ids() == [sid]

    # A second pull finds nothing new.
    again = ok(commuter(home_a, proj_a, "pull"))
    assert f"claude --resume {sid}" not in again.stdout


def test_import_with_project_dir_and_stdin(
    tmp_path: Path, claude_bin: Path, fake_model: FakeModel
) -> None:
    home_a, home_b = tmp_path / "a", tmp_path / "b"
    proj_a = home_a / "w" / "john.doe_app"
    proj_b = home_b / "elsewhere" / "checkout"
    for d in (proj_a, proj_b):
        d.mkdir(parents=True)
    check(run_claude(claude_bin, home_a, proj_a, ["-p", "Remember FIG-7."], fake_model.base_url))
    exported = subprocess.run(
        [sys.executable, "-m", "commuter", "export", "--latest", "-o", "-"],
        cwd=proj_a,
        env={"HOME": str(home_a), "PATH": os.environ["PATH"]},
        capture_output=True,
        timeout=60,
        check=True,
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "commuter",
            "import",
            "-",
            "--project-dir",
            str(proj_b),
            "--no-launch",
        ],
        cwd=home_b,
        env={"HOME": str(home_b), "PATH": os.environ["PATH"]},
        input=exported.stdout,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    fake_model.clear()
    out = check(
        run_claude(
            claude_bin, home_b, proj_b, ["-p", "--continue", "Codeword?"], fake_model.base_url
        )
    )
    assert out.stdout.strip() == "Codewords seen: FIG-7."
