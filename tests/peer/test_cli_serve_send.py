"""serve, send and pull --from through the CLI in subprocesses: what each side prints."""

from __future__ import annotations

from pathlib import Path

import pytest
from claude_home import PLAIN, install
from peerhelp import ALICE, BOB, ServeProcess, give_identity, trust
from test_cli_peer import env_for, one_error_line, run, settings_of

from commuter import config


@pytest.fixture
def machines(tmp_path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(office, home) as subprocess environments: paired, home has the sessions."""
    office = env_for(tmp_path / "office")
    home = env_for(install(tmp_path / "home"))
    for env, me, name in ((office, ALICE, "office"), (home, BOB, "home")):
        give_identity(settings_of(env), me)
        config.set_value(settings_of(env), "name", (name,))
    trust(settings_of(office), "home", BOB)
    trust(settings_of(home), "office", ALICE)
    return office, home


def test_a_peer_that_unpaired_this_machine_is_explained_from_this_side(machines, tmp_path):
    office, home = machines
    server = ServeProcess(office)
    try:
        assert run(office, "unpair", "home").returncode == 0
        for result in (
            run(home, "send", "office", PLAIN, "--address", server.address),
            run(home, "pull", "--from", "office", "--address", server.address, cwd=tmp_path),
        ):
            one_error_line(
                result,
                "office does not accept this machine (it is not paired with "
                "it any more); run `commuter pair` on both machines",
            )
            assert "sender" not in result.stderr and "pair` first" not in result.stderr
    finally:
        server.kill()
