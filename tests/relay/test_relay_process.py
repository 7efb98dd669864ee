"""The relay as a real subprocess: killed mid-upload, restarted between push and pull."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from relayhelp import ALICE, BOB, RelayProcess, box, sealed_bytes, signed

from commuter.peer import auth


@pytest.fixture
def relays():
    started: list[RelayProcess] = []
    yield started
    for relay in started:
        if relay.proc.poll() is None:
            relay.kill()


def files_under(path: Path) -> list[str]:
    """Every file under `path` but the nonce store (which outlives uploads on purpose)."""
    return sorted(
        str(p.relative_to(path))
        for p in path.rglob("*")
        if p.is_file() and not p.name.startswith(auth.NONCE_DB)
    )


async def test_relay_killed_mid_upload_keeps_nothing_and_the_retry_works(relays, tmp_path):
    data_dir = tmp_path / "relay-data"
    relay = RelayProcess(data_dir, tmp_path / "relayhome")
    relays.append(relay)
    body = sealed_bytes(tmp_path, ALICE, [BOB], size=3 * 1024 * 1024)
    path = box(BOB)
    sent = asyncio.Event()

    async def slow_body():
        for i in range(0, len(body), 64 * 1024):
            yield body[i : i + 64 * 1024]
            if i >= 1024 * 1024:
                sent.set()
            await asyncio.sleep(0.02)

    async def upload_slowly() -> None:
        headers = signed(ALICE, "POST", path, body)
        headers["Content-Length"] = str(len(body))
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            await http.post(relay.url + path, data=slow_body(), headers=headers)

    task = asyncio.create_task(upload_slowly())
    await asyncio.wait_for(sent.wait(), 20)
    relay.kill()
    with pytest.raises((aiohttp.ClientError, OSError)):
        await asyncio.wait_for(task, 20)
    assert not any(name.startswith("mailboxes") for name in files_under(data_dir))

    relay = RelayProcess(data_dir, tmp_path / "relayhome")
    relays.append(relay)
    assert files_under(data_dir) == ["lock"]  # the partial upload is gone after the restart
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        async with http.get(relay.url + path, headers=signed(BOB, "GET", path)) as resp:
            assert (await resp.json())["items"] == []
        digest = hashlib.sha256(body).hexdigest()
        headers = auth.sign_headers(ALICE, "POST", path, digest)
        async with http.post(relay.url + path, data=io.BytesIO(body), headers=headers) as resp:
            assert resp.status == 201
        async with http.get(relay.url + path, headers=signed(BOB, "GET", path)) as resp:
            [item] = (await resp.json())["items"]
            assert item["digest"] == digest
    assert relay.stop() == 0


def test_relay_serve_refuses_a_bad_ttl(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "COMMUTER_"))}
    env["HOME"] = str(tmp_path)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "commuter",
            "relay",
            "serve",
            "--ttl",
            "soon",
            "--data-dir",
            str(tmp_path / "d"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "Error: 'soon' is not a duration (like 3600, 90m, 72h, 7d)"
    ]


def test_a_second_relay_on_the_same_data_dir_is_refused(relays, tmp_path):
    data_dir = tmp_path / "relay-data"
    first = RelayProcess(data_dir, tmp_path / "relayhome")
    relays.append(first)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "COMMUTER_"))}
    env["HOME"] = str(tmp_path / "relayhome")
    second = subprocess.run(
        [
            sys.executable,
            "-m",
            "commuter",
            "relay",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--data-dir",
            str(data_dir),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert second.returncode == 1
    assert second.stderr.strip().splitlines() == [f"Error: another relay is using {data_dir}"]
    assert first.proc.poll() is None  # the first one serves on
    assert first.stop() == 0
    relays.append(RelayProcess(data_dir, tmp_path / "relayhome"))  # the lock died with it


def test_a_client_gone_mid_upload_is_one_log_line_and_leaves_nothing(relays, tmp_path):
    data_dir = tmp_path / "relay-data"
    relay = RelayProcess(data_dir, tmp_path / "relayhome")
    relays.append(relay)
    body = sealed_bytes(tmp_path, ALICE, [BOB], size=2 * 1024 * 1024)
    path = box(BOB)
    head = f"POST {path} HTTP/1.1\r\nHost: relay\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in signed(ALICE, "POST", path, body).items())
    port = int(relay.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(head.encode() + b"\r\n" + body[: len(body) // 3])
        time.sleep(0.3)
    for _ in range(100):  # bounded: 10 s for the relay to notice
        if not list((data_dir / "tmp").iterdir()):
            break
        time.sleep(0.1)
    assert relay.stop() == 0
    out, err = relay.out, relay.err
    assert "connection lost mid-request" in out
    assert "Traceback" not in err
    assert files_under(data_dir) == ["lock"]


async def test_relay_serve_size_cap_and_ttl_flags(relays, tmp_path):
    relay = RelayProcess(
        tmp_path / "relay-data", tmp_path / "relayhome", "--max-bundle-mb", "1", "--ttl", "2s"
    )
    relays.append(relay)
    path = box(BOB)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        async with http.get(relay.url + "/") as resp:
            limits = (await resp.json())["limits"]
        assert limits["max_bundle"] == 1 << 20 and limits["ttl"] == 2
        big = sealed_bytes(tmp_path, ALICE, [BOB], size=2 << 20)
        async with http.post(
            relay.url + path,
            data=io.BytesIO(big),  # bytes > 1 MiB: a warning
            headers=signed(ALICE, "POST", path, big),
        ) as resp:
            assert resp.status == 413
        small = sealed_bytes(tmp_path, ALICE, [BOB])
        async with http.post(
            relay.url + path, data=small, headers=signed(ALICE, "POST", path, small)
        ) as resp:
            assert resp.status == 201
        await asyncio.sleep(2.5)
        async with http.get(relay.url + path, headers=signed(BOB, "GET", path)) as resp:
            assert (await resp.json())["items"] == []  # expired, swept on access
    assert files_under(tmp_path / "relay-data") == ["lock"]


async def test_relay_serve_per_sender_mailbox_and_total_cap_flags(relays, tmp_path):
    relay = RelayProcess(
        tmp_path / "relay-data",
        tmp_path / "relayhome",
        "--sender-mailbox-items",
        "1",
        "--max-total-mb",
        "1",
    )
    relays.append(relay)
    path = box(BOB)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        big = sealed_bytes(tmp_path, ALICE, [BOB], size=3 << 19)  # 1.5 MiB > the 1 MiB total
        async with http.post(
            relay.url + path,
            data=io.BytesIO(big),  # bytes > 1 MiB: a warning
            headers=signed(ALICE, "POST", path, big),
        ) as resp:
            assert resp.status == 507
        small = sealed_bytes(tmp_path, ALICE, [BOB])
        async with http.post(
            relay.url + path, data=small, headers=signed(ALICE, "POST", path, small)
        ) as resp:
            assert resp.status == 201
        again = sealed_bytes(tmp_path, ALICE, [BOB])
        async with http.post(
            relay.url + path, data=again, headers=signed(ALICE, "POST", path, again)
        ) as resp:
            assert resp.status == 429  # one item of alice's waits in bob's mailbox already


def test_the_relay_s_log_lines_carry_nothing_unprintable():
    from commuter.commands.relay import log_line

    plain = "stored 1700000000-00000000000000ff for AAAAAA-BBBBBB-CCCCCC-DDDDDD (12 bytes)"
    assert log_line(plain) == plain
    hostile = "download of x cut off: \x1b]0;pwned\x07 caf\u00e9\nnext"
    shown = log_line(hostile)
    assert shown.isascii() and shown.isprintable()
    assert "\\x1b]0;pwned\\x07 caf\\xe9\\nnext" in shown
