"""The relay over PostgreSQL: two relays (two apps, each its own pool) on one real database.

Every promise of the file store, and that it holds across relays: a nonce seen by one is
refused by the other, a quota is one quota, expiry and deletion race safely, an upload is
visible only once complete, memory per request is bounded by the chunk size.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import time
import tracemalloc

import asyncpg
import pytest
from pghelp import shared_server
from relayhelp import ALICE, BOB, EVE, box, sealed_bytes, signed, upload

from commuter.errors import ConfigError, ItemNotFound, ReplayedRequest
from commuter.peer import auth
from commuter.relay.app import STATE, make_relay_app
from commuter.relay.pgstore import MIGRATIONS, SCHEMA_VERSION, TABLES, PgStore
from commuter.relay.quotas import Limits
from commuter.relay.store import Claim

DATA_TABLES = ("relay_chunks", "relay_items", "relay_uploads")


@pytest.fixture
def pg_server():
    return shared_server()


@pytest.fixture
def pg_url(pg_server):
    url = pg_server.create_database()
    yield url
    pg_server.drop_database(url)


async def query(url: str, sql: str, *args):
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def counts(url: str) -> dict[str, int]:
    """Rows in the tables that hold bundles and uploads."""
    return {t: (await query(url, f"SELECT count(*) FROM {t}"))[0][0] for t in DATA_TABLES}


async def usage_rows(url: str) -> dict[str, tuple[int, int]]:
    rows = await query(url, "SELECT key, items, bytes FROM relay_usage")
    return {r["key"]: (r["items"], r["bytes"]) for r in rows if r["items"] or r["bytes"]}


async def relays(aiohttp_client, url: str, limits: Limits | None = None, **store_args):
    """Two relay apps on one database, as clients (and their apps)."""
    out = []
    for _ in range(2):
        app = make_relay_app(store=PgStore(url, limits or Limits(), **store_args))
        out.append((await aiohttp_client(app), app))
    return out


async def test_the_schema_is_created_once_versioned_and_a_newer_one_refused(pg_url):
    stores = [PgStore(pg_url) for _ in range(3)]
    await asyncio.gather(*(s.start() for s in stores))  # together: one migration
    try:
        rows = await query(pg_url, "SELECT version FROM relay_schema ORDER BY version")
        assert [r["version"] for r in rows] == list(range(1, SCHEMA_VERSION + 1))
        names = await query(
            pg_url, "SELECT tablename FROM pg_tables WHERE tablename LIKE 'relay_%'"
        )
        assert sorted(r["tablename"] for r in names) == sorted(TABLES)
    finally:
        for store in stores:
            await store.close()
    await query(pg_url, "INSERT INTO relay_schema (version) VALUES (99)")
    newer = PgStore(pg_url)
    with pytest.raises(ConfigError, match="schema version 99, newer"):
        await newer.start()
    assert newer._pool is None  # closed again


async def test_a_version_1_database_is_migrated_and_keeps_its_items(
    aiohttp_client, pg_url, tmp_path
):
    body = sealed_bytes(tmp_path, ALICE, [BOB], size=5000)
    digest = hashlib.sha256(body).hexdigest()
    conn = await asyncpg.connect(pg_url)
    try:  # the schema and an item as a relay of version 1 left them
        [(first, statements)] = [m for m in MIGRATIONS if m[0] == 1]
        await conn.execute("CREATE TABLE relay_schema (version integer PRIMARY KEY,"
                           " applied_at timestamptz NOT NULL DEFAULT now())")  # fmt: skip
        for sql in statements:
            await conn.execute(sql)
        await conn.execute("INSERT INTO relay_schema (version) VALUES (1)")
        blob = await conn.fetchval("SELECT nextval('relay_blob_seq')")
        await conn.execute("INSERT INTO relay_chunks VALUES ($1, 0, $2)", blob, body)
        await conn.execute(
            "INSERT INTO relay_items VALUES ($1, '1700000000-0123456789abcdef', $2, $3, $4,"
            " $5, $6, $7, 1)",
            BOB.device_id, ALICE.device_id, len(body), digest, time.time(), time.time() + 600,
            blob,
        )  # fmt: skip
        for key in (f"box:{BOB.device_id}", f"pair:{BOB.device_id}:{ALICE.device_id}",
                    f"from:{ALICE.device_id}", "all"):  # fmt: skip
            await conn.execute("INSERT INTO relay_usage VALUES ($1, 1, $2)", key, len(body))
    finally:
        await conn.close()
    (a, _), (b, _) = await relays(aiohttp_client, pg_url)
    rows = await query(pg_url, "SELECT version FROM relay_schema ORDER BY version")
    assert [r["version"] for r in rows] == list(range(1, SCHEMA_VERSION + 1)) and first == 1
    resp = await b.get(box(BOB), headers=signed(BOB, "GET", box(BOB)))
    [listed] = (await resp.json())["items"]
    path = f"{box(BOB)}/{listed['id']}"
    resp = await a.get(path, headers=signed(BOB, "GET", path))
    assert resp.status == 200 and await resp.read() == body
    new = sealed_bytes(tmp_path, EVE, [BOB])
    assert (await upload(a, EVE, BOB, new)).status == 201  # through the new commit
    assert (await b.delete(path, headers=signed(BOB, "DELETE", path))).status == 200
    resp = await b.get(box(BOB), headers=signed(BOB, "GET", box(BOB)))
    assert [i["sender"] for i in (await resp.json())["items"]] == [EVE.device_id]
    # The old item un-counted as it was counted: only the new one is left.
    assert (await usage_rows(pg_url))["all"] == (1, len(new))
    assert (await usage_rows(pg_url)).get(f"from:{ALICE.device_id}") is None


async def test_a_key_s_rate_and_the_new_keys_rate_are_one_rate_across_relays(
    aiohttp_client, pg_url
):
    from commuter.peer.auth import Rates

    rates = Rates(per_key=0.01, key_burst=5, new_keys=0.01, new_key_burst=2)
    (a, _), (b, _) = await relays(aiohttp_client, pg_url, Limits(rates=rates))
    for i in range(5):  # the key's burst, spent through both relays
        resp = await (a if i % 2 else b).get(box(BOB), headers=signed(BOB, "GET", box(BOB)))
        assert resp.status == 200
    for client in (a, b):
        resp = await client.get(box(BOB), headers=signed(BOB, "GET", box(BOB)))
        assert resp.status == 429 and (await resp.json())["error"] == "rate-limited"
    nonces = (await query(pg_url, "SELECT count(*) FROM relay_nonces"))[0][0]
    assert nonces == 5  # a refused request records nothing
    # The second new key fits the new keys' burst of 2 (BOB took the first); a third does not,
    # whichever relay it asks.
    assert (await b.get(box(ALICE), headers=signed(ALICE, "GET", box(ALICE)))).status == 200
    resp = await a.get(box(EVE), headers=signed(EVE, "GET", box(EVE)))
    assert resp.status == 429 and "new clients" in (await resp.json())["message"]


async def test_a_refilled_bucket_is_pruned_and_its_key_is_new_again(aiohttp_client, pg_url):
    from commuter.peer.auth import Rates

    rates = Rates(per_key=0.01, key_burst=5, new_keys=0.01, new_key_burst=2)
    (a, app), _ = await relays(aiohttp_client, pg_url, Limits(rates=rates))
    assert (await a.get(box(BOB), headers=signed(BOB, "GET", box(BOB)))).status == 200
    buckets = "SELECT count(*) FROM relay_rates WHERE key <> ''"
    assert (await query(pg_url, buckets))[0][0] == 1
    await app[STATE].store.sweep()
    assert (await query(pg_url, buckets))[0][0] == 1  # spent 1 of 5 just now: kept
    await query(pg_url, "UPDATE relay_rates SET stamp = stamp - 501 WHERE key <> ''")
    await app[STATE].store.sweep()  # refilled (5 tokens at 0.01/s take 500 s): a new key
    assert (await query(pg_url, buckets))[0][0] == 0
    assert (await query(pg_url, "SELECT count(*) FROM relay_rates WHERE key = ''"))[0][0] == 1


async def test_a_relay_s_session_plans_each_statement_once(aiohttp_client, pg_url, tmp_path):
    """Every statement the store prepares runs on a generic plan (a custom plan is made
    anew for each call), and relay_take, which every signed request calls, is PL/pgSQL
    (a LANGUAGE sql function with an UPDATE is planned again in every transaction)."""
    app = make_relay_app(store=PgStore(pg_url, pool_size=1))  # one session for everything
    client = await aiohttp_client(app)
    for i in range(7):  # past the server's five custom plans before it may choose generic
        body = sealed_bytes(tmp_path, ALICE, [BOB], size=1000 + i)
        assert (await upload(client, ALICE, BOB, body)).status == 201
        resp = await client.get(box(BOB), headers=signed(BOB, "GET", box(BOB)))
        [listed] = (await resp.json())["items"]
        path = f"{box(BOB)}/{listed['id']}"
        resp = await client.get(path, headers=signed(BOB, "GET", path))
        assert await resp.read() == body
        assert (await client.delete(path, headers=signed(BOB, "DELETE", path))).status == 200
    store = app[STATE].store
    assert isinstance(store, PgStore)
    pool = store._pool
    plans = await pool.fetch(
        "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements"
    )
    assert len(plans) >= 4  # the upload's two statements, the listing, the download, ...
    assert [r["statement"] for r in plans if r["custom_plans"]] == []
    language = await pool.fetchval(
        "SELECT l.lanname FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang"
        " WHERE p.proname = 'relay_take'"
    )
    assert language == "plpgsql"


async def test_push_through_one_relay_pull_and_ack_through_the_other(
    aiohttp_client, pg_url, tmp_path
):
    (a, _), (b, app_b) = await relays(aiohttp_client, pg_url)
    body = sealed_bytes(tmp_path, ALICE, [BOB], size=3 * 2**20 + 17)  # three chunks
    resp = await a.post(
        box(BOB), data=io.BytesIO(body), headers=signed(ALICE, "POST", box(BOB), body)
    )
    assert resp.status == 201, await resp.text()
    item = (await resp.json())["id"]
    resp = await b.get(box(BOB), headers=signed(BOB, "GET", box(BOB)))
    [listed] = (await resp.json())["items"]
    assert listed["id"] == item and listed["size"] == len(body)
    assert listed["digest"] == hashlib.sha256(body).hexdigest()
    rows = await query(pg_url, "SELECT seq, length(data) AS n FROM relay_chunks ORDER BY seq")
    # Rows of 1 MiB; the 17-byte tail rides along in the last one.
    assert [r["n"] for r in rows] == [2**20, 2**20, len(body) - 2 * 2**20]
    path = f"{box(BOB)}/{item}"
    for _ in range(2):  # a download deletes nothing: only the acknowledgement does
        resp = await b.get(path, headers=signed(BOB, "GET", path))
        assert resp.status == 200 and await resp.read() == body
        assert resp.headers["X-Commuter-Digest"] == listed["digest"]
    assert await app_b[STATE].store.usage(mailbox=BOB.device_id) == (1, len(body))
    resp = await a.delete(path, headers=signed(BOB, "DELETE", path))
    assert resp.status == 200
    resp = await b.delete(path, headers=signed(BOB, "DELETE", path))
    assert resp.status == 404
    resp = await b.get(box(BOB), headers=signed(BOB, "GET", box(BOB)))
    assert (await resp.json())["items"] == []
    assert await counts(pg_url) == dict.fromkeys(DATA_TABLES, 0)
    assert await usage_rows(pg_url) == {}


async def test_a_request_seen_by_one_relay_is_refused_by_the_other(
    aiohttp_client, pg_url, tmp_path
):
    (a, _), (b, _) = await relays(aiohttp_client, pg_url)
    body = sealed_bytes(tmp_path, ALICE, [BOB])
    headers = signed(ALICE, "POST", box(BOB), body)
    assert (await a.post(box(BOB), data=body, headers=headers)).status == 201
    resp = await b.post(box(BOB), data=body, headers=headers)
    assert resp.status == 401 and (await resp.json())["error"] == "replayed"
    listing = signed(BOB, "GET", box(BOB))
    resp = await b.get(box(BOB), headers=listing)
    assert resp.status == 200
    [item] = (await resp.json())["items"]
    resp = await a.get(box(BOB), headers=listing)
    assert resp.status == 401 and (await resp.json())["error"] == "replayed"
    assert (await counts(pg_url))["relay_items"] == 1
    path = f"{box(BOB)}/{item['id']}"
    download = signed(BOB, "GET", path)
    resp = await a.get(path, headers=download)
    assert resp.status == 200 and await resp.read() == body
    resp = await b.get(path, headers=download)
    assert resp.status == 401 and (await resp.json())["error"] == "replayed"
    ack = signed(BOB, "DELETE", path)
    assert (await b.delete(path, headers=ack)).status == 200
    resp = await a.delete(path, headers=ack)
    assert resp.status == 401 and (await resp.json())["error"] == "replayed"
    assert (await counts(pg_url))["relay_items"] == 0
    # A request refused before its first store call records its nonce all the same.
    stranger = signed(EVE, "GET", box(BOB))
    assert (await a.get(box(BOB), headers=stranger)).status == 403
    resp = await b.get(box(BOB), headers=stranger)
    assert resp.status == 401 and (await resp.json())["error"] == "replayed"
    bad_id = f"{box(BOB)}/not-an-id"
    odd = signed(BOB, "DELETE", bad_id)
    assert (await a.delete(bad_id, headers=odd)).status == 404
    resp = await b.delete(bad_id, headers=odd)
    assert resp.status == 401 and (await resp.json())["error"] == "replayed"


async def test_a_relay_restarted_on_the_database_still_refuses_a_replay(
    aiohttp_client, pg_url, tmp_path
):
    body = sealed_bytes(tmp_path, ALICE, [BOB])
    headers = signed(ALICE, "POST", box(BOB), body)
    first = await aiohttp_client(make_relay_app(store=PgStore(pg_url)))
    assert (await first.post(box(BOB), data=body, headers=headers)).status == 201
    await first.close()
    second = await aiohttp_client(make_relay_app(store=PgStore(pg_url)))
    resp = await second.post(box(BOB), data=body, headers=headers)
    assert resp.status == 401 and (await resp.json())["error"] == "replayed"


async def test_quotas_are_one_quota_across_relays(aiohttp_client, pg_url, tmp_path):
    limits = Limits(mailbox_items=2, sender_items=3)
    (a, _), (b, _) = await relays(aiohttp_client, pg_url, limits)
    assert (await upload(a, ALICE, BOB, sealed_bytes(tmp_path, ALICE, [BOB]))).status == 201
    assert (await upload(b, ALICE, BOB, sealed_bytes(tmp_path, ALICE, [BOB]))).status == 201
    resp = await upload(a, ALICE, BOB, sealed_bytes(tmp_path, ALICE, [BOB]))
    assert resp.status == 429 and "mailbox is full" in (await resp.json())["message"]
    assert (await upload(b, ALICE, EVE, sealed_bytes(tmp_path, ALICE, [EVE]))).status == 201
    resp = await upload(a, ALICE, EVE, sealed_bytes(tmp_path, ALICE, [EVE]))
    assert resp.status == 429 and "too much queued on the relay (" in (await resp.json())["message"]


async def test_per_sender_per_mailbox_and_total_caps_hold_across_relays(
    aiohttp_client, pg_url, tmp_path
):
    (a, _), (b, _) = await relays(aiohttp_client, pg_url, Limits(sender_mailbox_items=1))
    assert (await upload(a, EVE, BOB, sealed_bytes(tmp_path, EVE, [BOB]))).status == 201
    resp = await upload(b, EVE, BOB, sealed_bytes(tmp_path, EVE, [BOB]))
    assert resp.status == 429 and "for that recipient" in (await resp.json())["message"]
    assert (await upload(b, ALICE, BOB, sealed_bytes(tmp_path, ALICE, [BOB]))).status == 201


async def test_the_total_cap_is_one_cap(aiohttp_client, pg_url, tmp_path):
    (a, _), (b, _) = await relays(aiohttp_client, pg_url, Limits(total_bytes=5000))
    assert (await upload(a, ALICE, BOB, sealed_bytes(tmp_path, ALICE, [BOB]))).status == 201
    resp = await upload(b, EVE, ALICE, sealed_bytes(tmp_path, EVE, [ALICE]))
    assert resp.status == 507 and (await resp.json())["error"] == "relay-storage-full"


async def test_concurrent_uploads_through_two_relays_cannot_pass_a_quota_together(
    aiohttp_client, pg_url, tmp_path
):
    (a, _), (b, _) = await relays(aiohttp_client, pg_url, Limits(mailbox_items=2))
    bodies = [sealed_bytes(tmp_path, ALICE, [BOB]) for _ in range(20)]
    answers = await asyncio.gather(
        *(upload(a if i % 2 else b, ALICE, BOB, body) for i, body in enumerate(bodies))
    )
    assert sorted(r.status for r in answers) == [201] * 2 + [429] * 18
    assert await counts(pg_url) == {"relay_chunks": 2, "relay_items": 2, "relay_uploads": 0}
    size = len(bodies[0])
    # Those refused a slot at the commit had stored their last chunk already (relay_finish's
    # first transaction): dropped, and un-counted, with their upload.
    held = await usage_rows(pg_url)
    assert held["all"] == held[f"box:{BOB.device_id}"] == (2, 2 * size)
    (c, _), (d, _) = await relays(
        aiohttp_client, pg_url, Limits(sender_bytes=2 * size + 3 * size + 10)
    )
    answers = await asyncio.gather(
        *(upload(c if i % 2 else d, ALICE, EVE, sealed_bytes(tmp_path, ALICE, [EVE]))
          for i in range(10))
    )  # fmt: skip
    assert sorted(r.status for r in answers) == [201] * 3 + [429] * 7
    assert (await counts(pg_url))["relay_uploads"] == 0


async def test_refused_uploads_leave_nothing(aiohttp_client, pg_url, tmp_path):
    (a, _), (b, _) = await relays(aiohttp_client, pg_url, Limits(max_bundle=5000))
    resp = await upload(a, ALICE, BOB, b"plain text conversation")
    assert resp.status == 400 and (await resp.json())["error"] == "bad-bundle"
    resp = await upload(b, ALICE, BOB, sealed_bytes(tmp_path, ALICE, [EVE]))
    assert resp.status == 400 and "not sealed to" in (await resp.json())["message"]
    resp = await upload(a, EVE, BOB, sealed_bytes(tmp_path, ALICE, [BOB]))
    assert resp.status == 401
    resp = await upload(b, ALICE, BOB, sealed_bytes(tmp_path, ALICE, [BOB], size=8000))
    assert resp.status == 413 and (await resp.json())["error"] == "too-large"
    resp = await b.get(box(BOB), headers=signed(EVE, "GET", box(BOB)))
    assert resp.status == 403
    assert await counts(pg_url) == dict.fromkeys(DATA_TABLES, 0)
    assert await usage_rows(pg_url) == {}


async def test_a_body_past_the_size_cap_without_a_length_is_413_and_leaves_nothing(
    aiohttp_client, pg_url, tmp_path
):
    limits = Limits(max_bundle=5000)
    (a, _), (b, _) = await relays(aiohttp_client, pg_url, limits, chunk_size=1000)
    body = sealed_bytes(tmp_path, ALICE, [BOB], size=8000)

    async def streamed():  # no Content-Length: the cap is found while the bytes arrive
        for i in range(0, len(body), 700):
            yield body[i : i + 700]

    headers = auth.sign_headers(ALICE, "POST", box(BOB), hashlib.sha256(body).hexdigest())
    resp = await a.post(box(BOB), data=streamed(), headers=headers)
    assert resp.status == 413 and (await resp.json())["error"] == "too-large"
    assert await counts(pg_url) == dict.fromkeys(DATA_TABLES, 0)  # its stored chunks dropped
    assert await usage_rows(pg_url) == {}
    small = sealed_bytes(tmp_path, ALICE, [BOB], size=2000)
    assert (await upload(b, ALICE, BOB, small)).status == 201


async def test_expiry_and_acknowledgements_racing_on_two_relays_count_each_item_once(
    aiohttp_client, pg_url, tmp_path
):
    (a, app_a), (b, app_b) = await relays(aiohttp_client, pg_url, Limits(ttl=60))
    ids = []
    for i in range(12):
        body = sealed_bytes(tmp_path, ALICE, [BOB], size=1000 + i)
        ids.append((await (await upload(a if i % 2 else b, ALICE, BOB, body)).json())["id"])
    store_a, store_b = app_a[STATE].store, app_b[STATE].store
    assert await store_a.expire(now=time.time() + 30) == 0
    items = await store_a.items(BOB.device_id)
    later = time.time() + 61
    results = await asyncio.gather(
        store_a.expire(now=later),
        store_b.expire(now=later),
        *(store_b.delete(item.mailbox, item.id) for item in items[:6]),
    )
    expired, deleted = results[0] + results[1], sum(results[2:])
    assert expired + deleted == 12  # each one gone once, by whichever got its row
    assert await counts(pg_url) == dict.fromkeys(DATA_TABLES, 0)
    assert await usage_rows(pg_url) == {}  # nothing counted twice, nothing left counted
    path = f"{box(BOB)}/{ids[0]}"
    assert (await a.get(path, headers=signed(BOB, "GET", path))).status == 404


async def test_an_expired_item_is_hidden_at_once_and_swept_on_a_timer(
    aiohttp_client, pg_url, tmp_path
):
    limits = Limits(ttl=0.5, sweep_interval=0.2)
    (a, _), (b, _) = await relays(aiohttp_client, pg_url, limits)
    assert (await upload(a, ALICE, BOB, sealed_bytes(tmp_path, ALICE, [BOB]))).status == 201
    await asyncio.sleep(0.6)
    resp = await b.get(box(BOB), headers=signed(BOB, "GET", box(BOB)))
    assert (await resp.json())["items"] == []
    for _ in range(50):  # bounded: 5 s
        if (await counts(pg_url))["relay_items"] == 0:
            break
        await asyncio.sleep(0.1)
    assert await counts(pg_url) == dict.fromkeys(DATA_TABLES, 0)


async def _stalling_upload(server, sender, to, declared: int, sent: bytes):
    """A raw POST declaring `declared` bytes that sends `sent` and then nothing."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    path = box(to)
    headers = signed(sender, "POST", path, b"x" * 10)
    head = f"POST {path} HTTP/1.1\r\nHost: relay\r\nContent-Length: {declared}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(head.encode() + b"\r\n" + sent)
    await writer.drain()
    return reader, writer


async def _until(check, seconds: float = 15.0) -> bool:
    for _ in range(int(seconds / 0.05)):  # bounded
        if await check():
            return True
        await asyncio.sleep(0.05)
    return bool(await check())


async def test_an_upload_in_progress_holds_its_bytes_on_every_relay_and_a_stall_is_408(
    aiohttp_server, aiohttp_client, pg_url, tmp_path
):
    limits = Limits(mailbox_bytes=10_000, body_stall=1.5)
    app_a = make_relay_app(store=PgStore(pg_url, limits, chunk_size=1000))
    server = await aiohttp_server(app_a)
    b = await aiohttp_client(make_relay_app(store=PgStore(pg_url, limits, chunk_size=1000)))
    reader, writer = await _stalling_upload(server, EVE, BOB, 10_000, b"\x00" * 6000)
    store = app_a[STATE].store

    async def holding() -> bool:  # all but what waits in the buffer (< 1000 + 62)
        return (await store.usage(mailbox=BOB.device_id))[1] >= 5000

    assert await _until(holding)
    resp = await upload(b, ALICE, BOB, sealed_bytes(tmp_path, ALICE, [BOB], size=5000))
    assert resp.status == 429  # 5000 held through the other relay + ~5100 would pass 10,000
    body = sealed_bytes(tmp_path, ALICE, [BOB], size=2000)
    assert (await upload(b, ALICE, BOB, body)).status == 201
    answer = await asyncio.wait_for(reader.read(), 30)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    writer.close()
    assert await counts(pg_url) == {"relay_chunks": 3, "relay_items": 1, "relay_uploads": 0}
    assert await store.usage() == (1, len(body))


async def test_an_item_deleted_mid_download_is_cut_off_not_completed(pg_url, tmp_path):
    store = PgStore(pg_url, chunk_size=1000)
    await store.start()
    try:
        up = await store.begin_upload(BOB.device_id, ALICE.device_id, None)
        await up.write(os.urandom(3500))
        item = await up.commit("0" * 64, 60)
        await up.close()
        chunks = store.read(item)
        assert len(await anext(chunks)) == 1000
        # As a download opens it: the nonce, the item and its first chunk in one statement.
        found = await store.open_item(
            item.mailbox, item.id, claim=Claim(BOB.public_key, "n1", time.time())
        )
        assert found is not None and found[0] == item
        opened = found[1]
        assert len(await anext(opened)) == 1000
        assert await store.delete(item.mailbox, item.id)
        with pytest.raises(ItemNotFound):
            await anext(chunks)
        with pytest.raises(ItemNotFound):
            await anext(opened)
        claim = Claim(BOB.public_key, "n2", time.time())
        assert await store.open_item(item.mailbox, item.id, claim=claim) is None
        with pytest.raises(ReplayedRequest):
            await store.open_item(item.mailbox, item.id, claim=claim)
    finally:
        await store.close()


async def test_memory_per_request_is_bounded_by_the_chunk_size(aiohttp_client, pg_url, tmp_path):
    (a, _), (b, _) = await relays(aiohttp_client, pg_url)
    source = tmp_path / "big.sealed"
    plain = tmp_path / "big"
    with plain.open("wb") as fh:
        for _ in range(24):
            fh.write(os.urandom(2**20))
    from commuter.peer import seal

    seal.seal_file(plain, source, ALICE, [BOB.public_key])
    size = source.stat().st_size
    digest = hashlib.sha256(source.read_bytes()).hexdigest()

    async def from_file():
        with source.open("rb") as fh:
            while chunk := fh.read(2**16):
                yield chunk

    tracemalloc.start()
    try:
        headers = auth.sign_headers(ALICE, "POST", box(BOB), digest)
        headers["Content-Length"] = str(size)
        resp = await a.post(box(BOB), data=from_file(), headers=headers)
        assert resp.status == 201, await resp.text()
        _, up_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        item = (await resp.json())["id"]
        path = f"{box(BOB)}/{item}"
        got = hashlib.sha256()
        async with b.get(path, headers=signed(BOB, "GET", path)) as resp:
            async for chunk in resp.content.iter_chunked(2**16):
                got.update(chunk)
        _, down_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got.hexdigest() == digest
    # A 24 MiB bundle went up and came down; Python held a few chunks of 1 MiB at a time.
    assert up_peak < 8 * 2**20 and down_peak < 8 * 2**20, (up_peak, down_peak)
