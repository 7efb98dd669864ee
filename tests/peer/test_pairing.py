"""Pairing messages: codes, SPAKE2 with key confirmation, boxed identities; no I/O."""

from __future__ import annotations

import math

import pytest

from commuter.errors import PairingFailed
from commuter.peer import pairing
from commuter.peer.identity import Identity

ALICE = Identity.from_seed(b"a" * 32)
BOB = Identity.from_seed(b"b" * 32)


def test_wordlist_has_256_short_distinct_words():
    words = pairing.wordlist()
    assert len(set(words)) == 256
    assert all(w.isalpha() and w.islower() and len(w) <= 7 for w in words)


def test_code_has_at_least_24_secret_bits_and_parses_back():
    code = pairing.make_code()
    assert pairing.CODE_WORDS * math.log2(len(pairing.wordlist())) >= 24
    assert pairing.parse_code(str(code)) == code
    assert pairing.parse_code("  " + str(code).upper().replace("-", " ") + " ") == code


@pytest.mark.parametrize(
    "text", ["", "orbit-lemon-piano", "7-orbit-lemon", "7-orbit-lemon-notaword", "0-a-b-c", "x"]
)
def test_malformed_codes_are_refused(text):
    with pytest.raises(PairingFailed, match="not a pairing code"):
        pairing.parse_code(text)


def _run(code_a: pairing.Code, code_b: pairing.Code):
    inviter = pairing.PairingSession(code_a, "inviter")
    joiner = pairing.PairingSession(code_b, "joiner")
    inviter.finish(joiner.message)
    joiner.finish(inviter.message)
    return inviter, joiner


def test_same_code_confirms_both_ways_and_exchanges_identities():
    code = pairing.make_code()
    inviter, joiner = _run(code, code)
    inviter.check_confirmation(joiner.confirmation())
    joiner.check_confirmation(inviter.confirmation())
    blob = joiner.seal_info(BOB, pairing.PeerInfo("home", BOB.public_key, ("10.0.0.2",), 47474))
    info = inviter.open_info(blob)
    assert info == pairing.PeerInfo("home", BOB.public_key, ("10.0.0.2",), 47474)
    back = joiner.open_info(inviter.seal_info(ALICE, pairing.PeerInfo("office", ALICE.public_key)))
    assert back.public_key == ALICE.public_key and back.name == "office"


def test_wrong_code_fails_confirmation_on_both_sides():
    code = pairing.parse_code("7-orbit-lemon-piano")
    inviter, joiner = _run(code, pairing.parse_code("7-orbit-lemon-pizza"))
    with pytest.raises(PairingFailed, match="wrong code"):
        inviter.check_confirmation(joiner.confirmation())
    with pytest.raises(PairingFailed, match="wrong code"):
        joiner.check_confirmation(inviter.confirmation())
    blob = joiner.seal_info(BOB, pairing.PeerInfo("home", BOB.public_key))
    with pytest.raises(PairingFailed):
        inviter.open_info(blob)


def test_a_reflected_confirmation_is_refused():
    code = pairing.make_code()
    inviter, _joiner = _run(code, code)
    with pytest.raises(PairingFailed, match="wrong code"):
        inviter.check_confirmation(inviter.confirmation())


def test_info_claiming_someone_elses_key_is_refused():
    code = pairing.make_code()
    inviter, joiner = _run(code, code)
    # Bob boxes Alice's key as his: he cannot sign the transcript with it.
    blob = joiner.seal_info(BOB, pairing.PeerInfo("home", ALICE.public_key))
    with pytest.raises(PairingFailed, match="proof"):
        inviter.open_info(blob)


def test_tampered_box_is_refused():
    code = pairing.make_code()
    inviter, joiner = _run(code, code)
    blob = bytearray(joiner.seal_info(BOB, pairing.PeerInfo("home", BOB.public_key)))
    blob[-1] ^= 1
    with pytest.raises(PairingFailed, match="malformed"):
        inviter.open_info(bytes(blob))


def test_garbage_key_exchange_message_is_a_pairing_failure():
    session = pairing.PairingSession(pairing.make_code(), "inviter")
    with pytest.raises(PairingFailed, match="malformed"):
        session.finish(b"garbage")


@pytest.mark.parametrize(
    "data",
    [None, [], {}, {"v": 2}, {"v": 1, "nameplate": "7"}, {"v": 1, "nameplate": 7, "spake": "%%%"}],
)
def test_malformed_hello_is_refused(data):
    with pytest.raises(PairingFailed, match="malformed"):
        pairing.parse_hello_request(data)
