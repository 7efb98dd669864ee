"""Identity keys, device ids and fingerprints."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from commuter.errors import BadSignature, ConfigError
from commuter.peer.identity import Identity, normalize_device_id, verify_signature
from commuter.settings import Settings


def _settings(tmp_path: Path) -> Settings:
    return Settings.from_env({"HOME": str(tmp_path / "home")})


def test_identity_is_created_once_with_private_mode(tmp_path):
    settings = _settings(tmp_path)
    first = Identity.load_or_create(settings)
    second = Identity.load_or_create(settings)
    key_file = settings.config_dir / "identity.key"
    assert first.public_key == second.public_key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_damaged_key_file_is_a_clear_error(tmp_path):
    settings = _settings(tmp_path)
    settings.config_dir.mkdir(parents=True)
    (settings.config_dir / "identity.key").write_text("{not json")
    with pytest.raises(ConfigError, match="damaged"):
        Identity.load_or_create(settings)


def test_device_id_is_grouped_and_round_trips_typing_variants():
    device_id = Identity.from_seed(b"a" * 32).device_id
    groups = device_id.split("-")
    assert [len(g) for g in groups] == [6, 6, 6, 6]
    typed = device_id.lower().replace("-", " ")
    assert normalize_device_id(typed) == device_id


def test_device_id_typo_is_caught():
    device_id = Identity.from_seed(b"a" * 32).device_id
    position = 1
    wrong = "B" if device_id[position] != "B" else "C"
    typo = device_id[:position] + wrong + device_id[position + 1 :]
    with pytest.raises(ValueError, match="check character"):
        normalize_device_id(typo)


def test_distinct_keys_have_distinct_ids_and_fingerprints():
    a, b = Identity.from_seed(b"a" * 32), Identity.from_seed(b"b" * 32)
    assert a.device_id != b.device_id
    assert a.fingerprint != b.fingerprint


def test_signature_verifies_and_rejects_other_data():
    a = Identity.from_seed(b"a" * 32)
    sig = a.sign(b"hello")
    verify_signature(a.public_key, b"hello", sig)
    with pytest.raises(BadSignature):
        verify_signature(a.public_key, b"hellO", sig)
