"""The exit status of each kind of failure (docs/user-guide.md, "Exit status")."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from commuter import errors
from commuter.cli import CommuterGroup
from commuter.errors import (
    ERRORS_BY_CODE,
    CommuterError,
    ConfigError,
    ExitStatus,
    PeerUnreachable,
    RelayError,
    RelayUnreachable,
    UnknownPeer,
)

TIMEOUT = 60


def env_for(home: Path) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("XDG_", "COMMUTER_")) and k != "CLAUDE_CONFIG_DIR"
    }
    env.update(HOME=str(home), USER="tester", COMMUTER_MDNS_INTERFACES="127.0.0.1")
    return env


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "commuter", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("Error: ") and "Traceback" not in stderr
    return lines[0]


def test_the_statuses_are_httpie_style_numbers():
    assert [int(s) for s in ExitStatus] == [0, 1, 2, 3, 130, 141]
    assert CommuterError.exit_code is ExitStatus.ERROR


def test_only_the_unreachable_errors_have_their_own_status():
    classes = [
        v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, CommuterError)
    ]
    special = {c for c in classes if c.exit_code is not ExitStatus.ERROR}
    assert special == {PeerUnreachable, RelayUnreachable}
    assert all(isinstance(c.exit_code, ExitStatus) for c in classes)


def test_every_error_with_a_code_of_its_own_is_in_the_registry():
    classes = [
        v
        for v in vars(errors).values()
        if isinstance(v, type) and issubclass(v, CommuterError) and "code" in vars(v)
    ]
    assert sorted(ERRORS_BY_CODE) == sorted(c.code for c in classes)
    assert all(ERRORS_BY_CODE[c.code] is c for c in classes)
    assert ERRORS_BY_CODE["not-paired"] is errors.NotPaired  # not a hint-only subclass


def _toy(raised: BaseException) -> click.Group:
    @click.group(cls=CommuterGroup)
    def toy() -> None:
        pass

    @toy.command()
    def fail() -> None:
        raise raised

    return toy


@pytest.mark.parametrize(
    ("raised", "status"),
    [
        (ConfigError("no relay configured"), 1),
        (UnknownPeer("no paired peer named 'x'"), 1),
        (RelayError("the relay at http://r sent a malformed reply"), 1),
        (FileNotFoundError(2, "No such file or directory", "/nowhere"), 1),
        (PeerUnreachable("bob is unreachable at 10.0.0.2:47474 (connection refused)"), 3),
        (RelayUnreachable("the relay at http://r is unreachable (connection refused)"), 3),
        (KeyboardInterrupt(), 130),
    ],
)
def test_each_failure_exits_with_its_status_and_one_line(raised, status):
    result = CliRunner().invoke(_toy(raised), ["fail"])
    assert result.exit_code == status, result.output
    line = one_line(result.stderr)
    if status == 130:
        assert line == "Error: interrupted"


def test_usage_errors_exit_2(tmp_path):
    env = env_for(tmp_path / "home")
    for args in (
        ("no-such-command",),
        ("list", "--no-such-option"),
        ("push", "--plain", "--to", "office"),
    ):
        result = run(env, *args)
        assert result.returncode == ExitStatus.USAGE, (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_a_user_error_exits_1(tmp_path):
    result = run(env_for(tmp_path / "home"), "unpair", "office")
    assert result.returncode == ExitStatus.ERROR
    assert "no paired peer named 'office'" in one_line(result.stderr)


def test_an_unreachable_relay_exits_3(tmp_path, unused_tcp_port):
    env = env_for(tmp_path / "home")
    url = f"http://127.0.0.1:{unused_tcp_port}"
    assert run(env, "config", "set", "relay", url).returncode == 0
    result = run(env, "pull", "--via", "relay")
    assert result.returncode == ExitStatus.UNREACHABLE, result.stderr
    assert one_line(result.stderr) == (
        f"Error: the relay at {url} is unreachable (connection refused)"
    )


async def test_ctrl_c_exits_130_with_one_line(tmp_path):
    connected = asyncio.Event()
    held: list[asyncio.StreamWriter] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # accept, read, never answer: the joiner waits
        connected.set()
        while await reader.read(1 << 16):
            pass

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "commuter",
            "pair",
            "7-orbit-lemon-piano",
            "--address",
            address,
            env=env_for(tmp_path / "home"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            await asyncio.wait_for(connected.wait(), TIMEOUT)
            started = time.monotonic()
            proc.send_signal(signal.SIGINT)
            _out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.returncode == ExitStatus.INTERRUPTED, err
        assert one_line(err.decode()) == "Error: interrupted"
        assert time.monotonic() - started < 10
    finally:
        for writer in held:
            writer.close()
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)
