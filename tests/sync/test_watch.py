"""The polling watcher: appends and new sessions are seen at the next poll, the full listing
runs only when a store folder changed (or its interval passed)."""

from __future__ import annotations

import shutil

from claude_home import TOOLS, transcript
from transhelp import make_world

from commuter.sync.watch import Watcher


def test_changes_are_seen_without_a_full_listing_each_poll(tmp_path):
    w = make_world(tmp_path)
    watcher = Watcher(w.a, rescan_min=3600)
    seen = watcher.poll()
    assert watcher.scans == 1 and ("claude", TOOLS) in seen
    for _ in range(5):
        watcher.poll()
    assert watcher.scans == 1  # nothing changed: stats only
    path = transcript(w.a.home, w.project_a, TOOLS)
    before = seen[("claude", TOOLS)].version
    with path.open("a") as fh:
        fh.write("\n")
    assert watcher.poll()[("claude", TOOLS)].version != before
    assert watcher.scans == 1  # an append is a stat change, not a new listing
    folder = path.parent.parent / "-somewhere-new"
    folder.mkdir()
    shutil.copy(path, folder / "0c0c0c0c-0000-4000-8000-000000000000.jsonl")
    seen = watcher.poll()
    assert watcher.scans == 2 and ("claude", "0c0c0c0c-0000-4000-8000-000000000000") in seen
    path.unlink()
    assert ("claude", TOOLS) not in watcher.poll()
