"""Settings: where things live on this machine; the only reader of os.environ and HOME."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from commuter.errors import ConfigError

# This machine's identity key in config_dir (peer/identity.py); named here so that a check
# for it (an export's origin) need not import nacl.
KEY_FILE = "identity.key"
# The fork records in state_dir (forks.py); named here so that a check for them (an export's
# meta, a listing) need not import sqlite3.
FORKS_FILE = "forks.sqlite"


def _hostname() -> str:
    """gethostname(2): what uname's nodename holds on POSIX, without importing socket."""
    if hasattr(os, "uname"):
        return os.uname().nodename
    import socket

    return socket.gethostname()


@dataclass(frozen=True, slots=True)
class Settings:
    """Paths and knobs of one (possibly fake) machine."""

    home: Path
    config_dir: Path
    data_dir: Path
    mdns_interfaces: tuple[str, ...] | None = None
    hostname: str = field(default_factory=_hostname)
    user: str = "user"
    connect_timeout: float = 5.0
    # A live daemon answers GET /v1/info in milliseconds: a peer that accepts a connection
    # and says nothing within this is given up on (send probes it before uploading).
    reply_timeout: float = 5.0
    # Mid-transfer: no byte sent or received for this long, or no answer this long after an
    # upload's last byte or before a fetch's first (the peer may be importing or exporting).
    stall_timeout: float = 60.0
    mdns_timeout: float = 3.0
    ssh_command: str = "ssh"  # $COMMUTER_SSH, like GIT_SSH_COMMAND; sshhop splits it with shlex
    # $COMMUTER_SSH_HOP: this run is `commuter import -` started by the ssh hop of `to HOST`.
    ssh_hop: bool = False
    # $COMMUTER_MAX_IMPORT_SIZE ("8G", "500M", bytes): the most one import unpacks in all
    max_import_size: int = 4 << 30
    # The environment as it was read (read-only): each backend takes its own variables from
    # it (Backend.env_vars names them: CLAUDE_CONFIG_DIR, CODEX_HOME, ...), so that no backend
    # reads os.environ and a test can hand one a made-up environment.
    env: Mapping[str, str] = field(
        default_factory=lambda: MappingProxyType({}), repr=False, hash=False
    )

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.json"

    @property
    def backups_dir(self) -> Path:
        return self.data_dir / "backups"

    @property
    def inbox_dir(self) -> Path:
        return self.data_dir / "inbox"

    @property
    def rejected_dir(self) -> Path:
        """Received items that can never be opened (damaged), set aside instead of retried."""
        return self.data_dir / "rejected"

    @property
    def state_dir(self) -> Path:
        return self.data_dir / "state"

    @property
    def cache_dir(self) -> Path:
        """What commuter can rebuild (the list's transcript heads): safe to delete.
        $XDG_CACHE_HOME/commuter (~/.cache/commuter); under data_dir when COMMUTER_DATA_DIR
        is set or the settings were not read from an environment."""
        env = self.env
        if not env or env.get("COMMUTER_DATA_DIR"):
            return self.data_dir / "cache"
        if os.name == "posix" and not _is_macos():
            return Path(env.get("XDG_CACHE_HOME") or self.home / ".cache") / "commuter"
        import platformdirs

        return platformdirs.user_cache_path("commuter")

    @property
    def staging_root(self) -> Path:
        return self.data_dir / "staging"

    @property
    def staging_dir(self) -> Path:
        """This process's own staging folder (plaintext lives here while a bundle moves); what
        dead processes left under staging_root is removed the first time it is asked for."""
        from commuter.fsutil import staging_for

        return staging_for(self.staging_root)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from the process environment (or the mapping given)."""
        env = dict(os.environ if env is None else env)
        home = Path(env.get("HOME") or Path.home())
        config_dir = Path(env["COMMUTER_CONFIG_DIR"]) if env.get("COMMUTER_CONFIG_DIR") else None
        data_dir = Path(env["COMMUTER_DATA_DIR"]) if env.get("COMMUTER_DATA_DIR") else None
        if config_dir is None or data_dir is None:
            xdg_config = env.get("XDG_CONFIG_HOME")
            xdg_data = env.get("XDG_DATA_HOME")
            if os.name == "posix" and not _is_macos():
                config_dir = config_dir or Path(xdg_config or home / ".config") / "commuter"
                data_dir = data_dir or Path(xdg_data or home / ".local" / "share") / "commuter"
            else:
                import platformdirs

                config_dir = config_dir or platformdirs.user_config_path("commuter")
                data_dir = data_dir or platformdirs.user_data_path("commuter")
        interfaces = env.get("COMMUTER_MDNS_INTERFACES")
        return cls(
            home=home,
            config_dir=config_dir,
            data_dir=data_dir,
            mdns_interfaces=tuple(i.strip() for i in interfaces.split(",") if i.strip())
            if interfaces
            else None,
            user=env.get("USER") or _user(),
            ssh_command=env.get("COMMUTER_SSH", "").strip() or "ssh",
            ssh_hop=env.get("COMMUTER_SSH_HOP") == "1",
            max_import_size=_size(env.get("COMMUTER_MAX_IMPORT_SIZE", "").strip() or "4G"),
            env=MappingProxyType(env),
        )


def _size(text: str) -> int:
    """Bytes from "8G", "500M", "64k" or "1000000" (K, M, G and T are powers of 1024)."""
    found = re.fullmatch(r"([0-9]{1,15})\s*([KMGT]?)(?:i?B)?", text, re.IGNORECASE)
    if found is None or int(found[1]) == 0:
        raise ConfigError(f"COMMUTER_MAX_IMPORT_SIZE {text[:40]!r} is not a size like 8G or 500M")
    return int(found[1]) << (10 * " KMGT".index(found[2].upper() or " "))


def _is_macos() -> bool:
    return os.uname().sysname == "Darwin"


def _user() -> str:
    # what getpass.getuser() reads first, without importing getpass (and termios) for it
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        if os.environ.get(name):
            return os.environ[name]
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "user"
