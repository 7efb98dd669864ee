"""Progress bars on stderr for the steps of a transfer that take more than a moment.

A command that a person runs calls `enable()`; the code it runs opens a step with
`step(label, total)`, and the loops that move the bytes (bundle writer and reader, uploads,
downloads, folder copies) call `advance(n)`. A bar (bytes, speed, ETA) is drawn only when
enabled, stderr is a terminal, the step moves at least `MIN_BYTES`, and COMMUTER_NO_PROGRESS
is unset; otherwise `advance` costs one global read. Steps nest (a pull fetches, then
imports); the innermost step with a bar gets the bytes. Bars are transient: once a step ends
its line is gone, and what the command prints afterwards stays readable.

`advance` may be called from worker threads (asyncio.to_thread): rich's Progress is
thread-safe, and the stack below is changed only by `step`, which the daemon (running
transfers side by side) never enables.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MIN_BYTES = 8 << 20  # below this a step is over before a bar could say anything

_enabled = False  # set by the commands a person runs; the daemon never draws
_progress: Any = None  # the rich Progress while any bar is shown
_tasks: list[Any] = []  # its task ids, innermost last


def enable() -> None:
    """Let steps draw bars in this process (a command run by a person calls it)."""
    global _enabled
    _enabled = True


def wanted(total: int | None) -> bool:
    """Whether a step of `total` bytes gets a bar here and now."""
    if not _enabled or total is None or total < MIN_BYTES:
        return False
    if os.environ.get("COMMUTER_NO_PROGRESS"):
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def size_of(path: Path) -> int | None:
    """A file's size as a step's total; None if it cannot be had (then no bar)."""
    try:
        return path.stat().st_size
    except OSError:
        return None


@contextmanager
def step(label: str, total: int | None) -> Iterator[None]:
    """Show `label` with a bar of `total` bytes while the block runs (see the module)."""
    global _progress
    if not wanted(total):
        yield  # an outer step's bar, if any, gets the bytes
        return
    started = _progress is None
    if started:
        _progress = _make()
        _progress.start()
    task = _progress.add_task(label, total=total)
    _tasks.append(task)
    try:
        yield
    finally:
        _tasks.pop()
        _progress.remove_task(task)
        if started:
            _progress.stop()
            _progress = None


def shown() -> bool:
    """Whether a bar is shown (a loop may then take a slower, counted path)."""
    return _progress is not None and bool(_tasks)


def advance(n: int) -> None:
    """Count `n` bytes of the innermost step (nothing when no bar is shown)."""
    progress = _progress
    if progress is not None and _tasks:
        progress.advance(_tasks[-1], n)


def _make() -> Any:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
