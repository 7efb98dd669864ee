"""Helpers for relay tests: signed requests and sealed payloads."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import select
import signal
import subprocess
import sys
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


STARTUP = 20.0


class RelayProcess:
    """`commuter relay serve` on 127.0.0.1, a free port, and `data_dir` (None: none given,
    as with `--store URL` among `extra`)."""

    def __init__(self, data_dir: Path | None, env_home: Path, *extra: str) -> None:
        where = [] if data_dir is None else ["--data-dir", str(data_dir)]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "COMMUTER_"))}
        env["HOME"] = str(env_home)
        env_home.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "commuter",
                "relay",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                *where,
                *extra,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.url = self._wait_url()
        self.port = int(self.url.rsplit(":", 1)[1])

    def _wait_url(self) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], STARTUP)
        line = self.proc.stdout.readline() if ready else ""
        self.banner = line
        match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        if not match:
            self.kill()
            raise AssertionError(f"relay did not start: {line!r}")
        return f"http://127.0.0.1:{match.group(1)}"

    def kill(self) -> int:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        return self._finish()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self._finish()

    def _finish(self) -> int:
        """Wait for the relay to end and close its pipes; what it printed is `out` and `err`."""
        self.out, self.err = self.proc.communicate(timeout=10)
        return self.proc.returncode
