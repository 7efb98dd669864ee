"""Real claude over two relays sharing one PostgreSQL: home pushes through relay 1, relay 1
is killed, office pulls through relay 2 and continues the session; the database never holds
a word of the conversation."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .fake_model import FakeModel
from .harness import check, run_claude, session_files
from .test_relay_e2e import _pair, commuter

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "relay"))
from pghelp import SKIP_REASON, PgServer, find_bin_dir
from relayhelp import RelayProcess

pytestmark = pytest.mark.e2e
CODEWORD = "DAMSON-582"
PROMPT = f"Remember {CODEWORD}."


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PgServer]:
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip(SKIP_REASON)
    server = PgServer(bin_dir)
    yield server
    server.stop()


def test_push_via_relay_1_kill_it_pull_via_relay_2_and_continue(
    tmp_path: Path, claude_bin: Path, fake_model: FakeModel, pg_server: PgServer
) -> None:
    home, office = tmp_path / "home", tmp_path / "office"
    proj_home, proj_office = home / "src" / "app", office / "work" / "app"
    for d in (proj_home, proj_office):
        d.mkdir(parents=True)
    check(run_claude(claude_bin, home, proj_home, ["-p", PROMPT], fake_model.base_url))
    [transcript] = session_files(home, proj_home)
    sid = transcript.stem
    assert CODEWORD.encode() in transcript.read_bytes()

    _pair(home, "home", office, "office")
    commuter(office, office, "config", "set", "path-map", str(home / "src"), str(office / "work"))
    url = pg_server.create_database()
    one = RelayProcess(None, tmp_path / "relay1-home", "--store", url)
    two = RelayProcess(None, tmp_path / "relay2-home", "--store", url)
    try:
        commuter(home, home, "config", "set", "relay", one.url)
        commuter(office, office, "config", "set", "relay", two.url)
        pushed = commuter(home, proj_home, "push", "--to", "office", "--via", "relay")
        assert pushed.stdout.strip() == f"pushed {sid[:7]} to office via relay"
        one.kill()
        dump = pg_server.dump(url)
        assert b"COPY public.relay_chunks" in dump
        for word in (CODEWORD, PROMPT, str(proj_home), sid):
            assert word.encode() not in dump, word
        pulled = commuter(office, office, "pull")
        assert f"claude --resume {sid}" in pulled.stdout and "via relay" in pulled.stdout
        after = pg_server.dump(url)
        assert CODEWORD.encode() not in after
        assert pg_server.psql(url.rsplit("/", 1)[1], "SELECT count(*) FROM relay_chunks") == "0\n"
    finally:
        for relay in (one, two):
            if relay.proc.poll() is None:
                relay.kill()
        pg_server.drop_database(url)
    [transcript_office] = session_files(office, proj_office)
    assert transcript_office.stem == sid

    fake_model.clear()
    resumed = check(
        run_claude(
            claude_bin,
            office,
            proj_office,
            ["-p", "--continue", "Which codeword?"],
            fake_model.base_url,
        )
    )
    assert resumed.stdout.strip() == f"Codewords seen: {CODEWORD}."
    assert fake_model.session_ids() == [sid]
