"""Fixtures for the end-to-end tests: the Claude Code binary, the fake model server, a HOME."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .fake_model import FakeModel
from .harness import CLAUDE_VERSIONS, ClaudeNotFound, find_claude


def pytest_configure(config: pytest.Config) -> None:
    """Register the e2e marker (harmless when pyproject registers it too)."""
    config.addinivalue_line(
        "markers", "e2e: runs the real claude CLI against the fake model server"
    )


@pytest.fixture(
    scope="session", params=CLAUDE_VERSIONS, ids=[f"claude-{v}" for v in CLAUDE_VERSIONS]
)
def claude_bin(request: pytest.FixtureRequest) -> Path:
    """Path of each pinned Claude Code version in turn (every e2e test runs once per version);
    fails (never skips) when one is missing."""
    try:
        return find_claude(request.param)
    except ClaudeNotFound as exc:
        problem = str(exc)
    pytest.fail(problem, pytrace=False)


@pytest.fixture
def fake_model() -> Iterator[FakeModel]:
    """A fresh fake Messages API on 127.0.0.1, served from a background thread."""
    with FakeModel() as server:
        yield server


@pytest.fixture
def claude_home(tmp_path: Path) -> Path:
    """An empty HOME for one claude user."""
    home = tmp_path / "home"
    home.mkdir()
    return home
