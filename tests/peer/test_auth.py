"""Signed requests: bound to method, path, body, time, nonce and recipient."""

from __future__ import annotations

import time

import pytest

from commuter.errors import BadSignature, CommuterError, ReplayedRequest
from commuter.peer.auth import (
    H_KEY,
    H_SIG,
    H_TO,
    RELAY_AUDIENCE,
    NonceCache,
    sign_headers,
    verify_headers,
)
from commuter.peer.identity import Identity

ALICE = Identity.from_seed(b"a" * 32)
BOB = Identity.from_seed(b"b" * 32)
CAROL = Identity.from_seed(b"c" * 32)
EVE = Identity.from_seed(b"e" * 32)
DIGEST = "ab" * 32
TO_BOB = BOB.device_id


def _signed(method: str = "POST", path: str = "/v1/bundles", identity: Identity = ALICE):
    return sign_headers(identity, method, path, DIGEST, audience=TO_BOB)


def _verify(headers, method="POST", path="/v1/bundles", digest=DIGEST, cache=None, **kw):
    kw.setdefault("audience", TO_BOB)
    return verify_headers(headers, method, path, digest, cache or NonceCache(), **kw)


def test_valid_request_yields_sender_key():
    headers = _signed()
    assert headers[H_TO] == TO_BOB
    assert _verify(headers) == ALICE.public_key


def test_replay_is_rejected():
    cache = NonceCache()
    headers = _signed()
    _verify(headers, cache=cache)
    with pytest.raises(ReplayedRequest):
        _verify(headers, cache=cache)


@pytest.mark.parametrize(
    ("method", "path", "digest"),
    [("GET", "/v1/bundles", DIGEST), ("POST", "/v1/other", DIGEST), ("POST", "/v1/bundles", "00")],
)
def test_request_cannot_be_moved_or_altered(method, path, digest):
    with pytest.raises(BadSignature):
        _verify(_signed(), method, path, digest)


def test_request_signed_for_one_recipient_is_refused_by_another():
    headers = _signed()
    with pytest.raises(BadSignature, match=f"addressed to {TO_BOB}, not to this machine"):
        _verify(headers, audience=CAROL.device_id)
    # Rewriting the recipient header breaks the signature.
    headers[H_TO] = CAROL.device_id
    with pytest.raises(BadSignature, match="signature"):
        _verify(headers, audience=CAROL.device_id)


def test_request_naming_no_recipient_is_rejected():
    headers = _signed()
    del headers[H_TO]
    with pytest.raises(BadSignature):
        _verify(headers)


def test_relay_requests_default_to_the_relay_audience():
    headers = sign_headers(ALICE, "POST", "/v1/bundles", DIGEST)
    assert headers[H_TO] == RELAY_AUDIENCE
    assert verify_headers(headers, "POST", "/v1/bundles", DIGEST, NonceCache()) == (
        ALICE.public_key
    )
    with pytest.raises(BadSignature, match="addressed to relay"):
        _verify(sign_headers(ALICE, "POST", "/v1/bundles", DIGEST))
    with pytest.raises(BadSignature, match="not to this machine"):
        verify_headers(_signed(), "POST", "/v1/bundles", DIGEST, NonceCache())


def test_body_not_matching_signed_digest_is_rejected():
    with pytest.raises(BadSignature, match="digest"):
        _verify(_signed(), digest="cd" * 32)


def test_stale_timestamp_is_rejected():
    later = time.time() + 3600
    with pytest.raises(BadSignature, match="stale"):
        _verify(_signed(), now=later)


def test_swapped_key_is_rejected():
    headers = _signed(identity=EVE)
    headers[H_KEY] = _signed("GET", "/")[H_KEY]
    with pytest.raises(BadSignature):
        _verify(headers)


@pytest.mark.parametrize("drop", [H_KEY, H_SIG])
def test_missing_headers_are_rejected(drop):
    headers = _signed()
    del headers[drop]
    with pytest.raises(BadSignature):
        _verify(headers)


def test_nonce_cache_forgets_after_window():
    cache = NonceCache(max_skew=10)
    cache.check_and_add(b"k", "n" * 10, now=0)
    cache.check_and_add(b"k", "n" * 10, now=100)


def test_a_nonce_inside_the_window_is_never_evicted_by_a_flood():
    # The old cache dropped its oldest entry past 100,000, however fresh: a flood of
    # requests from fresh keys made a captured request replayable inside the window.
    cache = NonceCache()
    start = time.time()
    cache.check_and_add(ALICE.public_key, "first-nonce", now=start)
    accepted = 0
    for k in range(1000):
        key = k.to_bytes(32, "big")
        for n in range(101):
            try:
                cache.check_and_add(key, f"flood-{n:04d}", now=start + 1)
            except CommuterError:
                continue
            accepted += 1
    assert accepted > 100_000
    with pytest.raises(ReplayedRequest):
        cache.check_and_add(ALICE.public_key, "first-nonce", now=start + 2)


def test_the_rate_limit_refuses_a_key_over_its_rate_and_replays_cost_nothing():
    from commuter.errors import RateLimited
    from commuter.peer.auth import Rates

    cache = NonceCache(rates=Rates(per_key=1.0, key_burst=5, new_keys=1.0, new_key_burst=2))
    for n in range(5):
        cache.check_and_add(b"a" * 32, f"nonce-{n}", now=1000.0)
    with pytest.raises(RateLimited):
        cache.check_and_add(b"a" * 32, "nonce-5", now=1000.0)
    cache.check_and_add(b"a" * 32, "nonce-6", now=1001.0)  # one token back after 1 s
    # Replaying someone's captured request does not drain their bucket.
    cache.check_and_add(b"b" * 32, "nonce-0", now=1000.0)
    for _ in range(20):
        with pytest.raises(ReplayedRequest):
            cache.check_and_add(b"b" * 32, "nonce-0", now=1000.0)
    for n in range(1, 5):
        cache.check_and_add(b"b" * 32, f"nonce-{n}", now=1000.0)
    # Keys it has no bucket for share one: a crowd of fresh keys is refused too.
    with pytest.raises(RateLimited):
        cache.check_and_add(b"c" * 32, "nonce-0", now=1000.0)


def test_a_persistent_cache_remembers_across_restarts_and_prunes_old_nonces(tmp_path):
    from commuter.peer.auth import Rates

    path = tmp_path / "state" / "nonces.db"
    cache = NonceCache(max_skew=10, path=path)
    cache.check_and_add(b"k" * 32, "nonce-old", now=1000.0)
    cache.close()
    again = NonceCache(max_skew=10, path=path)
    with pytest.raises(ReplayedRequest):
        again.check_and_add(b"k" * 32, "nonce-old", now=1015.0)
    again.check_and_add(b"k" * 32, "nonce-new", now=1025.0)  # prunes the one older than 2 windows
    assert again.count() == 1
    again.close()
    path.write_bytes(b"not a database" * 100)  # damaged: started afresh, not a crash
    fresh = NonceCache(max_skew=10, path=path, rates=Rates())
    fresh.check_and_add(b"k" * 32, "nonce-x", now=1030.0)
    assert fresh.count() == 1
    fresh.close()


async def test_the_daemon_refuses_an_upload_replayed_after_a_restart(aiohttp_client, tmp_path):
    from peerhelp import machine, sealed_payload, signed_upload, trust

    from commuter.peer.server import make_app

    settings = machine(tmp_path / "bob")
    body = sealed_payload(tmp_path, ALICE, BOB).read_bytes()
    headers = signed_upload(ALICE, body)
    first = await aiohttp_client(make_app(settings, BOB, trust(settings, "alice", ALICE)))
    resp = await first.post("/v1/bundles", data=body, headers=headers)
    assert resp.status == 200, await resp.text()
    await first.close()  # the daemon restarts; an eavesdropper sends what it captured
    second = await aiohttp_client(make_app(settings, BOB, trust(settings, "alice", ALICE)))
    resp = await second.post("/v1/bundles", data=body, headers=headers)
    assert resp.status == 401 and (await resp.json())["error"] == "replayed"
