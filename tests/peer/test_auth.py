"""Signed requests: bound to method, path, body, time, nonce and recipient."""

from __future__ import annotations

import time

import pytest

from commuter.errors import BadSignature, ReplayedRequest
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
