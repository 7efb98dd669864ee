"""The daemon's connections: idle ones are closed, their number is capped so a paired peer
always gets in, a stalled body is given up on, and running out of file descriptors is one
log line."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from peerhelp import ALICE, BOB, give_identity, inbox_files, machine, sealed_payload, trust

from commuter.peer import auth, client, seal, server
from commuter.peer.peers import Peer

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@contextlib.asynccontextmanager
async def daemon(settings, limits: server.Limits):
    """serve() for BOB on 127.0.0.1 (ALICE paired), in this loop; yields its address."""
    trust(settings, "alice", ALICE)
    lines: list[str] = []
    stop = asyncio.Event()
    task = asyncio.create_task(
        server.serve(
            settings,
            BOB,
            name="bob",
            host="127.0.0.1",
            port=0,
            mdns=False,
            log=lines.append,
            stop=stop,
            limits=limits,
        )
    )
    try:
        for _ in range(500):  # until it says where it listens (bounded)
            found = [m for ln in lines if (m := re.search(r":(\d+)$", ln))]
            if found or task.done():
                break
            await asyncio.sleep(0.02)
        assert found, (lines, task)
        yield f"127.0.0.1:{found[0].group(1)}", lines
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def _connect(address: str, send: bytes = b"") -> Conn:
    host, port = address.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    if send:
        writer.write(send)
        await writer.drain()
    return reader, writer


async def _closed_by_server(conn: Conn, within: float) -> bytes:
    """What the server sent before it closed the connection (TimeoutError if it did not)."""
    reader, _writer = conn
    got = b""
    async with asyncio.timeout(within):
        while chunk := await reader.read(4096):
            got += chunk
    return got


async def _closed_now(conns: list[Conn]) -> list[Conn]:
    """The connections the server has closed already (their reader is at EOF)."""
    await asyncio.sleep(0)
    closed = []
    for conn in conns:
        reader, _ = conn
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.01):
                await reader.read(4096)
        if reader.at_eof():
            closed.append(conn)
    return closed


def _close_all(conns: list[Conn]) -> None:
    for _reader, writer in conns:
        writer.close()


async def _paired_request(alice_settings, address: str) -> list[client.ListedSession]:
    bob = Peer.new("bob", BOB.public_key, address)
    async with client.PeerClient(alice_settings, ALICE, bob, address) as c:
        await c.probe()
        return await c.list_sessions()


@pytest.fixture
def machines(tmp_path: Path):
    bob = dataclasses.replace(machine(tmp_path / "bob"), stall_timeout=1.0)
    alice = dataclasses.replace(machine(tmp_path / "alice"), stall_timeout=15.0)
    return bob, alice


async def test_past_the_cap_the_oldest_idle_connection_makes_room(machines):
    bob, alice = machines
    async with daemon(bob, server.Limits(idle_timeout=60, max_connections=6)) as (address, _):
        idle = [await _connect(address) for _ in range(20)]
        try:
            for _ in range(200):  # bounded: until the evictions have reached us
                closed = await _closed_now(idle)
                if len(closed) >= 14:
                    break
                await asyncio.sleep(0.05)
            assert closed == idle[:14]  # the oldest went, the newest 6 stay
            assert await _paired_request(alice, address) == []
            # Room was made for the request by closing the oldest of those left.
            await _closed_by_server(idle[14], 10)
        finally:
            _close_all(idle)


async def test_idle_and_half_sent_connections_are_closed_within_the_idle_timeout(machines):
    bob, alice = machines
    async with daemon(bob, server.Limits(idle_timeout=1.0)) as (address, _):
        conns = [await _connect(address) for _ in range(5)]
        conns.append(await _connect(address, b"GET /v1/info HTTP/1.1\r\nHost: bob\r\n"))
        conns.append(await _connect(address, b"GET /v1/in"))
        try:
            started = time.monotonic()
            for conn in conns:
                assert await _closed_by_server(conn, 15) == b""
            assert time.monotonic() - started < 15
            assert await _paired_request(alice, address) == []
        finally:
            _close_all(conns)


def _upload_head(tmp: Path, address: str) -> tuple[bytes, bytes]:
    """A signed upload of a 3 MiB sealed bundle: (request head, body)."""
    tmp.mkdir(parents=True, exist_ok=True)
    data = sealed_payload(tmp, ALICE, BOB, size=3 << 20).read_bytes()
    digest = auth.sealed_body_digest(seal.read_header_from(io.BytesIO(data)).digest)
    headers = auth.sign_headers(ALICE, "POST", "/v1/bundles", digest, audience=BOB.device_id)
    head = (
        f"POST /v1/bundles HTTP/1.1\r\nHost: {address}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {len(data)}\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        + "\r\n"
    )
    return head.encode(), data


async def test_an_upload_that_stalls_is_given_up_on_and_leaves_nothing(machines, tmp_path):
    bob, _alice = machines  # bob's stall_timeout is 1 s
    async with daemon(bob, server.Limits()) as (address, _lines):
        head, data = _upload_head(tmp_path, address)
        conn = await _connect(address, head + data[: len(data) // 2])
        reader, _writer = conn
        answer = b""
        try:
            async with asyncio.timeout(15):  # the stall is 1 s
                while b"stalled" not in answer and not reader.at_eof():
                    answer += await reader.read(4096)
        finally:
            _close_all([conn])
        assert b" 400 " in answer.split(b"\r\n", 1)[0]
        assert b"the upload stalled: nothing arrived for 1 s" in answer
        assert inbox_files(bob) == []


async def test_when_every_connection_is_in_a_request_a_new_one_gets_503(machines, tmp_path):
    bob, _alice = machines
    bob = dataclasses.replace(bob, stall_timeout=30.0)
    async with daemon(bob, server.Limits(max_connections=2)) as (address, _):
        busy = []
        for i in range(2):  # two uploads in progress, each stopped halfway
            head, data = _upload_head(tmp_path / f"u{i}", address)
            busy.append(await _connect(address, head + data[: len(data) // 2]))
        try:
            for _ in range(500):  # bounded: until both handlers are writing their temp file
                if len([n for n in inbox_files(bob) if n.startswith(".incoming")]) == 2:
                    break
                await asyncio.sleep(0.02)
            extra = await _connect(address)
            try:
                answer = await _closed_by_server(extra, 10)
            finally:
                _close_all([extra])
            assert answer.startswith(b"HTTP/1.1 503 ")
            assert await _closed_now(busy) == []  # the uploads were not cut for it
        finally:
            _close_all(busy)


def test_a_daemon_with_64_file_descriptors_keeps_serving_its_peer(tmp_path):
    """80 idle connections to `commuter serve` limited to 64 descriptors: the paired peer
    still gets an answer, and nothing is printed as a traceback."""
    import resource

    home = tmp_path / "bob"
    settings = machine(home)
    give_identity(settings, BOB)
    trust(settings, "alice", ALICE)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("XDG_", "COMMUTER_")) and k != "CLAUDE_CONFIG_DIR"
    }
    env.update(
        HOME=str(home), USER="tester", COMMUTER_MDNS_INTERFACES="127.0.0.1", PYTHONUNBUFFERED="1"
    )
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]

    def limit_fds() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "commuter",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-mdns",
        ],
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=limit_fds,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline() if ready else ""
        port = re.search(r":(\d+)\s*$", line.strip())
        assert port, line
        address = f"127.0.0.1:{port.group(1)}"
        alice = dataclasses.replace(
            machine(tmp_path / "alice"), stall_timeout=10.0, reply_timeout=10.0
        )
        answer = asyncio.run(_flood_then_ask(alice, address, 80))
        assert answer == []
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _out, err = proc.communicate(timeout=10)
    assert "Traceback" not in err, err
    assert "Too many open files" not in err, err


async def _flood_then_ask(alice, address: str, count: int) -> list[client.ListedSession]:
    idle: list[Conn] = []
    try:
        for _ in range(count):
            idle.append(await _connect(address))
        return await _paired_request(alice, address)
    finally:
        _close_all(idle)


async def test_running_out_of_descriptors_is_one_line_not_a_traceback(machines, capsys):
    import errno

    bob, alice = machines
    async with daemon(bob, server.Limits()) as (address, lines):
        loop = asyncio.get_running_loop()
        for _ in range(3):  # what asyncio reports each time accept() fails with EMFILE
            loop.call_exception_handler(
                {
                    "message": "socket.accept() out of system resource",
                    "exception": OSError(errno.EMFILE, "Too many open files"),
                }
            )
        assert await _paired_request(alice, address) == []
    said = [ln for ln in lines if "file descriptors" in ln]
    assert said == ["out of file descriptors (Too many open files): new connections wait"]
    assert "Traceback" not in capsys.readouterr().err
