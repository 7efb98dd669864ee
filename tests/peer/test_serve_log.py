"""`commuter serve`'s log as a person reads it: each transfer names its session and project,
not an inbox file; a sender that goes away mid-upload is one line, never a traceback."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

from claude_home import TOOLS, install
from peerhelp import (
    ALICE,
    ServeProcess,
    inbox_files,
    machine,
    sealed_payload,
    signed_upload,
    trust,
)
from test_auto_import import _env

from commuter import core
from commuter.peer import client, seal
from commuter.peer.identity import Identity
from commuter.peer.peers import Peers
from commuter.settings import Settings


def _pair(tmp_path: Path) -> tuple[Settings, Settings, Identity]:
    sa = machine(install(tmp_path / "A"))
    sb = machine(tmp_path / "B")
    bob = Identity.load_or_create(sb)
    trust(sa, "bob", bob)
    trust(sb, "alice", ALICE)
    return sa, sb, bob


def _sealed_session(sa: Settings, bob: Identity, tmp: Path) -> Path:
    plain = tmp / "s.bundle"
    with plain.open("wb") as fh:
        core.export_to(sa, fh, session=TOOLS)
    sealed = tmp / "s.sealed"
    seal.seal_file(plain, sealed, ALICE, [bob.public_key])
    return sealed


def _half_upload(address: str, data: bytes, bob: Identity) -> None:
    """POST `data` announcing its whole length, send half of it, then close the socket."""
    host, port = address.rsplit(":", 1)
    headers = signed_upload(ALICE, data, to=bob)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            (
                f"POST /v1/bundles HTTP/1.1\r\nHost: {address}\r\n{head}"
                f"Content-Type: application/octet-stream\r\nContent-Length: {len(data)}\r\n\r\n"
            ).encode()
        )
        sock.sendall(data[: len(data) // 2])
        time.sleep(0.3)  # the daemon has taken frames by now


def _wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_a_sender_that_aborts_mid_upload_is_one_line_and_leaves_nothing(tmp_path: Path):
    _sa, sb, bob = _pair(tmp_path)
    data = sealed_payload(tmp_path, ALICE, bob, size=3 * seal.CHUNK).read_bytes()
    daemon = ServeProcess(_env(sb.home))
    try:
        _half_upload(daemon.address, data, bob)
        _wait_for(lambda: not any(n.endswith(".tmp") for n in inbox_files(sb)))
        assert inbox_files(sb) == []
    finally:
        _code, out, err = daemon.stop()
    text = out + err
    assert "Traceback" not in text, text
    about = [line for line in text.splitlines() if "alice" in line]
    assert len(about) == 1, text
    assert "went away" in about[0] and "alice" in about[0], about
    assert err.strip() == "" or len(err.strip().splitlines()) == 1, err


def test_the_log_names_session_and_project_not_files(tmp_path: Path):
    sa, sb, bob = _pair(tmp_path)
    sealed = _sealed_session(sa, bob, tmp_path)
    daemon = ServeProcess(_env(sb.home))
    try:
        peer = Peers.load(sa).get("bob")

        async def send() -> dict[str, str]:
            async with client.PeerClient(sa, ALICE, peer, daemon.address) as c:
                return await c.upload(sealed)

        answer = asyncio.run(send())
    finally:
        _code, out, err = daemon.stop()
    assert answer["status"] == "stored"
    [line] = [line for line in out.splitlines() if "alice" in line]
    assert TOOLS[:8] in line and "my.app" in line, line
    assert answer["id"] not in line and ".sealed" not in line, line
    assert "Traceback" not in out + err
