"""Shared fixtures: every test runs in a fake HOME with commuter's env vars and those of every
backend (its `env_vars`: CLAUDE_CONFIG_DIR, ...) cleared."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from commuter.backends import all_env_vars
from commuter.settings import Settings

_CLEARED_PREFIXES = ("XDG_", "COMMUTER_")
_CLEARED = frozenset(all_env_vars())


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty HOME for this test."""
    fake = tmp_path / "fakehome"
    fake.mkdir()
    monkeypatch.setenv("HOME", str(fake))
    for var in list(os.environ):
        if var.startswith(_CLEARED_PREFIXES) or var in _CLEARED:
            monkeypatch.delenv(var, raising=False)
    return fake


@pytest.fixture
def settings(home: Path) -> Settings:
    """Settings of the fake HOME."""
    return Settings.from_env({"HOME": str(home), "USER": "tester"})


def settings_for(home: Path) -> Settings:
    """Settings of another fake machine whose HOME is `home` (two-machine tests)."""
    return Settings.from_env({"HOME": str(home), "USER": "tester"})


def answering(answer: str, asked: list[str]) -> Callable[[str, tuple[str, ...]], str]:
    """An ImportOptions.ask that notes each question in `asked` and answers `answer`."""

    def ask(question: str, _choices: tuple[str, ...]) -> str:
        asked.append(question)
        return answer

    return ask
