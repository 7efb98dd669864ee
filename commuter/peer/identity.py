"""This machine's long-term NaCl identity (Ed25519, X25519 derived) and typeable device ids."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
from dataclasses import dataclass

from nacl.exceptions import BadSignatureError
from nacl.public import PrivateKey, PublicKey
from nacl.signing import SigningKey, VerifyKey

from commuter.errors import BadSignature, ConfigError
from commuter.fsutil import atomic_write_text
from commuter.settings import KEY_FILE as KEY_FILE  # its home; re-exported for the callers here
from commuter.settings import Settings

_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_GROUPS, _GROUP_LEN = 4, 5


@dataclass(frozen=True, slots=True)
class Identity:
    """A signing key pair; the public half names the machine to its peers."""

    signing_key: SigningKey

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        """Deterministic identity from a 32-byte seed (tests)."""
        return cls(SigningKey(seed))

    @classmethod
    def generate(cls) -> Identity:
        return cls(SigningKey.generate())

    @classmethod
    def load_or_create(cls, settings: Settings) -> Identity:
        """Read the key from the config dir, creating it (mode 0600) on first use."""
        path = settings.config_dir / KEY_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            seed = base64.b64decode(data["seed"], validate=True)
            if len(seed) != 32:
                raise ValueError("bad seed length")
            return cls.from_seed(seed)
        except FileNotFoundError:
            pass
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"identity key {path} is damaged ({exc})") from exc
        identity = cls.generate()
        settings.config_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        seed_b64 = base64.b64encode(bytes(identity.signing_key)).decode()
        atomic_write_text(path, json.dumps({"version": 1, "seed": seed_b64}) + "\n", mode=0o600)
        return identity

    @property
    def public_key(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    @property
    def device_id(self) -> str:
        return device_id_for(self.public_key)

    @property
    def fingerprint(self) -> str:
        return fingerprint_for(self.public_key)

    @property
    def box_private_key(self) -> PrivateKey:
        return self.signing_key.to_curve25519_private_key()

    def sign(self, data: bytes) -> bytes:
        """A 64-byte detached Ed25519 signature."""
        return self.signing_key.sign(data).signature


def box_public_key(public_key: bytes) -> PublicKey:
    """The X25519 key derived from a peer's Ed25519 public key."""
    return VerifyKey(public_key).to_curve25519_public_key()


def verify_signature(public_key: bytes, data: bytes, signature: bytes) -> None:
    """Raise BadSignature unless `signature` is `public_key`'s signature of `data`."""
    try:
        VerifyKey(public_key).verify(data, signature)
    except (BadSignatureError, ValueError, TypeError) as exc:
        raise BadSignature("bad signature") from exc


def fingerprint_for(public_key: bytes) -> str:
    """SHA-256 of the public key as colon-separated hex groups."""
    digest = hashlib.sha256(public_key).hexdigest()
    return ":".join(digest[i : i + 4] for i in range(0, 32, 4))


@functools.lru_cache(maxsize=1024)  # a relay works it out for every signed request
def device_id_for(public_key: bytes) -> str:
    """Four groups of five base32 characters plus a check character each (Syncthing style)."""
    body = base64.b32encode(hashlib.sha256(public_key).digest()).decode()[: _GROUPS * _GROUP_LEN]
    groups = [body[i : i + _GROUP_LEN] for i in range(0, len(body), _GROUP_LEN)]
    return "-".join(g + _luhn32(g) for g in groups)


_DEVICE_ID_RE = re.compile(r"[A-Z2-7]{6}(?:-[A-Z2-7]{6}){3}")


def is_device_id(text: object) -> bool:
    """True for a device id in its canonical form (what device_id_for writes). Remote data
    names files and URLs with device ids: nothing else may pass for one."""
    return isinstance(text, str) and _DEVICE_ID_RE.fullmatch(text) is not None


def normalize_device_id(text: str) -> str:
    """Canonical form of a typed device id; ValueError when a check character is wrong."""
    cleaned = "".join(c for c in text.upper() if c not in " -\t")
    cleaned = cleaned.translate(str.maketrans("018", "OIB"))
    size = _GROUP_LEN + 1
    if len(cleaned) != _GROUPS * size or any(c not in _B32 for c in cleaned):
        raise ValueError(f"{text!r} is not a device id")
    groups = [cleaned[i : i + size] for i in range(0, len(cleaned), size)]
    for group in groups:
        if _luhn32(group[:-1]) != group[-1]:
            raise ValueError(f"{text!r} is not a valid device id (check character mismatch)")
    return "-".join(groups)


def _luhn32(text: str) -> str:
    factor, total, n = 1, 0, len(_B32)
    for ch in text:
        addend = factor * _B32.index(ch)
        factor = 1 if factor == 2 else 2
        total += addend // n + addend % n
    return _B32[(n - total % n) % n]
