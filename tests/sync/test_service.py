"""`commuter service` files (systemd unit checked by systemd-analyze where it exists, launchd
plist), install/uninstall touching only its own file; `serve --sync` stops on SIGTERM."""

from __future__ import annotations

import json
import plistlib
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from peerhelp import ServeProcess
from transhelp import env_for, run

from commuter.settings import Settings
from commuter.sync import service


def test_install_writes_a_unit_systemd_accepts_under_xdg_config_home(tmp_path):
    home = tmp_path / "home"
    env = env_for(home, XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    done = run(env, "service", "install", "--no-start", "--quiet", "5")
    assert done.returncode == 0, done.stderr
    unit = tmp_path / "xdg" / "systemd" / "user" / "commuter-sync.service"
    assert f"installed {unit}" in done.stdout
    assert "systemctl --user daemon-reload && systemctl --user enable --now" in done.stdout
    text = unit.read_text()
    assert "Restart=on-failure" in text and "StandardOutput=journal" in text
    [exec_line] = [line for line in text.splitlines() if line.startswith("ExecStart=")]
    first = exec_line.split('"')[1]
    assert Path(first).is_absolute() and Path(first).exists()
    assert '"serve" "--sync" "--quiet" "5"' in exec_line
    if shutil.which("systemd-analyze") is None:
        pytest.skip("no systemd-analyze here")
    checked = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    assert "commuter-sync.service" not in checked.stderr  # no complaint about our unit


def test_the_check_can_fail(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("no systemd-analyze here")
    bad = tmp_path / "bad.service"
    bad.write_text("[Service]\nExecStart=relative/commuter serve\nRestart=sometimes\n")
    checked = subprocess.run(
        ["systemd-analyze", "verify", str(bad)], capture_output=True, timeout=60, check=False
    )
    assert checked.returncode != 0


def test_uninstall_removes_only_its_own_file(tmp_path):
    env = env_for(tmp_path / "home")
    unit = tmp_path / "home" / ".config" / "systemd" / "user" / "commuter-sync.service"
    assert run(env, "service", "install", "--no-start").returncode == 0
    assert run(env, "service", "uninstall", "--no-stop").returncode == 0
    assert not unit.exists()
    unit.write_text("[Service]\nExecStart=/bin/true\n")  # the user's own unit of that name
    refused = run(env, "service", "install", "--no-start")
    assert refused.returncode != 0 and "not written by commuter" in refused.stderr
    refused = run(env, "service", "uninstall", "--no-stop")
    assert refused.returncode != 0 and unit.read_text().startswith("[Service]")


def test_a_path_with_spaces_and_percent_is_quoted_for_systemd():
    assert service._systemd_quote('/a b/%h/$X"\\') == '"/a b/%%h/$$X\\"\\\\"'


def test_launchd_plist(tmp_path):
    settings = Settings.from_env({"HOME": str(tmp_path), "COMMUTER_DATA_DIR": str(tmp_path / "d")})
    found = service.launchd_plist(settings, 10)
    plist = plistlib.loads(found.text)
    assert plist["Label"] == service.LAUNCHD_LABEL
    assert plist["ProgramArguments"][-4:] == ["serve", "--sync", "--quiet", "10"]
    assert Path(plist["ProgramArguments"][0]).is_absolute()
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    assert plist["EnvironmentVariables"]["COMMUTER_DATA_DIR"] == str(tmp_path / "d")
    assert found.path == tmp_path / "Library" / "LaunchAgents" / "dev.commuter.sync.plist"


def test_serve_sync_stops_on_sigterm_with_exit_0_and_says_so_in_status(tmp_path):
    env = env_for(tmp_path / "home")
    daemon = ServeProcess(env, "--sync", "--quiet", "1")
    try:
        shown = json.loads(run(env, "status", "--json", "--no-pending").stdout)
        assert shown["daemon"]["running"] is True
    finally:
        code, out, err = daemon.stop(signal.SIGTERM)
    assert code == 0, err
    assert out.strip().endswith("stopped") and "Traceback" not in err
    shown = json.loads(run(env, "status", "--json", "--no-pending").stdout)
    assert shown["daemon"]["running"] is False and shown["daemon"]["stopped_at"]
    assert sys.platform != "win32"


def test_sync_now_sends_at_once_what_the_quiet_period_holds_back(tmp_path):
    import os
    import re
    import time

    from transhelp import make_world

    w = make_world(tmp_path)
    for path in (w.a.home / ".claude" / "projects").rglob("*.jsonl"):
        os.utime(path)  # just written: an hour of quiet to go
    env = env_for(w.a.home)
    assert run(env, "sync-now").returncode == 1  # no daemon yet: one error line
    daemon = ServeProcess(env, "--sync", "--quiet", "3600")
    try:
        time.sleep(2)
        assert [p for p in w.shared.iterdir() if not p.name.startswith(".")] == []
        asked = run(env, "sync-now")
        assert asked.returncode == 0 and "asked the sync daemon" in asked.stdout
        deadline = time.monotonic() + 60
        while not [p for p in w.shared.iterdir() if not p.name.startswith(".")]:
            assert time.monotonic() < deadline, "nothing sent after sync-now"
            time.sleep(0.2)
    finally:
        code, out, err = daemon.stop()
    assert code == 0, err
    assert re.search(r"^sent [0-9a-f]{8} \(claude, .*\) to bob via folder", out, re.M), out


def test_a_second_daemon_on_the_same_port_fails_and_leaves_the_first_ones_status(tmp_path):
    env = env_for(tmp_path / "home")
    first = ServeProcess(env, "--sync")
    try:
        port = first.address.rsplit(":", 1)[1]
        second = subprocess.run(
            [
                sys.executable,
                "-m",
                "commuter",
                "serve",
                "--sync",
                "--host",
                "127.0.0.1",
                "--port",
                port,
                "--no-mdns",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode != 0
        [line] = second.stderr.strip().splitlines()
        assert "cannot listen" in line
        shown = json.loads(run(env, "status", "--json", "--no-pending").stdout)
        assert shown["daemon"]["running"] is True and shown["daemon"]["pid"] == first.proc.pid
    finally:
        code, _out, err = first.stop()
    assert code == 0, err
