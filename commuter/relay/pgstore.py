"""The relay store in PostgreSQL (`relay serve --store postgresql://...`): stateless relays.

Any number of relay processes share one database; each keeps nothing of its own but a pool
of connections. Everything a promise of the relay rests on, and the request rates, is in the
database, changed in transactions:

- relay_items: the visible items (one row each, written in the transaction that completes
  the upload: the completed marker). relay_chunks: the ciphertext, in rows of `chunk_size`
  (1 MiB) bytes, the last one up to a sixteenth longer, keyed by a blob number that is never reused.
- relay_uploads: uploads in progress (their chunks so far, bytes received, last sign of
  life). An upload's chunks are stored as they arrive but belong to no item until its
  commit, so a relay killed mid-upload leaves nothing a recipient can see; its row goes
  stale (no chunk for longer than the stall bound allows) and any relay's sweep drops it.
- relay_usage: one counter row (items, bytes) per quota key (`box:<id>`, `pair:<id>:<id>`,
  `from:<id>`, `all`), changed only by relay_charge() inside the transaction that stores or
  deletes the bytes it counts, which checks and adds under row locks taken in key order:
  concurrent uploads through different relays cannot pass a quota together, and a quota is
  one quota whatever relay is asked.
- relay_nonces: every signed request's (key, nonce) for twice the clock-skew window; a
  request seen by one relay is refused by every other. relay_rates: the token bucket of
  every key heard from lately, and the new keys' one (key ''), taken by relay_claim() in the
  statement that records the nonce: a key's rate is one rate across relays.
- relay_schema: the schema version; migrations run at start under an advisory lock.

Clean-up (expiry, stale uploads, old nonces, refilled buckets, idle counters) runs on every
relay, each batch under `pg_try_advisory_xact_lock` with `FOR UPDATE SKIP LOCKED`: one relay
sweeps at a time, a row being deleted by a recipient's DELETE is skipped, and the one
transaction that deletes a row is the one that un-counts it.

Durability: a transaction commits synchronously (the server's default) unless losing it
to a database crash is harmless, and then it says so itself (`synchronous_commit = off`,
local to the transaction): chunks (relay_put, also the first transaction of relay_finish),
the start of an upload (relay_begin) and the nonce claims (relay_claim), none of which is
answered by itself; deletions after an acknowledgement (relay_delete: a lost one delivers the
item again, which pull imports once) and the clean-up's batches (redone by the next sweep).
A crash loses such a transaction whole, rows and counters together. That never makes an item
visible without its chunks, nor loses the nonce of an answered upload: a synchronous commit
returns only once the WAL is flushed up to its own commit record, so every transaction
committed before it (the chunks, the start, the nonce, and whatever it read) is on disk too.
Only the item's commit (relay_commit, `on` whatever the server's default) is synchronous: a
201 is on disk. A lost nonce of a listing, a download or a deletion lets that same request be
answered once more within the skew window, with nothing the first answer did not give.
"""

from __future__ import annotations

import contextlib
import secrets
import time
import urllib.parse
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg

from commuter.errors import (
    ConfigError,
    ItemNotFound,
    RateLimited,
    RelayError,
    ReplayedRequest,
    TooLarge,
)
from commuter.fsutil import CHUNK
from commuter.peer import auth
from commuter.relay import quotas
from commuter.relay.quotas import UNLIMITED, Limits
from commuter.relay.storage import Item, UsageKey, usage_key_for
from commuter.relay.store import Claim, RelayStore, StoreUnavailable, Throttle, Upload

SCHEMA_VERSION = 5
# Advisory lock keys (one bigint namespace per database; "cmtrly" + a number).
LOCK_MIGRATE = 0x636D74726C790001
LOCK_SWEEP = 0x636D74726C790002
POOL_SIZE = 4  # connections per relay: a few per database core in all (see docs/relay.md)
BATCH = 500  # rows per clean-up transaction
MAX_BATCHES = 200  # per sweep: bounded, the next sweep goes on
SCHEMES = ("postgresql", "postgres")
# Every statement of the relay finds rows by key (or the oldest by an index, LIMIT n), so one
# generic plan per statement and session serves all its parameters; re-planning each call for
# its values ("custom plans", the server's default for a statement's first runs and whenever
# they look cheaper) was ~3 % of the backends' CPU in the benchmark. Set by a SET when a
# connection opens rather than in its startup packet, which pgbouncer refuses for any
# parameter it does not know.
SESSION_SETUP = "SET plan_cache_mode = force_generic_plan"

UNLIMITED_SQL = str(UNLIMITED)
QUOTA_STATE = "CR001"  # relay_charge's refusal; DETAIL: "<key> <items> <bytes>"
ARRAYS = "keys text[], add_items bigint[], add_bytes bigint[], need_items bigint[],"
ARRAYS += " need_bytes bigint[], max_items bigint[], max_bytes bigint[]"
ARGS = "keys, add_items, add_bytes, need_items, need_bytes, max_items, max_bytes"

FUNCTIONS = (
    # The quota keys of (mailbox, sender), as usage_key makes them.
    "CREATE FUNCTION relay_keys(mailbox text, sender text) RETURNS text[] LANGUAGE sql"
    " IMMUTABLE AS $$ SELECT ARRAY['box:' || mailbox, 'pair:' || mailbox || ':' || sender,"
    " 'from:' || sender, 'all'] $$",
    f"""
CREATE FUNCTION relay_charge({ARRAYS}) RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    old_items bigint[] := array_fill(0::bigint, ARRAY[cardinality(keys)]);
    old_bytes bigint[] := array_fill(0::bigint, ARRAY[cardinality(keys)]);
    new_items bigint;
    new_bytes bigint;
    r record;
BEGIN
    -- Add to every counter row in key order (created if missing), so relays charging the
    -- same keys queue up on the row locks and never deadlock ...
    FOR r IN SELECT t.k, t.n FROM unnest(keys) WITH ORDINALITY AS t(k, n) ORDER BY t.k LOOP
        INSERT INTO relay_usage AS u (key, items, bytes)
            VALUES (r.k, add_items[r.n], add_bytes[r.n])
            ON CONFLICT (key) DO UPDATE
                SET items = u.items + EXCLUDED.items, bytes = u.bytes + EXCLUDED.bytes
            RETURNING u.items, u.bytes INTO new_items, new_bytes;
        old_items[r.n] := new_items - add_items[r.n];
        old_bytes[r.n] := new_bytes - add_bytes[r.n];
    END LOOP;
    -- ... then check in the caller's order: the first quota that would be passed is named,
    -- and the error undoes the whole statement (the rows it stored, the additions).
    FOR i IN 1 .. cardinality(keys) LOOP
        IF old_items[i] + need_items[i] > max_items[i]
                OR old_bytes[i] + need_bytes[i] > max_bytes[i] THEN
            RAISE EXCEPTION 'relay quota' USING ERRCODE = '{QUOTA_STATE}',
                DETAIL = format('%s %s %s', keys[i], old_items[i], old_bytes[i]);
        END IF;
    END LOOP;
END
$fn$""",
    f"""
CREATE FUNCTION relay_begin(p_mailbox text, p_sender text, {ARRAYS})
RETURNS bigint LANGUAGE plpgsql AS $fn$
DECLARE
    b bigint;
BEGIN
    INSERT INTO relay_uploads (blob, mailbox, sender)
        VALUES (nextval('relay_blob_seq'), p_mailbox, p_sender) RETURNING blob INTO b;
    PERFORM relay_charge({ARGS});
    RETURN b;
END
$fn$""",
    f"""
CREATE FUNCTION relay_put(p_blob bigint, p_seq integer, p_data bytea, {ARRAYS})
RETURNS boolean LANGUAGE plpgsql AS $fn$
BEGIN
    UPDATE relay_uploads SET received = received + length(p_data), chunks = chunks + 1,
        seen_at = clock_timestamp() WHERE blob = p_blob;
    IF NOT FOUND THEN
        RETURN false;  -- dropped as stale by a sweep
    END IF;
    INSERT INTO relay_chunks (blob, seq, data) VALUES (p_blob, p_seq, p_data);
    PERFORM relay_charge({ARGS});  -- last: the shared rows are locked only until the commit
    RETURN true;
END
$fn$""",
    f"""
CREATE FUNCTION relay_commit(p_blob bigint, p_id text, p_size bigint, p_digest text,
    p_created double precision, p_expires double precision, p_seq integer, p_data bytea,
    {ARRAYS})
RETURNS boolean LANGUAGE plpgsql AS $fn$
DECLARE
    r record;
    more integer := CASE WHEN p_data IS NULL THEN 0 ELSE 1 END;
BEGIN
    PERFORM set_config('synchronous_commit', 'on', true);  -- a 201 is on disk
    DELETE FROM relay_uploads WHERE blob = p_blob
        RETURNING mailbox, sender, received, chunks INTO r;
    IF NOT FOUND THEN
        RETURN false;  -- dropped as stale by a sweep
    END IF;
    IF r.received + coalesce(length(p_data), 0) <> p_size THEN
        RAISE EXCEPTION 'upload % holds % bytes, not %', p_blob, r.received, p_size;
    END IF;
    IF p_data IS NOT NULL THEN  -- the last chunk, stored and counted with the commit
        INSERT INTO relay_chunks (blob, seq, data) VALUES (p_blob, p_seq, p_data);
    END IF;
    INSERT INTO relay_items (id, mailbox, sender, size, digest, created_at, expires_at, blob,
        chunks) VALUES (p_id, r.mailbox, r.sender, p_size, p_digest, p_created, p_expires,
        p_blob, r.chunks + more);
    PERFORM relay_charge({ARGS});
    RETURN true;
END
$fn$""",
    f"""
CREATE FUNCTION relay_delete(p_mailbox text, p_id text)
RETURNS boolean LANGUAGE plpgsql AS $fn$
DECLARE
    r record;
BEGIN
    DELETE FROM relay_items WHERE mailbox = p_mailbox AND id = p_id
        RETURNING blob, sender, size INTO r;
    IF NOT FOUND THEN
        RETURN false;  -- another relay's DELETE or the sweep got there first
    END IF;
    DELETE FROM relay_chunks WHERE blob = r.blob;
    PERFORM relay_charge(relay_keys(p_mailbox, r.sender), array_fill(-1::bigint, ARRAY[4]),
        array_fill(-r.size, ARRAY[4]), array_fill(0::bigint, ARRAY[4]),
        array_fill(0::bigint, ARRAY[4]), array_fill({UNLIMITED_SQL}::bigint, ARRAY[4]),
        array_fill({UNLIMITED_SQL}::bigint, ARRAY[4]));
    RETURN true;
END
$fn$""",
)

# 2: the commit in two transactions in one call (relay_finish): the last chunk is stored and
# counted asynchronously like any other, then only the mailbox's item slot is taken in the
# synchronous commit, so no shared counter row ('all', 'from:', 'pair:') stays locked while
# that commit waits for its WAL flush (uploads through every relay queued behind each flush).
FINISH = f"""
CREATE PROCEDURE relay_finish(p_blob bigint, p_id text, p_size bigint, p_digest text,
    p_created double precision, p_expires double precision, p_seq integer, p_data bytea,
    t_keys text[], t_add_items bigint[], t_add_bytes bigint[], t_need_items bigint[],
    t_need_bytes bigint[], t_max_items bigint[], t_max_bytes bigint[],
    {ARRAYS}, INOUT done boolean DEFAULT NULL)
LANGUAGE plpgsql AS $fn$
BEGIN
    IF p_data IS NOT NULL THEN
        done := relay_put(p_blob, p_seq, p_data, t_keys, t_add_items, t_add_bytes,
            t_need_items, t_need_bytes, t_max_items, t_max_bytes);
        IF NOT done THEN
            RETURN;
        END IF;
        COMMIT;  -- as any chunk: asynchronous, and its counters unlocked at once
    END IF;
    done := relay_commit(p_blob, p_id, p_size, p_digest, p_created, p_expires, 0, NULL, {ARGS});
END
$fn$"""

# 3: the transactions whose loss in a database crash is harmless say so themselves, the
# others commit as the server does (synchronously by default; schema 2 ran every session
# with synchronous_commit off, so nonces and upload starts could be lost).
ASYNC = "PERFORM set_config('synchronous_commit', 'off', true);  -- harmless to lose: see top\n"


def _asynchronous(sql: str) -> str:
    """A function of FUNCTIONS, redefined to commit its transaction asynchronously."""
    assert sql.count("\nBEGIN\n") == 1, sql  # the body's one top-level BEGIN, where ASYNC goes
    sql = sql.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)
    return sql.replace("\nBEGIN\n", "\nBEGIN\n    " + ASYNC, 1)


def _made_asynchronous(*names: str) -> tuple[str, ...]:
    """The functions `names` of FUNCTIONS and RATE_FUNCTIONS, redefined by _asynchronous."""
    heads = tuple(f"CREATE FUNCTION {name}(" for name in names)
    chosen = tuple(sql for sql in (*FUNCTIONS, *RATE_FUNCTIONS) if sql.lstrip().startswith(heads))
    assert len(chosen) == len(names), names
    return tuple(_asynchronous(sql) for sql in chosen)


# The clean-up's batches: the sweep's lock, and the transaction asynchronous (a lost batch
# is redone by the next sweep).
SWEEP_LOCK = (
    "SELECT pg_try_advisory_xact_lock($1) FROM set_config('synchronous_commit', 'off', true)"
)

# Schema 5's relay_take (see MIGRATIONS).
TAKE = """
CREATE OR REPLACE FUNCTION relay_take(k bytea, now double precision, rate double precision,
    burst double precision) RETURNS boolean LANGUAGE plpgsql AS $fn$
BEGIN
    UPDATE relay_rates SET tokens = least(burst, tokens + greatest(0, now - stamp) * rate) - 1,
        stamp = greatest(stamp, now)
    WHERE key = k AND least(burst, tokens + greatest(0, now - stamp) * rate) >= 1;
    RETURN FOUND;
END
$fn$"""

RATE_STATE = "CR002"  # relay_claim's refusal; DETAIL: "key" or "new"
RATE_FUNCTIONS = (
    # One token from bucket `k` (refilled at `rate`/s up to `burst` since its stamp), if any.
    """
CREATE FUNCTION relay_take(k bytea, now double precision, rate double precision,
    burst double precision) RETURNS boolean LANGUAGE sql AS $fn$
    UPDATE relay_rates SET tokens = least(burst, tokens + greatest(0, now - stamp) * rate) - 1,
        stamp = greatest(stamp, now)
    WHERE key = k AND least(burst, tokens + greatest(0, now - stamp) * rate) >= 1
    RETURNING true
$fn$""",
    # A signed request: its nonce, then its key's rate (and the new keys' rate for a key not
    # heard from for as long as its bucket takes to refill), as auth.NonceCache does it; a
    # refusal undoes the statement, so a refused request records nothing. The new keys'
    # bucket is key '' (keys are 32 bytes), full when created; the sweep never drops it.
    f"""
CREATE FUNCTION relay_claim(p_key bytea, p_nonce text, p_expires double precision,
    p_now double precision, per_key double precision, key_burst double precision,
    new_keys double precision, new_burst double precision)
RETURNS boolean LANGUAGE plpgsql AS $fn$
DECLARE
    seen double precision;
BEGIN
    INSERT INTO relay_nonces AS n (key, nonce, expires) VALUES (p_key, p_nonce, p_expires)
        ON CONFLICT (key, nonce) DO UPDATE SET expires = EXCLUDED.expires
        WHERE n.expires <= p_now;
    IF NOT FOUND THEN
        RETURN false;  -- replayed
    END IF;
    SELECT stamp INTO seen FROM relay_rates WHERE key = p_key FOR UPDATE;
    IF seen IS NULL OR (per_key > 0 AND p_now - seen >= key_burst / per_key) THEN
        INSERT INTO relay_rates VALUES ('', 'infinity', 0) ON CONFLICT (key) DO NOTHING;
        IF NOT coalesce(relay_take('', p_now, new_keys, new_burst), false) THEN
            RAISE EXCEPTION 'relay rate' USING ERRCODE = '{RATE_STATE}', DETAIL = 'new';
        END IF;
        INSERT INTO relay_rates AS r VALUES (p_key, key_burst, p_now) ON CONFLICT (key)
            DO UPDATE SET tokens = EXCLUDED.tokens, stamp = greatest(r.stamp, EXCLUDED.stamp);
    END IF;
    IF NOT coalesce(relay_take(p_key, p_now, per_key, key_burst), false) THEN
        RAISE EXCEPTION 'relay rate' USING ERRCODE = '{RATE_STATE}', DETAIL = 'key';
    END IF;
    RETURN true;
END
$fn$""",
)


MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            "CREATE TABLE relay_usage (key text PRIMARY KEY,"
            " items bigint NOT NULL DEFAULT 0, bytes bigint NOT NULL DEFAULT 0)",
            "CREATE SEQUENCE relay_blob_seq",
            "CREATE TABLE relay_uploads (blob bigint PRIMARY KEY, mailbox text NOT NULL,"
            " sender text NOT NULL, received bigint NOT NULL DEFAULT 0,"
            " chunks integer NOT NULL DEFAULT 0,"
            " started_at timestamptz NOT NULL DEFAULT clock_timestamp(),"
            " seen_at timestamptz NOT NULL DEFAULT clock_timestamp())",
            "CREATE INDEX relay_uploads_seen ON relay_uploads (seen_at)",
            "CREATE TABLE relay_chunks (blob bigint NOT NULL, seq integer NOT NULL,"
            " data bytea NOT NULL, PRIMARY KEY (blob, seq))",
            # Ciphertext does not compress: stored out of line without trying.
            "ALTER TABLE relay_chunks ALTER COLUMN data SET STORAGE EXTERNAL",
            "CREATE TABLE relay_items (mailbox text NOT NULL, id text NOT NULL,"
            " sender text NOT NULL, size bigint NOT NULL, digest text NOT NULL,"
            " created_at double precision NOT NULL, expires_at double precision NOT NULL,"
            " blob bigint NOT NULL UNIQUE, chunks integer NOT NULL, PRIMARY KEY (mailbox, id))",
            "CREATE INDEX relay_items_expires ON relay_items (expires_at)",
            "CREATE TABLE relay_nonces (key bytea NOT NULL, nonce text NOT NULL,"
            " expires double precision NOT NULL, PRIMARY KEY (key, nonce))",
            "CREATE INDEX relay_nonces_expires ON relay_nonces (expires)",
            *FUNCTIONS,
        ),
    ),
    (
        2,
        (
            FINISH,
            "CREATE TABLE relay_rates (key bytea PRIMARY KEY, tokens double precision NOT NULL,"
            " stamp double precision NOT NULL)",
            *RATE_FUNCTIONS,
        ),
    ),
    (3, _made_asynchronous("relay_put", "relay_delete")),
    # 4: the start of an upload and the nonce claim commit asynchronously too. Neither is
    # answered by itself: an upload's 201 follows relay_commit's synchronous commit, which
    # flushes the WAL of its nonce and its start with it; a lost nonce of a listing, a
    # download or a deletion lets that same request be answered once more after a database
    # crash, within the skew window, with nothing its first answer did not give (see
    # docs/relay.md, Durability). Synchronous, each held a row that many requests take (the
    # `all` counter, the new keys' bucket) until its WAL flush: requests queued behind it.
    (4, _made_asynchronous("relay_begin", "relay_claim")),
    # 5: relay_take in PL/pgSQL. A LANGUAGE sql function that is not inlined (an UPDATE) is
    # parsed and planned again in every transaction that calls it: relay_claim called it once
    # or twice per request (3.4 % of the backends' CPU in the benchmark went to that planning).
    # A PL/pgSQL function keeps its plan for the session. Same result: NULL became false, and
    # every caller reads it through coalesce(..., false).
    (5, (TAKE,)),
)
TABLES = ("relay_schema", "relay_usage", "relay_uploads", "relay_chunks", "relay_items",
          "relay_nonces", "relay_rates")  # fmt: skip
RATE_MESSAGES = {
    "new": "too many new clients at once; try again in a minute",
    "key": "too many requests from this machine; try again in a minute",
}
ITEM_COLUMNS = "id, mailbox, sender, size, digest, created_at, expires_at"
# The same, of relay_items as `i` (in a join)
ITEM_COLUMNS_OF_I = ", ".join(f"i.{column}" for column in ITEM_COLUMNS.split(", "))
# A signed request's nonce and rates (relay_claim), as the first part of its first statement:
# no round trip of its own. Its eight parameters are PgStore._claim_args.
CLAIM = "relay_claim($1, $2, $3, $4, $5, $6, $7, $8)"


def check_url(url: str) -> None:
    """ConfigError unless `url` is a postgresql:// URL naming a host or a socket."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in SCHEMES or not url.isprintable():
        raise ConfigError("--store takes a PostgreSQL URL: postgresql://USER@HOST[:PORT]/DB")


def shown_url(url: str) -> str:
    """`url` without its password (for logs and errors)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = urllib.parse.quote(parts.username or "")
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def usage_key(key: UsageKey) -> str:
    """The relay_usage row of a Storage usage key (device ids hold no ':')."""
    return ":".join(key)


class _DeferredNonces(auth.NonceCache):
    """What `auth.verify_headers` checks nonces with here: nothing yet; PgStore.claim_nonce
    does it right after, in the database every relay shares (it is async)."""

    def check_and_add(self, key: bytes, nonce: str, now: float) -> None:
        return None


def _item(row: Any) -> Item:
    return Item(
        id=str(row["id"]),
        mailbox=str(row["mailbox"]),
        sender=str(row["sender"]),
        size=int(row["size"]),
        digest=str(row["digest"]),
        created_at=float(row["created_at"]),
        expires_at=float(row["expires_at"]),
    )


class PgStore(RelayStore):
    """The relay's data in one PostgreSQL database, shared by every relay that names it."""

    def __init__(
        self,
        url: str,
        limits: Limits | None = None,
        *,
        chunk_size: int = CHUNK,
        pool_size: int = POOL_SIZE,
    ) -> None:
        check_url(url)
        self.url = url
        self.limits = limits or Limits()
        self.chunk_size = chunk_size
        self.pool_size = pool_size
        self.nonces = _DeferredNonces(rates=None)
        self._pool: Any = None
        self._expire_gate = Throttle(1.0)
        stall = self.limits.body_stall
        # An upload in progress writes a row (chunk or heartbeat) at least every `heartbeat`
        # seconds while bytes arrive, and is dropped by its relay after `body_stall` without;
        # a row silent for longer than `stale_after` belongs to a relay that died.
        self.heartbeat = min(10.0, stall / 2)
        self.stale_after = stall + self.heartbeat + min(30.0, 2.0 + stall)

    def describe(self) -> str:
        return f"store {shown_url(self.url)}"

    @contextlib.asynccontextmanager
    async def _guard(self, what: str) -> AsyncIterator[None]:
        """A quota refused by relay_charge as its error; database and connection failures as
        one StoreUnavailable (503) line."""
        try:
            yield
        except asyncpg.PostgresError as exc:
            state, detail = getattr(exc, "sqlstate", None), str(getattr(exc, "detail", ""))
            if state == QUOTA_STATE:
                key, items, used = (detail or "all 0 0").split(" ")
                raise quotas.quota_error(key.split(":")[0], int(items), int(used)) from None
            if state == RATE_STATE:
                raise RateLimited(RATE_MESSAGES.get(detail, RATE_MESSAGES["key"])) from None
            raise self._unavailable(what, exc) from exc
        except (asyncpg.InterfaceError, asyncpg.InternalClientError, OSError, TimeoutError) as exc:
            raise self._unavailable(what, exc) from exc

    @staticmethod
    def _unavailable(what: str, exc: BaseException) -> StoreUnavailable:
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        return StoreUnavailable(f"the relay's database could not {what}: {reason}")

    @contextlib.asynccontextmanager
    async def _db(self, what: str) -> AsyncIterator[Any]:
        """The pool, for one statement (its own transaction: one round trip)."""
        if self._pool is None:
            raise StoreUnavailable("the relay's database is not connected")
        async with self._guard(what):
            yield self._pool

    @contextlib.asynccontextmanager
    async def _tx(self, what: str) -> AsyncIterator[Any]:
        """A connection from the pool in a transaction (the clean-up's batches)."""
        if self._pool is None:
            raise StoreUnavailable("the relay's database is not connected")
        async with self._guard(what), self._pool.acquire() as conn, conn.transaction():
            yield conn

    async def start(self) -> None:
        if self._pool is not None:
            return
        async with self._guard(f"be reached at {shown_url(self.url)}"):
            self._pool = await asyncpg.create_pool(
                self.url,
                min_size=1,
                max_size=self.pool_size,
                timeout=10,
                command_timeout=60,
                init=_init,
                reset=_reset,
                server_settings={"application_name": "commuter-relay"},
            )
        try:
            async with self._tx("migrate its schema") as conn:
                await conn.execute("SET LOCAL synchronous_commit = on")
                await migrate(conn)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            with contextlib.suppress(Exception):
                await pool.close()

    # Counters

    def charge(
        self,
        mailbox: str,
        sender: str,
        *,
        add_items: Sequence[int],
        add_bytes: int,
        need_items: int | Sequence[int],
        need_bytes: int,
        kinds: Sequence[str] = ("box", "pair", "from", "all"),
    ) -> list[list[Any]]:
        """relay_charge's seven arrays for the `kinds` of quota keys of (mailbox, sender):
        add (items per kind, bytes), after checking each could take `need_*` more (items:
        one number for all, or one per kind)."""
        keys: list[str] = []
        maxima: list[tuple[int, int]] = []
        for key, most_items, most_bytes in quotas.quota_table(self.limits, mailbox, sender):
            if key[0] in kinds:
                keys.append(usage_key(key))
                maxima.append((most_items, most_bytes))
        n = len(keys)
        needs = [need_items] * n if isinstance(need_items, int) else list(need_items)
        return [
            keys,
            list(add_items),
            [add_bytes] * n,
            needs,
            [need_bytes] * n,
            [m[0] for m in maxima],
            [m[1] for m in maxima],
        ]

    @staticmethod
    async def _uncount(conn: Any, deltas: dict[str, list[int]]) -> None:
        """Subtract what deleted rows held ({key: [items, bytes]}), locks in key order."""
        if not deltas:
            return
        keys = list(deltas)
        n = len(keys)
        await conn.execute(
            "SELECT relay_charge($1, $2, $3, $4, $5, $6, $7)",
            keys,
            [-deltas[k][0] for k in keys],
            [-deltas[k][1] for k in keys],
            [0] * n,
            [0] * n,
            [UNLIMITED] * n,
            [UNLIMITED] * n,
        )

    # Nonces

    async def claim_nonce(self, key: bytes, nonce: str, now: float) -> None:
        """The nonce and the rates in one statement, in the database every relay shares: a
        request seen by one relay is refused by all, and a key's rate is one rate."""
        async with self._db("record the request's nonce") as db:
            fresh = await db.fetchval(f"SELECT {CLAIM}", *self._claim_args(Claim(key, nonce, now)))
        if not fresh:
            raise ReplayedRequest("replayed request")

    def _claim_args(self, claim: Claim) -> list[Any]:
        """CLAIM's eight parameters ($1 to $8): the statement that records the nonce and
        takes the rates is the first part of the request's first statement."""
        r = self.limits.rates
        expires = claim.now + 2 * self.nonces.max_skew
        return [claim.key, claim.nonce, expires, claim.now, r.per_key, r.key_burst, r.new_keys,
                r.new_key_burst]  # fmt: skip

    @staticmethod
    def _fresh(answer: Any) -> Any:
        """`answer` of a statement that claimed a nonce first (CASE WHEN CLAIM THEN ...: NULL
        when the nonce was seen)."""
        if answer is None:
            raise ReplayedRequest("replayed request")
        return answer

    async def _call(self, what: str, claim: Claim | None, function: str, *args: Any) -> Any:
        """`function(*args)`'s answer, one statement; with `claim`, the nonce claimed first in
        that statement (CASE WHEN CLAIM THEN ... END: ReplayedRequest if it was seen)."""
        first = 0 if claim is None else 8  # CLAIM's parameters come first
        call = f"{function}({', '.join(f'${first + i}' for i in range(1, len(args) + 1))})"
        async with self._db(what) as db:
            if claim is None:
                return await db.fetchval(f"SELECT {call}", *args)
            sql = f"SELECT CASE WHEN {CLAIM} THEN {call} END"
            return self._fresh(await db.fetchval(sql, *self._claim_args(claim), *args))

    # Uploads

    async def begin_upload(
        self, mailbox: str, sender: str, declared: int | None, *, claim: Claim | None = None
    ) -> Upload:
        if declared is not None:
            try:
                quotas.check_size(self.limits, declared)
            except TooLarge:
                if claim is not None:  # a request refused here counts as one all the same
                    await self.claim_nonce(*claim)
                raise
        await self.expire()
        # One of the sender's items from now on; a mailbox slot only at the commit.
        arrays = self.charge(
            mailbox, sender, add_items=(0, 1, 1, 1), add_bytes=0, need_items=1,
            need_bytes=declared or 1,
        )  # fmt: skip
        blob = await self._call("start the upload", claim, "relay_begin", mailbox, sender, *arrays)
        return _PgUpload(self, int(blob), mailbox, sender)

    # Items

    async def items(self, mailbox: str, *, claim: Claim | None = None) -> list[Item]:
        async with self._db("list the mailbox") as db:
            if claim is None:
                rows = await db.fetch(
                    f"SELECT {ITEM_COLUMNS} FROM relay_items WHERE mailbox = $1"
                    " AND expires_at > $2 ORDER BY id",
                    mailbox,
                    time.time(),
                )
                return [_item(row) for row in rows]
            # The nonce first, in a CTE run once: its row comes back alone if no item matches.
            rows = await db.fetch(
                f"WITH c AS MATERIALIZED (SELECT {CLAIM} AS fresh)"
                f" SELECT c.fresh, {ITEM_COLUMNS} FROM c LEFT JOIN relay_items"
                " ON c.fresh AND mailbox = $9 AND expires_at > $10 ORDER BY id",
                *self._claim_args(claim),
                mailbox,
                time.time(),
            )
        self._fresh(rows[0]["fresh"] or None)
        return [_item(row) for row in rows if row["id"] is not None]

    async def get(self, mailbox: str, item_id: str) -> Item | None:
        async with self._db("find the item") as db:
            row = await db.fetchrow(
                f"SELECT {ITEM_COLUMNS} FROM relay_items WHERE mailbox = $1 AND id = $2"
                " AND expires_at > $3",
                mailbox,
                item_id,
                time.time(),
            )
        return None if row is None else _item(row)

    async def open_item(
        self, mailbox: str, item_id: str, *, claim: Claim | None = None
    ) -> tuple[Item, AsyncIterator[bytes]] | None:
        """The claim, the item and its first chunk in one statement."""
        if claim is None:
            return await super().open_item(mailbox, item_id)
        async with self._db("find the item") as db:
            row = await db.fetchrow(
                f"WITH c AS MATERIALIZED (SELECT {CLAIM} AS fresh)"
                f" SELECT c.fresh, {ITEM_COLUMNS_OF_I},"
                " ch.data FROM c LEFT JOIN relay_items i ON c.fresh AND i.mailbox = $9"
                " AND i.id = $10 AND i.expires_at > $11"
                " LEFT JOIN relay_chunks ch ON ch.blob = i.blob AND ch.seq = 0",
                *self._claim_args(claim),
                mailbox,
                item_id,
                time.time(),
            )
        self._fresh(row["fresh"] or None)
        if row["id"] is None:
            return None
        item = _item(row)
        return item, self.read(item, first=row["data"])

    async def read(self, item: Item, *, first: bytes | None = None) -> AsyncIterator[bytes]:
        """The item's chunks from the store; from the second one if the first was fetched
        with the item (`first`, None when it was not there)."""
        sent = 0
        for seq in range(item.size + 1):  # bounded: every row holds at least one byte
            if sent >= item.size:
                return
            if seq == 0 and first is not None:
                sent += len(first)
                yield first
                continue
            # One chunk in memory at a time, a pooled connection per chunk; through the item
            # row, so a deleted or expired item stops the answer at the next chunk.
            async with self._db("read the item") as db:
                data = await db.fetchval(
                    "SELECT c.data FROM relay_items i JOIN relay_chunks c"
                    " ON c.blob = i.blob AND c.seq = $3 WHERE i.mailbox = $1 AND i.id = $2",
                    item.mailbox,
                    item.id,
                    seq,
                )
            if data is None:
                raise ItemNotFound(f"item {item.id} was deleted or expired while being sent")
            sent += len(data)
            yield data

    async def delete(self, mailbox: str, item_id: str, *, claim: Claim | None = None) -> bool:
        return bool(await self._call("delete the item", claim, "relay_delete", mailbox, item_id))

    # Clean-up

    async def expire(self, now: float | None = None) -> int:
        """Delete expired items (at most once a second per process when called without
        `now`: listings hide them meanwhile)."""
        if now is None and not self._expire_gate():
            return 0
        current = time.time() if now is None else now
        gone = 0
        for _ in range(MAX_BATCHES):
            async with self._tx("expire items") as conn:
                if not await conn.fetchval(SWEEP_LOCK, LOCK_SWEEP):
                    return gone  # another relay is sweeping right now
                rows = await conn.fetch(
                    "DELETE FROM relay_items WHERE blob IN (SELECT blob FROM relay_items"
                    " WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2"
                    " FOR UPDATE SKIP LOCKED) RETURNING mailbox, sender, size, blob",
                    current,
                    BATCH,
                )
                await self._drop(conn, rows, items=True, size="size")
            gone += len(rows)
            if len(rows) < BATCH:
                break
        return gone

    async def _drop(self, conn: Any, rows: Sequence[Any], *, items: bool, size: str) -> None:
        """The chunks of deleted item (`items`) or upload rows, and what they counted."""
        if not rows:
            return
        await conn.execute(
            "DELETE FROM relay_chunks WHERE blob = ANY($1::bigint[])", [r["blob"] for r in rows]
        )
        deltas: dict[str, list[int]] = {}
        for row in rows:
            for key, _, _ in quotas.quota_table(self.limits, row["mailbox"], row["sender"]):
                entry = deltas.setdefault(usage_key(key), [0, 0])
                # An upload in progress was not yet one of its mailbox's items.
                entry[0] += 1 if items or key[0] != "box" else 0
                entry[1] += int(row[size])
        await self._uncount(conn, deltas)

    async def sweep(self) -> int:
        """Expiry, then uploads of relays that died, old nonces and idle counters."""
        gone = await self.expire(time.time())
        for _ in range(MAX_BATCHES):
            async with self._tx("drop stale uploads") as conn:
                if not await conn.fetchval(SWEEP_LOCK, LOCK_SWEEP):
                    break
                rows = await conn.fetch(
                    "DELETE FROM relay_uploads WHERE blob IN (SELECT blob FROM relay_uploads"
                    " WHERE seen_at < clock_timestamp() - make_interval(secs => $1)"
                    " LIMIT $2 FOR UPDATE SKIP LOCKED)"
                    " RETURNING mailbox, sender, received, blob",
                    self.stale_after,
                    BATCH,
                )
                await self._drop(conn, rows, items=False, size="received")
            if len(rows) < BATCH:
                break
        async with self._tx("prune nonces") as conn:
            if await conn.fetchval(SWEEP_LOCK, LOCK_SWEEP):
                await conn.execute(
                    "DELETE FROM relay_nonces WHERE ctid = ANY(ARRAY(SELECT ctid FROM"
                    " relay_nonces WHERE expires <= $1 LIMIT 100000))",
                    time.time(),
                )
                rates = self.limits.rates
                full = rates.key_burst / rates.per_key if rates.per_key > 0 else 3600.0
                await conn.execute(
                    "DELETE FROM relay_rates WHERE key IN (SELECT key FROM relay_rates"
                    " WHERE stamp <= $1 AND key <> '' LIMIT 100000 FOR UPDATE SKIP LOCKED)",
                    time.time() - full,
                )  # refilled: such a key is a new key again
                await conn.execute(
                    "DELETE FROM relay_usage WHERE key IN (SELECT key FROM relay_usage"
                    " WHERE items = 0 AND bytes = 0 AND key <> 'all' LIMIT 100000"
                    " FOR UPDATE SKIP LOCKED)"
                )
        return gone

    async def usage(
        self, *, mailbox: str | None = None, sender: str | None = None
    ) -> tuple[int, int]:
        key = usage_key(usage_key_for(mailbox, sender))
        async with self._db("read usage") as db:
            row = await db.fetchrow("SELECT items, bytes FROM relay_usage WHERE key = $1", key)
        return (0, 0) if row is None else (int(row["items"]), int(row["bytes"]))


class _PgUpload(Upload):
    """Chunks of `chunk_size` into relay_chunks as they arrive, each in the statement that
    counts it against the quotas (relay_put); visible as an item only after `commit`."""

    def __init__(self, store: PgStore, blob: int, mailbox: str, sender: str) -> None:
        self.store, self.blob, self.mailbox, self.sender = store, blob, mailbox, sender
        self.buf = bytearray()  # at most chunk_size + chunk_size // 16
        self.seq = 0
        self.stored = 0
        self.done = False
        self.flushed_at = time.monotonic()

    async def write(self, chunk: bytes) -> None:
        quotas.check_size(self.store.limits, self.size + len(chunk))
        self.size += len(chunk)
        size = self.store.chunk_size
        # Up to chunk_size + slack is held, so that a last row may take a short tail along
        # (a bundle just over a chunk is one row, not a chunk and a sliver).
        most = size + size // 16
        view = memoryview(chunk)
        while view:  # a round per chunk_size of input: bounded
            room = most - len(self.buf)
            self.buf += view[:room]
            view = view[room:]
            if len(self.buf) == most:
                await self._flush(size)
        if self.buf and time.monotonic() - self.flushed_at >= self.store.heartbeat:
            await self._flush(len(self.buf))  # a slow upload shows it is alive

    async def _flush(self, n: int) -> None:
        """The first `n` bytes of the buffer as the next chunk row (the whole buffer is
        passed as it is, without a copy)."""
        data = self.buf if n == len(self.buf) else bytes(self.buf[:n])
        arrays = self.store.charge(
            self.mailbox, self.sender, add_items=(0, 0, 0, 0), add_bytes=n, need_items=0,
            need_bytes=n,
        )  # fmt: skip
        async with self.store._db("store the upload") as db:
            alive = await db.fetchval(
                "SELECT relay_put($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                self.blob,
                self.seq,
                data,
                *arrays,
            )
        if not alive:
            raise RelayError("the upload was dropped as stalled; send it again")
        if n == len(self.buf):
            self.buf = bytearray()
        else:
            del self.buf[:n]
        self.seq += 1
        self.stored += n
        self.flushed_at = time.monotonic()

    async def commit(self, digest: str, ttl: float) -> Item:
        # The buffered tail (at most a chunk and a sixteenth) is stored by the commit itself.
        tail = len(self.buf)
        now = time.time()
        item = Item(
            id=f"{int(now):010d}-{secrets.token_hex(8)}",
            mailbox=self.mailbox,
            sender=self.sender,
            size=self.stored + tail,
            digest=digest,
            created_at=now,
            expires_at=now + ttl,
        )
        # The tail is stored and counted as any chunk, then the item takes one of the
        # mailbox's slots (429 if none is free) in a synchronous commit: one call.
        tail_arrays = self.store.charge(
            self.mailbox, self.sender, add_items=(0, 0, 0, 0), add_bytes=tail, need_items=0,
            need_bytes=tail,
        )  # fmt: skip
        arrays = self.store.charge(
            self.mailbox, self.sender, add_items=(1,), add_bytes=0, need_items=1,
            need_bytes=0, kinds=("box",),
        )  # fmt: skip
        async with self.store._db("commit the upload") as db:
            done = await db.fetchval(
                "CALL relay_finish($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,"
                " $14, $15, $16, $17, $18, $19, $20, $21, $22)",
                self.blob,
                item.id,
                item.size,
                item.digest,
                item.created_at,
                item.expires_at,
                self.seq,
                self.buf if tail else None,
                *tail_arrays,
                *arrays,
            )
        if not done:
            raise RelayError("the upload was dropped as stalled; send it again")
        self.done = True
        self.buf = bytearray()
        return item

    async def close(self) -> None:
        """Drop an uncommitted upload with what it counted (if the database cannot be
        reached, its row goes stale and a sweep drops it)."""
        if self.done:
            return
        self.done = True
        self.buf = bytearray()
        with contextlib.suppress(StoreUnavailable):
            async with self.store._tx("drop the upload") as conn:
                await conn.execute("SET LOCAL synchronous_commit = off")  # else swept
                rows = await conn.fetch(
                    "DELETE FROM relay_uploads WHERE blob = $1"
                    " RETURNING mailbox, sender, received, blob",
                    self.blob,
                )
                await self.store._drop(conn, rows, items=False, size="received")


async def _init(conn: Any) -> None:
    """A new connection's session setting (SESSION_SETUP), kept for its life: see _reset."""
    await conn.execute(SESSION_SETUP)


async def _reset(conn: Any) -> None:
    """Nothing to reset when a connection goes back to the pool: the store keeps no session
    state but _init's setting (no LISTEN, no session locks), and asyncpg rolls back a
    transaction left open itself. (Its default reset is a query on every release, a round
    trip each, and its RESET ALL would undo _init.)"""


async def migrate(conn: Any) -> int:
    """Create or migrate the schema (inside the caller's transaction, under an advisory
    lock, so relays starting together migrate once); the version now in force."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_MIGRATE)
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS relay_schema (version integer PRIMARY KEY,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )
    version = int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM relay_schema"))
    if version > SCHEMA_VERSION:
        raise ConfigError(
            f"the relay database has schema version {version}, newer than this commuter's "
            f"({SCHEMA_VERSION}); upgrade commuter on this relay"
        )
    for number, statements in MIGRATIONS:
        if number > version:
            for sql in statements:
                await conn.execute(sql)
            await conn.execute("INSERT INTO relay_schema (version) VALUES ($1)", number)
            version = number
    return version
