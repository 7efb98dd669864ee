"""A real PostgreSQL server for relay tests and benchmarks: initdb + pg_ctl into a fresh
temporary directory, listening on 127.0.0.1 only (no Unix socket), trust auth for one role.

As root the server runs as the `postgres` user (PostgreSQL refuses to run as root), through
runuser, with the directory chowned to it. `find_bin_dir` is None where no server binaries
exist (then the tests skip, saying so); scripts/install-postgres.sh installs them.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

ROLE = "relay"
SKIP_REASON = (
    "no PostgreSQL server binaries (initdb, pg_ctl): run `bash scripts/install-postgres.sh` "
    "or set COMMUTER_PG_BIN to their directory"
)


def find_bin_dir() -> Path | None:
    """Where initdb and pg_ctl are: $COMMUTER_PG_BIN, Debian's /usr/lib/postgresql/N/bin
    (newest), or PATH."""
    candidates: list[Path] = []
    if os.environ.get("COMMUTER_PG_BIN"):
        candidates.append(Path(os.environ["COMMUTER_PG_BIN"]))
    debian = Path("/usr/lib/postgresql")
    if debian.is_dir():
        versions = [p for p in debian.iterdir() if p.name.isdigit()]
        candidates += [p / "bin" for p in sorted(versions, key=lambda p: -int(p.name))]
    found = shutil.which("initdb")
    if found:
        candidates.append(Path(os.path.realpath(found)).parent)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    return None


_SHARED: list[PgServer] = []


def shared_server() -> PgServer:
    """The one server of this test process (started on first use, stopped at exit);
    pytest.skip, naming the reason, where no server binaries exist."""
    if not _SHARED:
        bin_dir = find_bin_dir()
        if bin_dir is None:
            import pytest

            pytest.skip(SKIP_REASON)
        _SHARED.append(PgServer(bin_dir))
        atexit.register(_SHARED[0].stop)
    return _SHARED[0]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgServer:
    """One server in a temporary directory; `stop` ends it and removes the directory."""

    def __init__(
        self,
        bin_dir: Path,
        *,
        fsync: bool = False,
        max_connections: int = 200,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="commuter-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = 0
        self._as: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        try:
            self._run(
                "initdb", "-D", str(self.data), "-U", ROLE, "--auth=trust", "-E", "UTF8",
                "--no-locale", "--no-sync",
            )  # fmt: skip
            options = [
                "-c listen_addresses=127.0.0.1",
                "-c unix_socket_directories=''",
                f"-c max_connections={max_connections}",
                f"-c fsync={'on' if fsync else 'off'}",
                *(f"-c {name}={value}" for name, value in (settings or {}).items()),
            ]
            self._options = options
            for _ in range(3):  # a port taken between the probe and the start: another
                self.port = _free_port()
                if self._start().returncode == 0:
                    break
            else:
                raise RuntimeError(f"postgres did not start: {self.log_tail()}")
        except BaseException:
            self.stop()
            raise

    def _start(self) -> subprocess.CompletedProcess[str]:
        return self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
            "-o", " ".join([f"-p {self.port}", *self._options]), "start", check=False,
        )  # fmt: skip

    def crash_and_restart(self) -> None:
        """Stop the server as a crash would (`-m immediate`: no checkpoint, WAL not yet
        written from its buffers is lost) and start it again on the same port: it recovers
        from the WAL on disk."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        done = self._start()
        if done.returncode != 0:
            raise RuntimeError(f"postgres did not restart: {self.log_tail()}")

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*self._as, str(self.bin_dir / tool), *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=self.root,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"{tool} failed: {done.stderr.strip()[-2000:]}")
        return done

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-2000:]
        return ""

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{ROLE}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A fresh database; its URL."""
        name = "t_" + secrets.token_hex(6)
        self.psql("postgres", f"CREATE DATABASE {name}")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        self.psql("postgres", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", check=False)

    def psql(self, database: str, sql: str, *, check: bool = True) -> str:
        """Run `sql` through psql (as a client, over TCP); its unaligned output."""
        where = ["-h", "127.0.0.1", "-p", str(self.port), "-U", ROLE, "-d", database]
        done = subprocess.run(
            [
                str(self.bin_dir / "psql"),
                *where,
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"psql failed: {done.stderr.strip()}")
        return done.stdout

    def dump(self, url: str) -> bytes:
        """pg_dump of the database at `url`: schema and every row."""
        done = subprocess.run(
            [str(self.bin_dir / "pg_dump"), "--no-owner", "-d", url],
            capture_output=True,
            timeout=120,
            check=True,
        )
        return done.stdout

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)
