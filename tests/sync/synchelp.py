"""Helpers for the sync tests: run the daemon's loops in-process, wait for a condition."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from commuter.peer.identity import Identity
from commuter.settings import Settings
from commuter.sync.daemon import SyncDaemon, SyncOptions


def daemon(settings: Settings, quiet: float = 0.0, **kw: float) -> tuple[SyncDaemon, list[str]]:
    lines: list[str] = []
    d = SyncDaemon(
        settings,
        Identity.load_or_create(settings),
        SyncOptions(quiet=quiet, poll=0.2, pull_every=0.2, **kw),
        log=lines.append,
    )
    return d, lines


async def until(check: Callable[[], bool], within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)
