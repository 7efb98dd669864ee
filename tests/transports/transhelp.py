"""Helpers for transport tests: fixed identities, two fake machines sharing a folder."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from claude_home import TOOLS, install

from commuter import config
from commuter.peer.identity import KEY_FILE, Identity
from commuter.peer.peers import Peer, Peers
from commuter.settings import Settings
from commuter.transports import TransportContext

ALICE = Identity.from_seed(b"a" * 32)
BOB = Identity.from_seed(b"b" * 32)
CAROL = Identity.from_seed(b"c" * 32)
EVE = Identity.from_seed(b"e" * 32)
TIMEOUT = 60


def env_for(home: Path, **extra: str) -> dict[str, str]:
    """A subprocess environment for a fake machine whose HOME is `home`."""
    home.mkdir(parents=True, exist_ok=True)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("XDG_", "COMMUTER_")) and k != "CLAUDE_CONFIG_DIR"
    }
    env.update(HOME=str(home), USER="tester", COMMUTER_MDNS_INTERFACES="127.0.0.1")
    env.update(extra)
    return env


def settings_of(home: Path) -> Settings:
    """In-process settings of a fake machine; mDNS lookups give up quickly."""
    return dataclasses.replace(Settings.from_env(env_for(home)), mdns_timeout=0.3)


def give_identity(settings: Settings, identity: Identity) -> None:
    """Make `identity` this machine's key (what Identity.load_or_create will read)."""
    settings.config_dir.mkdir(parents=True, exist_ok=True)
    seed = base64.b64encode(bytes(identity.signing_key)).decode()
    (settings.config_dir / KEY_FILE).write_text(json.dumps({"version": 1, "seed": seed}))


def trust(settings: Settings, name: str, identity: Identity, address: str | None = None) -> None:
    peers = Peers.load(settings)
    peers.add(Peer.new(name, identity.public_key, address))
    peers.save()


def context(settings: Settings) -> TransportContext:
    return TransportContext.load(settings)


def run(env: dict[str, str], *args: str, cwd: Path | None = None):
    return subprocess.run(
        [sys.executable, "-m", "commuter", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=cwd,
        check=False,
    )


def one_error_line(result: subprocess.CompletedProcess[str], needle: str, status: int = 1) -> None:
    """One error line holding `needle`, exit `status` (3: a peer, relay or host unreachable)."""
    assert result.returncode == status, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert needle in lines[0], lines[0]
    assert "Traceback" not in result.stderr


@dataclass
class World:
    """Machine A (alice, has the real sessions) and B (bob), paired, sharing `shared`."""

    a: Settings
    b: Settings
    shared: Path
    project_a: Path
    project_b: Path


def make_world(tmp_path: Path, *, pair: bool = True) -> World:
    a_home = install(tmp_path / "A")
    a = settings_of(a_home)
    b = settings_of(tmp_path / "B")
    project_b = b.home / "code" / "my.app"
    project_b.mkdir(parents=True)
    shared = tmp_path / "Dropbox" / "commuter"
    shared.mkdir(parents=True)
    for s, me in ((a, ALICE), (b, BOB)):
        give_identity(s, me)
        config.set_value(s, "path-map", (str(a_home / "projects"), str(b.home / "code")))
        config.set_value(s, "transfer-dir", (str(shared),))
    if pair:
        trust(a, "bob", BOB)
        trust(b, "alice", ALICE)
    return World(a, b, shared, a_home / "projects" / "my.app", project_b)


def say(path: Path, text: str, session_id: str = TOOLS) -> None:
    """Append a user prompt to the Claude Code transcript at `path` (the person went on)."""
    entry = {
        "type": "user",
        "uuid": str(uuid.uuid4()),
        "sessionId": session_id,
        "message": {"role": "user", "content": text},
    }
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry, separators=(",", ":")) + "\n")
