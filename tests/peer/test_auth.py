"""Signed requests: bound to method, path, body, time and nonce."""

from __future__ import annotations

import time

import pytest

from commuter.errors import BadSignature, ReplayedRequest
from commuter.peer.auth import H_KEY, H_SIG, NonceCache, sign_headers, verify_headers
from commuter.peer.identity import Identity

ALICE = Identity.from_seed(b"a" * 32)
EVE = Identity.from_seed(b"e" * 32)
DIGEST = "ab" * 32


def test_valid_request_yields_sender_key():
    headers = sign_headers(ALICE, "POST", "/v1/bundles", DIGEST)
    assert verify_headers(headers, "POST", "/v1/bundles", DIGEST, NonceCache()) == ALICE.public_key


def test_replay_is_rejected():
    cache = NonceCache()
    headers = sign_headers(ALICE, "POST", "/v1/bundles", DIGEST)
    verify_headers(headers, "POST", "/v1/bundles", DIGEST, cache)
    with pytest.raises(ReplayedRequest):
        verify_headers(headers, "POST", "/v1/bundles", DIGEST, cache)


@pytest.mark.parametrize(
    ("method", "path", "digest"),
    [("GET", "/v1/bundles", DIGEST), ("POST", "/v1/other", DIGEST), ("POST", "/v1/bundles", "00")],
)
def test_request_cannot_be_moved_or_altered(method, path, digest):
    headers = sign_headers(ALICE, "POST", "/v1/bundles", DIGEST)
    with pytest.raises(BadSignature):
        verify_headers(headers, method, path, digest, NonceCache())


def test_body_not_matching_signed_digest_is_rejected():
    headers = sign_headers(ALICE, "POST", "/v1/bundles", DIGEST)
    with pytest.raises(BadSignature, match="digest"):
        verify_headers(headers, "POST", "/v1/bundles", "cd" * 32, NonceCache())


def test_stale_timestamp_is_rejected():
    headers = sign_headers(ALICE, "POST", "/v1/bundles", DIGEST)
    later = time.time() + 3600
    with pytest.raises(BadSignature, match="stale"):
        verify_headers(headers, "POST", "/v1/bundles", DIGEST, NonceCache(), now=later)


def test_swapped_key_is_rejected():
    headers = sign_headers(EVE, "POST", "/v1/bundles", DIGEST)
    headers[H_KEY] = sign_headers(ALICE, "GET", "/", DIGEST)[H_KEY]
    with pytest.raises(BadSignature):
        verify_headers(headers, "POST", "/v1/bundles", DIGEST, NonceCache())


@pytest.mark.parametrize("drop", [H_KEY, H_SIG])
def test_missing_headers_are_rejected(drop):
    headers = sign_headers(ALICE, "POST", "/v1/bundles", DIGEST)
    del headers[drop]
    with pytest.raises(BadSignature):
        verify_headers(headers, "POST", "/v1/bundles", DIGEST, NonceCache())


def test_nonce_cache_forgets_after_window():
    cache = NonceCache(max_skew=10)
    cache.check_and_add(b"k", "n" * 10, now=0)
    cache.check_and_add(b"k", "n" * 10, now=100)
