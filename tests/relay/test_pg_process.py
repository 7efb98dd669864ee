"""Two `commuter relay serve --store postgresql://...` processes on one real database: any
can take an upload or serve it, one killed (-9) loses nothing and shows nothing half-done."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import subprocess
import sys

import aiohttp
import asyncpg
import pytest
from pghelp import shared_server
from relayhelp import ALICE, BOB, RelayProcess, box, sealed_bytes, signed

from commuter.peer import auth, seal

WORD = b"QUINCE-PLAINTEXT-4471"


@pytest.fixture
def pg_server():
    return shared_server()


@pytest.fixture
def pg_url(pg_server):
    url = pg_server.create_database()
    yield url
    pg_server.drop_database(url)


@pytest.fixture
def relays():
    started: list[RelayProcess] = []
    yield started
    for relay in started:
        if relay.proc.poll() is None:
            relay.kill()


async def scalar(url: str, sql: str):
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def http() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))


def store_relay(url: str, tmp_path, name: str, *extra: str) -> RelayProcess:
    return RelayProcess(None, tmp_path / f"{name}-home", "--store", url, *extra)


async def test_push_via_relay_1_kill_it_pull_via_relay_2_and_the_dump_holds_no_plaintext(
    relays, pg_server, pg_url, tmp_path
):
    one = store_relay(pg_url, tmp_path, "one")
    two = store_relay(pg_url, tmp_path, "two")
    relays += [one, two]
    plain = tmp_path / "conversation.txt"
    plain.write_bytes(b"user: remember the codeword " + WORD + b"\n" + os.urandom(3 << 20))
    sealed = tmp_path / "conversation.sealed"
    seal.seal_file(plain, sealed, ALICE, [BOB.public_key])
    body = sealed.read_bytes()
    path = box(BOB)
    async with http() as client:
        resp = await client.post(
            one.url + path, data=io.BytesIO(body), headers=signed(ALICE, "POST", path, body)
        )
        assert resp.status == 201, await resp.text()
        item = (await resp.json())["id"]
    assert one.kill() == -9
    dump = pg_server.dump(pg_url)
    assert b"relay_chunks" in dump and len(dump) > len(body)  # the ciphertext is in it
    assert WORD not in dump and b"remember the codeword" not in dump
    async with http() as client:
        resp = await client.get(two.url + path, headers=signed(BOB, "GET", path))
        [listed] = (await resp.json())["items"]
        assert listed["id"] == item and listed["sender"] == ALICE.device_id
        got = f"{path}/{item}"
        resp = await client.get(two.url + got, headers=signed(BOB, "GET", got))
        assert resp.status == 200 and await resp.read() == body
        resp = await client.delete(two.url + got, headers=signed(BOB, "DELETE", got))
        assert resp.status == 200
    assert await scalar(pg_url, "SELECT count(*) FROM relay_chunks") == 0
    assert two.stop() == 0
    assert "(store postgresql://relay@127.0.0.1:" in two.banner
    assert "Traceback" not in two.err


async def test_kill_9_mid_upload_leaves_nothing_visible_and_the_retry_via_the_other_works(
    relays, pg_url, tmp_path
):
    one = store_relay(pg_url, tmp_path, "one")
    # The second relay sweeps every second, and calls an upload dead 4.5 s after its last row.
    two = store_relay(pg_url, tmp_path, "two", "--body-stall", "1", "--sweep", "1s")
    relays += [one, two]
    body = sealed_bytes(tmp_path, ALICE, [BOB], size=3 << 20)
    path = box(BOB)

    async def slow_body():
        for i in range(0, len(body), 64 * 1024):
            yield body[i : i + 64 * 1024]
            await asyncio.sleep(0.02)

    async def upload_slowly() -> None:
        headers = signed(ALICE, "POST", path, body)
        headers["Content-Length"] = str(len(body))
        async with http() as client:
            await client.post(one.url + path, data=slow_body(), headers=headers)

    task = asyncio.create_task(upload_slowly())
    for _ in range(400):  # bounded: until a chunk of it is in the database
        if await scalar(pg_url, "SELECT count(*) FROM relay_chunks"):
            break
        await asyncio.sleep(0.05)
    assert await scalar(pg_url, "SELECT count(*) FROM relay_uploads") == 1
    one.kill()
    with pytest.raises((aiohttp.ClientError, OSError)):
        await asyncio.wait_for(task, 20)
    # Chunks of it may still be there, but no item: nothing a recipient can see.
    assert await scalar(pg_url, "SELECT count(*) FROM relay_items") == 0
    async with http() as client:
        resp = await client.get(two.url + path, headers=signed(BOB, "GET", path))
        assert (await resp.json())["items"] == []
        # The sender's retry, through the other relay.
        digest = hashlib.sha256(body).hexdigest()
        headers = auth.sign_headers(ALICE, "POST", path, digest)
        resp = await client.post(two.url + path, data=io.BytesIO(body), headers=headers)
        assert resp.status == 201, await resp.text()
        resp = await client.get(two.url + path, headers=signed(BOB, "GET", path))
        [item] = (await resp.json())["items"]
        assert item["digest"] == digest and item["size"] == len(body)
    for _ in range(300):  # bounded: 30 s for a sweep to drop the dead upload
        if not await scalar(pg_url, "SELECT count(*) FROM relay_uploads"):
            break
        await asyncio.sleep(0.1)
    assert await scalar(pg_url, "SELECT count(*) FROM relay_uploads") == 0
    assert await scalar(pg_url, "SELECT count(*) FROM relay_chunks") == 3  # the retry's only
    # What the dead upload held is no longer counted: only the retried item is.
    assert await scalar(pg_url, "SELECT bytes FROM relay_usage WHERE key = 'all'") == len(body)
    assert await scalar(pg_url, "SELECT items FROM relay_usage WHERE key = 'all'") == 1
    assert two.stop() == 0 and "Traceback" not in two.err


async def test_quotas_and_replays_hold_across_two_relay_processes(relays, pg_url, tmp_path):
    flags = ("--sender-mailbox-items", "1")
    one = store_relay(pg_url, tmp_path, "one", *flags)
    two = store_relay(pg_url, tmp_path, "two", *flags)
    relays += [one, two]
    path = box(BOB)
    body = sealed_bytes(tmp_path, ALICE, [BOB])
    headers = signed(ALICE, "POST", path, body)
    async with http() as client:
        resp = await client.post(one.url + path, data=body, headers=headers)
        assert resp.status == 201
        resp = await client.post(two.url + path, data=body, headers=headers)
        assert resp.status == 401 and (await resp.json())["error"] == "replayed"
        again = sealed_bytes(tmp_path, ALICE, [BOB])
        resp = await client.post(
            two.url + path, data=again, headers=signed(ALICE, "POST", path, again)
        )
        assert resp.status == 429 and "for that recipient" in (await resp.json())["message"]
    assert await scalar(pg_url, "SELECT count(*) FROM relay_items") == 1


def _serve(tmp_path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "COMMUTER_"))}
    env["HOME"] = str(tmp_path)
    return subprocess.run(
        [sys.executable, "-m", "commuter", "relay", "serve", "--port", "0", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_bad_store_arguments_are_one_error_line(tmp_path):
    done = _serve(tmp_path, "--store", "mysql://relay@db/relay")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "Error: --store takes a PostgreSQL URL: postgresql://USER@HOST[:PORT]/DB"
    ]
    done = _serve(tmp_path, "--store", "postgresql://relay@db/relay", "--data-dir", "d")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "Error: --store and --data-dir exclude each other (the store holds all)"
    ]


def test_an_unreachable_database_is_one_error_line_without_the_password(tmp_path):
    done = _serve(
        tmp_path, "--host", "127.0.0.1", "--store", "postgresql://u:hunter2@127.0.0.1:1/x"
    )
    assert done.returncode == 1, done.stdout
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(
        "Error: the relay's database could not be reached at postgresql://u:***@127.0.0.1:1/x"
    )
    assert "hunter2" not in done.stderr + done.stdout
