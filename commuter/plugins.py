"""Named plug-ins: a table of built-ins (`"name": "module:attr"`) and a versioned entry-point
group (`commuter.backends.v1`, `commuter.transports.v1`), built-ins first, loaded lazily so
that `commuter --help` imports none of them."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping

log = logging.getLogger(__name__)


def entry_point_specs(group: str) -> dict[str, str]:
    """`name -> "module:attr"` of the installed plug-ins of `group` (first of a name wins)."""
    from importlib.metadata import entry_points

    specs: dict[str, str] = {}
    try:
        for ep in entry_points(group=group):
            specs.setdefault(ep.name, ep.value)
    except Exception as exc:  # a broken installed distribution must not break commuter
        log.warning("cannot read %s entry points: %s", group, exc)
    return specs


def names(builtin: Mapping[str, str], group: str) -> list[str]:
    """Every name: built-ins first, then plug-ins of other names."""
    return [*builtin, *(n for n in entry_point_specs(group) if n not in builtin)]


def spec_of(builtin: Mapping[str, str], group: str, name: str) -> str | None:
    """Where `name` lives; a built-in wins over a plug-in of the same name."""
    return builtin.get(name) or entry_point_specs(group).get(name)


def load(spec: str) -> object:
    """The object a `"module:attr"` spec names (ImportError or AttributeError if it cannot)."""
    module_name, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module_name), attr)
