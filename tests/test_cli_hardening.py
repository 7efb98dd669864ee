"""CLI in subprocesses against bad input: one error line, exit 1, nothing written or hung."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_bundle_hostile import bad_size_bundle

TIMEOUT = 60


def env_for(home: Path, **extra: str) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("XDG_", "COMMUTER_")) and k != "CLAUDE_CONFIG_DIR"}
    env.update(HOME=str(home), USER="tester")
    env.update(extra)
    return env


def run(env: dict[str, str], *args: str, cwd: Path | None = None,
        stdin: int | None = subprocess.DEVNULL, timeout: float = TIMEOUT):
    return subprocess.run(
        [sys.executable, "-m", "commuter", *args], env=env, capture_output=True, text=True,
        timeout=timeout, cwd=cwd, stdin=stdin, check=False,
    )


def one_error_line(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), lines[0]
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return env_for(tmp_path / "home")


def test_inspect_of_a_negative_tar_size_is_one_line(tmp_path: Path, env) -> None:
    path = tmp_path / "neg.bundle"
    path.write_bytes(bad_size_bundle(-1))
    one_error_line(run(env, "inspect", str(path)), "corrupt")
    one_error_line(run(env, "import", str(path), "--no-launch"), "corrupt")
    assert not (Path(env["HOME"]) / ".claude").exists()
