"""Helpers for peer tests: fixed identities, fake machines, sealed payloads."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import re
import select
import signal
import subprocess
import sys
from pathlib import Path

from commuter.errors import BundleError
from commuter.peer import auth, seal
from commuter.peer.identity import KEY_FILE, Identity
from commuter.peer.peers import Peer, Peers
from commuter.settings import Settings

ALICE = Identity.from_seed(b"a" * 32)
BOB = Identity.from_seed(b"b" * 32)
CAROL = Identity.from_seed(b"c" * 32)
EVE = Identity.from_seed(b"e" * 32)


def machine(root: Path, **extra: str) -> Settings:
    """Settings of a fake machine whose HOME is `root` (mDNS on loopback only)."""
    root.mkdir(parents=True, exist_ok=True)
    env = {"HOME": str(root), "USER": "tester", "COMMUTER_MDNS_INTERFACES": "127.0.0.1"}
    env.update(extra)
    return Settings.from_env(env)


def trust(settings: Settings, name: str, identity: Identity, address: str | None = None) -> Peers:
    """Store `identity` as a paired peer of `settings`' machine."""
    peers = Peers.load(settings)
    peers.add(Peer.new(name, identity.public_key, address))
    peers.save()
    return peers


def sealed_payload(tmp: Path, sender: Identity, to: Identity, size: int = 3000) -> Path:
    """A sealed file of random bytes from `sender` to `to`."""
    plain = tmp / f"plain-{os.urandom(4).hex()}"
    plain.write_bytes(os.urandom(size))
    out = plain.with_suffix(".sealed")
    seal.seal_file(plain, out, sender, [to.public_key])
    return out


def signed_upload(
    identity: Identity, data: bytes, path: str = "/v1/bundles", to: Identity = BOB
) -> dict[str, str]:
    """Headers signing a POST of `data` for `to`: bound to its seal header, or (junk) to its
    sha256."""
    try:
        digest = auth.sealed_body_digest(seal.read_header_from(io.BytesIO(data)).digest)
    except BundleError:
        digest = hashlib.sha256(data).hexdigest()
    return auth.sign_headers(identity, "POST", path, digest, audience=to.device_id)


def signed_get(identity: Identity, path: str, to: Identity = BOB) -> dict[str, str]:
    """Headers signing a GET of `path` by `identity` for `to`'s daemon."""
    return auth.sign_headers(identity, "GET", path, audience=to.device_id)


def inbox_files(settings: Settings) -> list[str]:
    """Everything in the inbox folder, temp files included."""
    d = settings.inbox_dir
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def give_identity(settings: Settings, identity: Identity) -> None:
    """Make `identity` this machine's key (what Identity.load_or_create will read)."""
    settings.config_dir.mkdir(parents=True, exist_ok=True)
    seed = base64.b64encode(bytes(identity.signing_key)).decode()
    (settings.config_dir / KEY_FILE).write_text(json.dumps({"version": 1, "seed": seed}))


class ServeProcess:
    """`commuter serve` on 127.0.0.1, a free port, no mDNS, in the fake machine `env`."""

    def __init__(self, env: dict[str, str], *extra: str, startup: float = 20.0) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "commuter",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-mdns",
                *extra,
            ],
            env={**env, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], startup)
        self.first_line = self.proc.stdout.readline() if ready else ""
        match = re.search(r":(\d+)\s*$", self.first_line.strip())
        if not match:
            self.kill()
            raise AssertionError(f"serve did not start: {self.first_line!r}")
        self.address = f"127.0.0.1:{match.group(1)}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> tuple[int, str, str]:
        """Send `sig`, wait; (exit code, rest of stdout, stderr)."""
        self.proc.send_signal(sig)
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        return self.proc.returncode, out, err

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.proc.communicate(timeout=10)
