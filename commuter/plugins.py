"""Named plug-ins: a table of built-ins (`"name": "module:attr"`) and a versioned entry-point
group (`commuter.backends.v1`, `commuter.transports.v1`), built-ins first, loaded lazily so
that `commuter --help` imports none of them.

Reading the entry points imports importlib.metadata and opens every installed distribution
(about 30 ms). Given a cache dir, what was found is kept there (`plugins.json`, safe to
delete) under a key of the sys.path folders and their mtimes: installing or removing a
distribution adds or removes a folder in its site dir, which changes that dir's mtime.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CACHE_FILE = "plugins.json"
_VERSION = 1
_KEEP = 8  # site layouts kept (`python -m` puts the working directory on sys.path)
_SETTLED_NS = 2_000_000_000  # a folder changed this recently may change again unseen


def entry_point_specs(
    group: str, cache_dir: Path | None = None, *, fresh: bool = False
) -> dict[str, str]:
    """`name -> "module:attr"` of the installed plug-ins of `group` (first of a name wins);
    with `cache_dir`, from the cache while no sys.path folder has changed (`fresh`: read
    afresh, and the cache refreshed)."""
    if cache_dir is None:
        return _scan(group)
    key, settled = _site_key()
    if key is not None and not fresh:
        cached = _cached(cache_dir / CACHE_FILE, key, group)
        if cached is not None:
            return cached
    specs = _scan(group)
    if key is not None and settled:
        _remember(cache_dir / CACHE_FILE, key, group, specs)
    return specs


def names(
    builtin: Mapping[str, str], group: str, cache_dir: Path | None = None, *, fresh: bool = False
) -> list[str]:
    """Every name: built-ins first, then plug-ins of other names."""
    found = entry_point_specs(group, cache_dir, fresh=fresh)
    return [*builtin, *(n for n in found if n not in builtin)]


def spec_of(
    builtin: Mapping[str, str], group: str, name: str, cache_dir: Path | None = None
) -> str | None:
    """Where `name` lives; a built-in wins over a plug-in of the same name. A name the cache
    does not know is looked up afresh."""
    if name in builtin:
        return builtin[name]
    spec = entry_point_specs(group, cache_dir).get(name)
    if spec is None and cache_dir is not None:
        spec = _scan(group).get(name)
    return spec


def load(spec: str) -> object:
    """The object a `"module:attr"` spec names (ImportError or AttributeError if it cannot)."""
    module_name, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def _scan(group: str) -> dict[str, str]:
    from importlib.metadata import entry_points

    specs: dict[str, str] = {}
    try:
        for ep in entry_points(group=group):
            specs.setdefault(ep.name, ep.value)
    except Exception as exc:  # a broken installed distribution must not break commuter
        import logging

        logging.getLogger(__name__).warning("cannot read %s entry points: %s", group, exc)
    return specs


def _site_key() -> tuple[str | None, bool]:
    """The sys.path folders (absolute) with their mtimes, and whether none changed in the
    last two seconds; no key when a finder other than the path finder lists distributions."""
    from importlib.machinery import PathFinder

    if any(f is not PathFinder and hasattr(f, "find_distributions") for f in sys.meta_path):
        return None, False
    now = time.time_ns()
    parts: list[tuple[str, int]] = []
    settled = True
    for entry in sys.path:
        path = os.path.abspath(entry or ".")
        try:
            mtime = os.stat(path).st_mtime_ns
        except (OSError, ValueError):
            mtime = -1
        settled = settled and now - mtime >= _SETTLED_NS
        parts.append((path, mtime))
    return json.dumps(parts), settled


def _read(file: Path) -> list[dict[str, Any]]:
    """The cache's records (key, groups), [] for a missing or foreign file."""
    try:
        doc = json.loads(file.read_bytes())
    except (OSError, ValueError):
        return []
    if not isinstance(doc, dict) or doc.get("version") != _VERSION:
        return []
    sites = doc.get("sites")
    if not isinstance(sites, list):
        return []
    return [
        s
        for s in sites
        if isinstance(s, dict)
        and isinstance(s.get("key"), str)
        and isinstance(s.get("groups"), dict)
    ]


def _cached(file: Path, key: str, group: str) -> dict[str, str] | None:
    for site in _read(file):
        if site["key"] == key:
            specs = site["groups"].get(group)
            if isinstance(specs, dict) and all(
                isinstance(k, str) and isinstance(v, str) for k, v in specs.items()
            ):
                return dict(specs)
            return None
    return None


def _remember(file: Path, key: str, group: str, specs: dict[str, str]) -> None:
    """Keep `specs` under `key` (this layout first, at most _KEEP); a failure leaves the
    cache as it was."""
    sites = _read(file)
    mine: dict[str, Any] = next((s for s in sites if s["key"] == key), {"key": key, "groups": {}})
    mine["groups"][group] = specs
    sites = [mine, *(s for s in sites if s is not mine)][:_KEEP]
    from commuter.fsutil import atomic_writer

    with contextlib.suppress(OSError, ValueError):
        file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with atomic_writer(file, 0o600, fsync=False) as out:
            out.write(json.dumps({"version": _VERSION, "sites": sites}).encode())
