"""Every module of the package imports on its own; the HTTP boundary sits low in the graph."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from test_layout import import_graph

import commuter

PACKAGE = Path(commuter.__file__).parent


def _modules() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return [n for n in names if n != "commuter.__main__"]


MODULES = _modules()


def _import_alone(name: str) -> tuple[str, int, str]:
    done = subprocess.run(
        [sys.executable, "-c", f"import {name}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return name, done.returncode, done.stderr


def test_every_module_imports_on_its_own_in_a_fresh_interpreter():
    assert "commuter.commands.transfer" in MODULES and "commuter.http" in MODULES
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(_import_alone, MODULES))
    failed = {name: (err.strip().splitlines() or ["?"])[-1] for name, rc, err in results if rc}
    assert failed == {}


def test_the_http_boundary_and_the_errors_import_nothing_above_them():
    graph = import_graph()  # cycles anywhere: tests/test_layout.py
    assert graph["commuter.errors"] == set()
    assert graph["commuter.http"] <= {"commuter.errors", "commuter.settings"}
    assert graph["commuter.peer.protocol"] == set()
    assert "commuter.cli" not in set().union(
        *(deps for name, deps in graph.items() if name.startswith("commuter.commands"))
    )
    assert "commuter.peer.server" not in graph["commuter.peer.client"]
    assert "commuter.peer.client" not in graph["commuter.peer.server"]
