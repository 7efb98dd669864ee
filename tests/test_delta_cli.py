"""`commuter send` and `push --to` through the CLI to a real `serve --auto-import` in another
process: the second send of a session that went on carries only the new part (the bytes the
daemon logs for each upload), and the peer ends with every message."""

from __future__ import annotations

import json
import re
import sys
import uuid
from pathlib import Path

import pytest
from claude_home import TOOLS, install, transcript

sys.path.insert(0, str(Path(__file__).parent / "peer"))
from peerhelp import ALICE, BOB, ServeProcess, give_identity, trust
from test_cli_peer import env_for, run, settings_of

from commuter import config
from commuter.backends.claude import lineage


def _say(path: Path, n: int) -> list[str]:
    last = [json.loads(x) for x in path.read_text().splitlines() if '"uuid"' in x][-1]
    parent, ids = last["uuid"], []
    with path.open("a", encoding="utf-8") as fh:
        for i in range(n):
            entry = {
                "parentUuid": parent,
                "type": "user",
                "uuid": str(uuid.uuid4()),
                "sessionId": TOOLS,
                "timestamp": f"2099-01-01T10:00:{i:02d}.000Z",
                "message": {"role": "user", "content": f"more {i} " + uuid.uuid4().hex * 8},
            }
            fh.write(json.dumps(entry, separators=(",", ":")) + "\n")
            parent = entry["uuid"]
            ids.append(parent)
    return ids


@pytest.mark.parametrize("command", ["send", "push"])
def test_the_second_send_carries_only_what_went_on(tmp_path: Path, command: str) -> None:
    home = env_for(install(tmp_path / "home"))
    office = env_for(tmp_path / "office")
    project = Path(home["HOME"]) / "projects" / "my.app"
    (Path(office["HOME"]) / "code" / "my.app").mkdir(parents=True)
    for env, me, name in ((office, ALICE, "office"), (home, BOB, "home")):
        s = settings_of(env)
        give_identity(s, me)
        config.set_value(s, "name", (name,))
        config.set_value(s, "path-map", (str(project.parent), f"{office['HOME']}/code"))
    trust(settings_of(home), "office", ALICE)
    trust(settings_of(office), "home", BOB)
    at_home = transcript(Path(home["HOME"]), project, TOOLS)
    _say(at_home, 300)  # big enough that a delta shows
    server = ServeProcess(office, "--auto-import")
    try:
        if command == "send":
            argv = ["send", "office", TOOLS, "--address", server.address]
        else:
            trust(settings_of(home), "office", ALICE, server.address)
            argv = ["push", TOOLS, "--to", "office", "--via", "lan"]
        first = run(home, *argv, cwd=project)
        assert first.returncode == 0, first.stderr
        new = _say(at_home, 20)
        second = run(home, *argv, cwd=project)
        assert second.returncode == 0, second.stderr
        assert "imported there" in second.stdout or "via lan" in second.stdout
    finally:
        _code, out, _err = server.stop()
    sizes = [int(n) for n in re.findall(r"received .+? from home \((\d+) bytes\)", out)]
    assert len(sizes) == 2, out
    assert sizes[1] < sizes[0] / 5, sizes
    at_office = transcript(Path(office["HOME"]), Path(office["HOME"]) / "code" / "my.app", TOOLS)
    assert lineage.uuid_chain(at_office) == lineage.uuid_chain(at_home)
    assert all(i in at_office.read_text() for i in new)
