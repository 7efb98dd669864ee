"""Two hosts on a veth LAN between network namespaces: pair, serve, send and pull found by mDNS."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from claude_home import TOOLS, install, transcript

pytestmark = pytest.mark.netns

TIMEOUT = 60
READY_TIMEOUT = 30.0
SERVE_PORT = 47480  # free: nothing else listens in a fresh namespace


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


def _must(*args: str) -> None:
    result = _ip(*args)
    assert result.returncode == 0, f"ip {' '.join(args)}: {result.stderr.strip()}"


@dataclass
class Background:
    """A commuter process running in a namespace; its stdout and stderr go to files."""

    proc: subprocess.Popen[bytes]
    out: Path
    err: Path

    def text(self) -> str:
        return f"stdout:\n{self.out.read_text()}\nstderr:\n{self.err.read_text()}"

    def line(self, needle: str, timeout: float = READY_TIMEOUT) -> str:
        """The first complete stdout line containing `needle` (waits at most `timeout` s)."""
        deadline = time.monotonic() + timeout
        while True:
            exited = self.proc.poll() is not None
            text = self.out.read_text(errors="replace")
            for line in text[: text.rfind("\n") + 1].splitlines():
                if needle in line:
                    return line
            if exited or time.monotonic() > deadline:
                pytest.fail(
                    f"no {needle!r} line (exit code {self.proc.returncode}):\n{self.text()}"
                )
            time.sleep(0.05)

    def finish(self) -> int:
        """Wait (bounded) for the process to exit on its own; its exit code."""
        try:
            return self.proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(f"still running after {TIMEOUT} s:\n{self.text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@dataclass
class Host:
    """One machine: a network namespace, its end of the veth, its address, a fake HOME."""

    ns: str
    veth: str
    address: str
    home: Path
    logs: Path
    started: list[Background] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("XDG_", "COMMUTER_")) and k != "CLAUDE_CONFIG_DIR"
        }
        env.update(HOME=str(self.home), USER="tester", COMMUTER_MDNS_INTERFACES=self.address)
        return env

    def argv(self, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns, sys.executable, "-m", "commuter", *args]

    def run(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """`commuter ARGS` in this namespace; asserts it exits 0."""
        result = subprocess.run(
            self.argv(*args),
            env=self.env(),
            cwd=cwd or self.home,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert result.returncode == 0, (self.ns, args, result.stdout, result.stderr)
        return result

    def start(self, label: str, *args: str) -> Background:
        """`commuter ARGS` in the background in this namespace (stopped by the fixture)."""
        out, err = self.logs / f"{self.ns}-{label}.out", self.logs / f"{self.ns}-{label}.err"
        with out.open("wb") as fout, err.open("wb") as ferr:
            proc = subprocess.Popen(
                self.argv(*args),
                env=self.env(),
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=fout,
                stderr=ferr,
            )
        self.started.append(Background(proc, out, err))
        return self.started[-1]


def _kill_leftovers(ns: str) -> None:
    # Only processes this test started can live in its own namespace.
    listed = _ip("netns", "pids", ns)
    for pid in listed.stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


@pytest.fixture
def lan(tmp_path: Path) -> Iterator[tuple[Host, Host]]:
    """Hosts A (10.251.0.1) and B (10.251.0.2) in two namespaces joined by a veth pair."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    tag = f"{os.getpid()}{secrets.token_hex(2)}"  # interface names stay within 15 characters
    logs = tmp_path / "logs"
    logs.mkdir()
    a = Host(f"cmtA-{tag}", f"vA-{tag}", "10.251.0.1", tmp_path / "A", logs)
    b = Host(f"cmtB-{tag}", f"vB-{tag}", "10.251.0.2", tmp_path / "B", logs)
    made: list[str] = []
    try:
        for host in (a, b):
            try:
                added = _ip("netns", "add", host.ns)
            except OSError as exc:
                pytest.skip(f"cannot run `ip netns add`: {exc}")
            if added.returncode != 0:
                pytest.skip(f"`ip netns add` failed: {added.stderr.strip()}")
            made.append(host.ns)
        _must("link", "add", a.veth, "type", "veth", "peer", "name", b.veth)
        for host in (a, b):
            host.home.mkdir()
            _must("link", "set", host.veth, "netns", host.ns)
            _must("-n", host.ns, "addr", "add", f"{host.address}/24", "dev", host.veth)
            _must("-n", host.ns, "link", "set", "lo", "up")
            _must("-n", host.ns, "link", "set", host.veth, "up")
            _must("-n", host.ns, "route", "add", "224.0.0.0/4", "dev", host.veth)
        yield a, b
    finally:
        for host in (a, b):
            for bg in host.started:
                bg.stop()
        for ns in made:
            _kill_leftovers(ns)
            _ip("netns", "del", ns)
        # Only if it never left the root namespace (the name is unique to this run).
        if _ip("link", "show", a.veth).returncode == 0:
            _ip("link", "del", a.veth)


def test_pair_serve_send_and_pull_across_two_namespaces(lan: tuple[Host, Host]) -> None:
    a, b = lan
    install(a.home)
    project_a, project_b = a.home / "projects" / "my.app", b.home / "code" / "my.app"
    project_b.mkdir(parents=True)
    b.run("config", "set", "name", "office")
    a.run("config", "set", "name", "home")
    b.run("config", "set", "path-map", str(a.home / "projects"), str(b.home / "code"))
    office_id = json.loads(b.run("id", "--json").stdout)["device_id"]

    # A has no address: it finds B's invite by its nameplate over mDNS on the veth.
    inviter = b.start("pair", "pair", "--json", "--timeout", "60")
    invite = json.loads(inviter.line('"code"'))
    assert invite["address"].startswith("10.251.0.2:")
    joined = a.run("pair", invite["code"])
    assert f"paired with office ({office_id})" in joined.stdout
    assert inviter.finish() == 0, inviter.text()
    paired = json.loads(inviter.line('"paired"'))["paired"]
    assert paired["name"] == "home" and paired["address"].startswith("10.251.0.1:")
    [office] = json.loads(a.run("peers", "--json", "--no-scan").stdout)["paired"]
    assert office["name"] == "office" and office["device_id"] == office_id
    assert office["last_address"] == "10.251.0.2:47474"
    [home] = json.loads(b.run("peers", "--json", "--no-scan").stdout)["paired"]
    assert home["name"] == "home" and home["last_address"].startswith("10.251.0.1:")

    # B serves on another port than the 47474 A remembered from pairing: only mDNS knows it.
    server = b.start("serve", "serve", "--port", str(SERVE_PORT))
    assert server.line("serving as office").endswith(f" on *:{SERVE_PORT}")
    where = f"10.251.0.2:{SERVE_PORT}"
    scan = json.loads(a.run("peers", "--json").stdout)
    assert scan["seen"] == [
        {"name": "office", "device_id": office_id, "address": where, "paired": True}
    ]
    assert scan["paired"][0]["online"] == where

    sent = a.run("send", "office", "--latest", cwd=project_a)
    waiting = "(waiting in its inbox: run `commuter pull` there)"
    assert f"sent session {TOOLS} to office {waiting}" in sent.stdout
    assert "from home" in server.line("received ")
    [office] = json.loads(a.run("peers", "--json", "--no-scan").stdout)["paired"]
    assert office["last_address"] == where

    pulled = b.run("pull")
    assert "from home (" in pulled.stdout and "via lan" in pulled.stdout, pulled.stdout
    assert f"claude --resume {TOOLS}" in pulled.stdout
    landed = transcript(b.home, project_b, TOOLS)
    assert landed.is_file()
    records = [json.loads(line) for line in landed.read_text().splitlines()]
    assert {r["sessionId"] for r in records if "sessionId" in r} == {TOOLS}
    assert len(records) == len(transcript(a.home, project_a, TOOLS).read_text().splitlines())
    listed = json.loads(b.run("list", "--json").stdout)
    assert [(s["session_id"], s["project"]) for s in listed] == [(TOOLS, str(project_b))]
    assert "Traceback" not in server.err.read_text()
