"""Signed HTTP requests: every request names its sender's key and its recipient and is bound
to method, path, body digest, time and a nonce, so it cannot be altered, replayed or moved
(to another path, body or recipient)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Mapping

from commuter.errors import BadSignature, ReplayedRequest
from commuter.peer.identity import Identity, verify_signature

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


class NonceCache:
    """Nonces seen within the clock-skew window; bounded in size."""

    def __init__(self, max_skew: float = MAX_SKEW, max_entries: int = 100_000) -> None:
        self.max_skew = max_skew
        self.max_entries = max_entries
        self._seen: OrderedDict[tuple[bytes, str], float] = OrderedDict()

    def check_and_add(self, key: bytes, nonce: str, now: float) -> None:
        """Raise ReplayedRequest if (key, nonce) was seen within the window."""
        while self._seen:
            oldest_key, expires = next(iter(self._seen.items()))
            if expires > now and len(self._seen) < self.max_entries:
                break
            del self._seen[oldest_key]
        if (key, nonce) in self._seen:
            raise ReplayedRequest("replayed request")
        self._seen[(key, nonce)] = now + 2 * self.max_skew


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
