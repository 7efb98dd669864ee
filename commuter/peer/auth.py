"""Signed HTTP requests: every request names its sender's key and its recipient and is bound
to method, path, body digest, time and a nonce, so it cannot be altered, replayed or moved
(to another path, body or recipient)."""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import math
import os
import secrets
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from commuter.errors import BadSignature, NonceStoreError, RateLimited, ReplayedRequest
from commuter.peer.identity import Identity, verify_signature

if TYPE_CHECKING:
    import sqlite3

H_KEY = "X-Commuter-Key"
H_TIME = "X-Commuter-Time"
H_NONCE = "X-Commuter-Nonce"
H_DIGEST = "X-Commuter-Content-SHA256"
H_SIG = "X-Commuter-Signature"
H_TO = "X-Commuter-To"
# The audience of requests to a relay (which has no device id); a peer daemon's audience is
# its device id, so neither accepts what was signed for the other.
RELAY_AUDIENCE = "relay"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
MAX_SKEW = 300.0
NONCE_DB = "nonces.db"  # in a daemon's state dir or a relay's data dir


def sealed_body_digest(header_digest: bytes) -> str:
    """The digest a request signs when its body is a sealed bundle: the seal's signed header.

    The rest of the body is bound to that header by the seal itself (authenticated chunks,
    the first one keyed to the header's hash, the last one tagged final), so the receiver
    can check the request before the body arrives and verify the body as it streams in.
    """
    return "seal-sha256:" + header_digest.hex()


def _message(
    audience: str, method: str, path_qs: str, digest: str, stamp: str, nonce: str
) -> bytes:
    return "\n".join(("v2", audience, method.upper(), path_qs, digest, stamp, nonce)).encode()


def sign_headers(
    identity: Identity,
    method: str,
    path_qs: str,
    body_sha256: str = EMPTY_SHA256,
    *,
    audience: str = RELAY_AUDIENCE,
) -> dict[str, str]:
    """Headers that authenticate one request by `identity` to `audience` (the recipient
    daemon's device id; RELAY_AUDIENCE for a relay)."""
    stamp = str(int(time.time()))
    nonce = secrets.token_urlsafe(18)
    signature = identity.sign(_message(audience, method, path_qs, body_sha256, stamp, nonce))
    return {
        H_KEY: base64.b64encode(identity.public_key).decode(),
        H_TO: audience,
        H_TIME: stamp,
        H_NONCE: nonce,
        H_DIGEST: body_sha256,
        H_SIG: base64.b64encode(signature).decode(),
    }


@dataclass(frozen=True, slots=True)
class Rates:
    """Token buckets for signed requests: `per_key` requests/s with bursts of `key_burst` for
    each key, and `new_keys`/s (bursts of `new_key_burst`) for keys with no bucket yet.

    They bound what any number of keys can add to a NonceCache, which never forgets a nonce
    inside the window."""

    per_key: float = 10.0
    key_burst: float = 600.0
    new_keys: float = 10.0
    new_key_burst: float = 1000.0


DEFAULT_RATES = Rates()


class _Bucket:
    __slots__ = ("stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens, self.stamp = tokens, stamp

    def take(self, rate: float, burst: float, now: float) -> bool:
        self.tokens = min(burst, self.tokens + max(0.0, now - self.stamp) * rate)
        self.stamp = max(self.stamp, now)
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class NonceCache:
    """Nonces seen within the clock-skew window, each kept until the window has passed it
    (never evicted earlier, whatever the count); in a SQLite file at `path` if given, so a
    restart remembers them. `rates` (None: unlimited) bounds how fast keys can add them."""

    PRUNE_EVERY = 60.0

    def __init__(
        self,
        max_skew: float = MAX_SKEW,
        path: Path | None = None,
        rates: Rates | None = DEFAULT_RATES,
    ) -> None:
        self.max_skew = max_skew
        self.rates = rates
        self.path = path
        self._seen: dict[tuple[bytes, str], float] = {}
        self._order: deque[tuple[float, tuple[bytes, str]]] = deque()
        self._buckets: dict[bytes, _Bucket] = {}
        self._new_keys: _Bucket | None = None
        self._pruned = -math.inf
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        if path is not None:
            self._db = _open_db(path)
            weakref.finalize(self, self._db.close)

    def check_and_add(self, key: bytes, nonce: str, now: float) -> None:
        """ReplayedRequest if (key, nonce) was seen within the window; RateLimited if `key`
        is over its rate (checked after the replay, so replaying someone's requests costs
        them nothing); else remember it."""
        import sqlite3

        try:
            with self._lock:
                self._check_and_add(key, nonce, now)
        except sqlite3.Error as exc:
            raise NonceStoreError(
                f"cannot record the request's nonce in {self.path}: {exc}"
            ) from exc

    def _check_and_add(self, key: bytes, nonce: str, now: float) -> None:
        if now - self._pruned >= min(self.PRUNE_EVERY, self.max_skew):
            self._prune(now)
        if self._known(key, nonce, now):
            raise ReplayedRequest("replayed request")
        self._take(key, now)
        expires = now + 2 * self.max_skew
        if self._db is None:
            self._seen[(key, nonce)] = expires
            self._order.append((expires, (key, nonce)))
        else:
            self._db.execute(
                "INSERT OR REPLACE INTO nonces VALUES (?, ?, ?)", (key, nonce, expires)
            )

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def count(self) -> int:
        """How many nonces are held (expired ones not yet pruned included)."""
        if self._db is None:
            return len(self._seen)
        return int(self._db.execute("SELECT count(*) FROM nonces").fetchone()[0])

    def _known(self, key: bytes, nonce: str, now: float) -> bool:
        if self._db is None:
            expires = self._seen.get((key, nonce))
        else:
            row = self._db.execute(
                "SELECT expires FROM nonces WHERE key = ? AND nonce = ?", (key, nonce)
            ).fetchone()
            expires = None if row is None else float(row[0])
        return expires is not None and expires > now

    def _take(self, key: bytes, now: float) -> None:
        rates = self.rates
        if rates is None:
            return
        bucket = self._buckets.get(key)
        if bucket is None:
            if self._new_keys is None:
                self._new_keys = _Bucket(rates.new_key_burst, now)
            if not self._new_keys.take(rates.new_keys, rates.new_key_burst, now):
                raise RateLimited("too many new clients at once; try again in a minute")
            bucket = self._buckets[key] = _Bucket(rates.key_burst, now)
        if not bucket.take(rates.per_key, rates.key_burst, now):
            raise RateLimited("too many requests from this machine; try again in a minute")

    def _prune(self, now: float) -> None:
        """Forget nonces past the window and buckets that have refilled (a new key again)."""
        self._pruned = now
        while self._order and self._order[0][0] <= now:
            expires, entry = self._order.popleft()
            if self._seen.get(entry) == expires:
                del self._seen[entry]
        if self._db is not None:
            self._db.execute("DELETE FROM nonces WHERE expires <= ?", (now,))
        rates = self.rates
        if rates is not None:
            full = rates.key_burst / rates.per_key if rates.per_key > 0 else math.inf
            for key in [k for k, b in self._buckets.items() if now - b.stamp >= full]:
                del self._buckets[key]


def _open_db(path: Path) -> sqlite3.Connection:
    """The nonce table at `path`. A file that is not a database is started afresh (what it
    held is lost: requests of the last two skew windows could then be replayed once)."""
    import sqlite3

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        try:
            return _connect(path)
        except sqlite3.OperationalError:
            raise
        except sqlite3.DatabaseError:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            return _connect(path)
    except sqlite3.Error as exc:
        raise NonceStoreError(f"cannot open the nonce store {path}: {exc}") from exc


def _connect(path: Path) -> sqlite3.Connection:
    import sqlite3

    db = sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=False)
    try:
        # WAL, synchronous=NORMAL: each insert survives the process being killed without an
        # fsync per request (a power cut may lose the last ones).
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(
            "CREATE TABLE IF NOT EXISTS nonces (key BLOB NOT NULL, nonce TEXT NOT NULL,"
            " expires REAL NOT NULL, PRIMARY KEY (key, nonce))"
        )
        db.execute("CREATE INDEX IF NOT EXISTS nonces_expires ON nonces (expires)")
    except BaseException:
        db.close()
        raise
    with contextlib.suppress(OSError):
        os.chmod(path, 0o600)
    return db


def claimed_key(headers: Mapping[str, str]) -> bytes:
    """The public key a request claims to come from (not yet verified)."""
    try:
        key = base64.b64decode(headers[H_KEY], validate=True)
    except (KeyError, binascii.Error, ValueError) as exc:
        raise BadSignature("request is not signed") from exc
    if len(key) != 32:
        raise BadSignature("request key is malformed")
    return key


def verify_headers(
    headers: Mapping[str, str],
    method: str,
    path_qs: str,
    body_sha256: str,
    nonces: NonceCache,
    *,
    audience: str = RELAY_AUDIENCE,
    now: float | None = None,
) -> bytes:
    """Check a request's signature, recipient (`audience`: this daemon's device id, or
    RELAY_AUDIENCE), digest, freshness and nonce; return the sender's key."""
    key = claimed_key(headers)
    try:
        to = headers[H_TO]
        stamp = headers[H_TIME]
        nonce = headers[H_NONCE]
        digest = headers[H_DIGEST]
        signature = base64.b64decode(headers[H_SIG], validate=True)
        when = int(stamp)
    except (KeyError, binascii.Error, ValueError) as exc:
        raise BadSignature("request signature headers are missing or malformed") from exc
    if not 8 <= len(nonce) <= 128:
        raise BadSignature("request nonce is malformed")
    verify_signature(key, _message(to, method, path_qs, digest, stamp, nonce), signature)
    if to != audience:
        shown = to if to.isprintable() and len(to) <= 64 else "another recipient"
        raise BadSignature(f"request is addressed to {shown}, not to this machine ({audience})")
    if digest != body_sha256:
        raise BadSignature("request body does not match its signed digest")
    current = time.time() if now is None else now
    if abs(current - when) > nonces.max_skew:
        raise BadSignature("request timestamp is stale (check both machines' clocks)")
    nonces.check_and_add(key, nonce, current)
    return key
