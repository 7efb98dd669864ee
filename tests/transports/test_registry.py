"""Transport registry (built-ins, entry-point plug-ins, unknown names) and the memory transport."""

from __future__ import annotations

import asyncio
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from claude_home import TOOLS
from transhelp import context, make_world

import commuter.transports as registry
from commuter import core
from commuter.errors import TransportError, UnknownTransport
from commuter.pipeline import pull_all, push_file
from commuter.transports.memory import MemoryHub, MemoryTransport


def test_builtins_load_lazily_by_name():
    assert registry.names()[:3] == ["folder", "lan", "relay"]
    for name in ("folder", "lan", "relay"):
        assert registry.transport_class(name).scheme == name
    with pytest.raises(UnknownTransport):  # one process's dict must not pass for a delivery
        registry.transport_class("memory")


def test_unknown_transport_names_the_known_ones():
    with pytest.raises(UnknownTransport, match=r"unknown transport 'pigeon'.*folder"):
        registry.transport_class("pigeon")


def test_plugins_come_from_the_versioned_entry_point_group(monkeypatch):
    eps = [
        EntryPoint(
            "mem2", "commuter.transports.memory:MemoryTransport", registry.ENTRY_POINT_GROUP
        ),
        EntryPoint("broken", "no.such.module:Thing", registry.ENTRY_POINT_GROUP),
        EntryPoint("folder", "no.such.module:Thing", registry.ENTRY_POINT_GROUP),
    ]
    seen = []

    def fake_entry_points(group):
        seen.append(group)
        return eps

    import importlib.metadata

    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    assert "mem2" in registry.names()
    assert registry.transport_class("mem2") is MemoryTransport
    assert registry.transport_class("folder").__name__ == "FolderTransport"  # built-in wins
    with pytest.raises(UnknownTransport, match="failed to load"):
        registry.transport_class("broken")
    assert seen[0] == "commuter.transports.v1"


def test_memory_transport_carries_a_push_to_a_pull(tmp_path: Path):
    world = make_world(tmp_path)
    hub = MemoryHub()

    def factory(name, ctx):
        return MemoryTransport(ctx, hub)

    bundle = tmp_path / "b.commuter"
    with bundle.open("wb") as fh:
        core.export_to(world.a, fh, session=TOOLS, cwd=world.project_a)
    ctx_a = context(world.a)
    pushed = asyncio.run(push_file(ctx_a, bundle, ctx_a.peers.all(), "memory", factory=factory))
    assert pushed.receipt.transport == "memory" and pushed.receipt.recipients == ("bob",)
    warnings: list[str] = []
    [done] = asyncio.run(
        pull_all(
            context(world.b), core.ImportOptions(), "memory", warn=warnings.append, factory=factory
        )
    )
    assert done.result is not None and done.result.session_id == TOOLS
    assert hub.boxes[context(world.b).identity.device_id] == {}
    hub.down = True
    with pytest.raises(TransportError, match="down"):
        asyncio.run(push_file(ctx_a, bundle, ctx_a.peers.all(), "memory", factory=factory))
