"""Helpers for relay tests: signed requests and sealed payloads."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from commuter.peer import auth, seal
from commuter.peer.identity import Identity

ALICE = Identity.from_seed(b"a" * 32)
BOB = Identity.from_seed(b"b" * 32)
EVE = Identity.from_seed(b"e" * 32)


def sealed_bytes(tmp: Path, sender: Identity, to: list[Identity], size: int = 3000) -> bytes:
    plain = tmp / f"plain-{os.urandom(4).hex()}"
    plain.write_bytes(os.urandom(size))
    out = plain.with_suffix(".sealed")
    seal.seal_file(plain, out, sender, [i.public_key for i in to])
    return out.read_bytes()


def box(identity: Identity) -> str:
    return f"/v1/mailbox/{identity.device_id}"


def signed(identity: Identity, method: str, path: str, body: bytes = b"") -> dict[str, str]:
    digest = hashlib.sha256(body).hexdigest() if body else auth.EMPTY_SHA256
    return auth.sign_headers(identity, method, path, digest)


async def upload(client, sender: Identity, to: Identity, body: bytes):
    path = box(to)
    return await client.post(path, data=body, headers=signed(sender, "POST", path, body))
