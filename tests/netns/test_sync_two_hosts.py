"""Two hosts on a veth LAN (network namespaces, see test_two_hosts.py): paired over mDNS, each
running `serve --sync --quiet 1`; A's sessions reach B with no command typed."""

from __future__ import annotations

import json
import time

import pytest
from claude_home import TOOLS, install, transcript
from test_two_hosts import Host, lan  # noqa: F401  (the fixture)

pytestmark = pytest.mark.netns

WAIT = 90.0


def test_sync_daemons_move_a_session_across_two_namespaces(lan: tuple[Host, Host]) -> None:  # noqa: F811
    a, b = lan
    install(a.home)
    project_a, project_b = a.home / "projects" / "my.app", b.home / "code" / "my.app"
    project_b.mkdir(parents=True)
    a.run("config", "set", "name", "home")
    b.run("config", "set", "name", "office")
    b.run("config", "set", "path-map", str(a.home / "projects"), str(b.home / "code"))
    inviter = b.start("pair", "pair", "--json", "--timeout", "60")
    invite = json.loads(inviter.line('"code"'))
    a.run("pair", invite["code"])
    assert inviter.finish() == 0, inviter.text()

    office = b.start("sync", "serve", "--sync", "--quiet", "1")
    office.line("sync: quiet 1 s")
    home = a.start("sync", "serve", "--sync", "--quiet", "1")
    home.line("sync: quiet 1 s")
    landed = transcript(b.home, project_b, TOOLS)
    deadline = time.monotonic() + WAIT
    while not landed.is_file():
        assert time.monotonic() < deadline, f"{home.text()}\n{office.text()}"
        time.sleep(0.25)
    sent = home.line(f"sent {TOOLS[:8]}")
    assert "to office via lan" in sent and str(project_a) in sent
    imported = office.line(f"imported {TOOLS[:8]}", timeout=WAIT)
    assert "from home via lan" in imported and str(project_b) in imported
    assert landed.read_bytes().count(b"\n") == transcript(
        a.home, project_a, TOOLS
    ).read_bytes().count(b"\n")
    for daemon in (home, office):
        daemon.proc.terminate()
        assert daemon.proc.wait(30) == 0, daemon.text()
        assert "Traceback" not in daemon.err.read_text()
