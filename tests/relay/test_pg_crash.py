"""The relay over PostgreSQL through a database crash (`pg_ctl stop -m immediate`, then
recovery from the WAL): what was answered stays, what was not finished never shows.

The server writes the WAL of asynchronous commits only every 10 s here (wal_writer_delay),
so a transaction that ought to be synchronous and is not is lost by the crash that follows
it at once.
"""

from __future__ import annotations

import hashlib
import os
import time

import asyncpg
import pytest
from pghelp import SKIP_REASON, PgServer, find_bin_dir
from relayhelp import ALICE, BOB

from commuter.errors import ReplayedRequest
from commuter.relay.pgstore import PgStore
from commuter.relay.quotas import Limits

LIMITS = Limits(body_stall=1.0)


@pytest.fixture
def crashable():
    """A server of this test's own (the shared one must not crash under other tests)."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip(SKIP_REASON)
    server = PgServer(bin_dir, max_connections=20, settings={"wal_writer_delay": "10s"})
    yield server
    server.stop()


async def restarted(server: PgServer, store: PgStore) -> PgStore:
    """The store's database crashed and recovered, and the store connected afresh."""
    server.crash_and_restart()
    await store.close()
    fresh = PgStore(store.url, LIMITS, chunk_size=1000)
    await fresh.start()
    return fresh


async def test_a_crash_keeps_stored_items_and_nonces_and_drops_unfinished_uploads(crashable):
    url = crashable.create_database()
    store = PgStore(url, LIMITS, chunk_size=1000)
    await store.start()
    key = os.urandom(32)
    try:
        await store.claim_nonce(key, "before", time.time())
        unfinished = await store.begin_upload(BOB.device_id, ALICE.device_id, None)
        await unfinished.write(os.urandom(4000))  # chunks, committed asynchronously
        body = os.urandom(3500)
        up = await store.begin_upload(BOB.device_id, ALICE.device_id, None)
        await up.write(body)
        item = await up.commit(hashlib.sha256(body).hexdigest(), 600)  # the 201: crash now
        store = await restarted(crashable, store)
        assert [i.id for i in await store.items(BOB.device_id)] == [item.id]
        assert b"".join([chunk async for chunk in store.read(item)]) == body
        with pytest.raises(ReplayedRequest):
            await store.claim_nonce(key, "before", time.time())

        # A nonce and an upload start commit asynchronously (schema 4): an upload answered
        # 201 after them flushed them with its own commit.
        await store.claim_nonce(key, "upload", time.time())
        small = os.urandom(500)
        up = await store.begin_upload(BOB.device_id, ALICE.device_id, None)
        await up.write(small)
        second = await up.commit(hashlib.sha256(small).hexdigest(), 600)  # the 201: crash now
        store = await restarted(crashable, store)
        with pytest.raises(ReplayedRequest):
            await store.claim_nonce(key, "upload", time.time())
        assert [i.id for i in await store.items(BOB.device_id)] == sorted([item.id, second.id])

        # The unfinished upload never became an item; once its row is stale, a sweep drops
        # its chunks and what it counted.
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("UPDATE relay_uploads SET seen_at = seen_at - interval '1 hour'")
            await store.sweep()
            assert await conn.fetchval("SELECT count(*) FROM relay_uploads") == 0
            stray = (
                "SELECT count(*) FROM relay_chunks WHERE blob NOT IN (SELECT blob FROM relay_items)"
            )
            assert await conn.fetchval(stray) == 0
        finally:
            await conn.close()
        assert [i.id for i in await store.items(BOB.device_id)] == sorted([item.id, second.id])
        assert await store.usage() == (2, len(body) + len(small))
        assert await store.usage(sender=ALICE.device_id) == (2, len(body) + len(small))
    finally:
        await store.close()
