"""Pairing by one-time code: SPAKE2, key confirmation, then boxed identities (no I/O)."""

from __future__ import annotations

import base64
import binascii
import difflib
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal

from nacl.exceptions import CryptoError
from nacl.secret import SecretBox

from commuter.errors import PairingFailed
from commuter.peer.identity import Identity, verify_signature

PROTOCOL = b"commuter-pair-v1"
CODE_WORDS = 3  # 3 words of 8 bits each: 24 secret bits
NAMEPLATE_MAX = 99
MAX_NAME = 64
MAX_ADDRESSES = 16
WRONG_CODE = "pairing failed: wrong code"
ITSELF = (
    "pairing failed: the other side is this machine itself (it has this machine's key); run "
    "`commuter pair CODE` on the other machine"
)

Role = Literal["inviter", "joiner"]


@cache
def wordlist() -> tuple[str, ...]:
    """The 256 code words."""
    text = resources.files("commuter.peer").joinpath("wordlist.txt").read_text(encoding="utf-8")
    words = tuple(w.strip() for w in text.split() if w.strip())
    if len(words) != 256 or len(set(words)) != 256:
        raise RuntimeError("commuter/peer/wordlist.txt must hold 256 distinct words")
    return words


@dataclass(frozen=True, slots=True)
class Code:
    """A pairing code: a public nameplate number (to find the invite) and secret words."""

    nameplate: int
    words: tuple[str, ...]

    def __str__(self) -> str:
        return "-".join((str(self.nameplate), *self.words))

    @property
    def password(self) -> bytes:
        return str(self).encode()


def make_code(randbelow: Callable[[int], int] = secrets.randbelow) -> Code:
    """A fresh random code such as 7-orbit-lemon-piano."""
    words = wordlist()
    nameplate = 1 + randbelow(NAMEPLATE_MAX)
    return Code(nameplate, tuple(words[randbelow(256)] for _ in range(CODE_WORDS)))


EXAMPLE = "7-orbit-lemon-piano"
_CODE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789 -")


def parse_code(text: str) -> Code:
    """Parse a typed code (case, spaces and dashes forgiven); PairingFailed saying what is
    wrong with it if malformed (checked before anything goes on the network)."""
    parts = [p for p in text.strip().lower().replace(" ", "-").split("-") if p]
    problem = code_problem(text, parts)
    if problem is not None:
        raise PairingFailed(f"{text!r} is not a pairing code: {problem}")
    return Code(int(parts[0]), tuple(parts[1:]))


def code_problem(text: str, parts: list[str]) -> str | None:
    """What is wrong with a typed code split into `parts`, as the end of one sentence."""
    shape = f"a number and {CODE_WORDS} words joined by -, like {EXAMPLE}"
    if not parts:
        return f"it is empty (expected {shape})"
    odd = next((c for c in text.strip().lower() if c not in _CODE_CHARS), None)
    if odd is not None:
        return f"it holds {odd!r}, which no code has ({shape})"
    words = wordlist()
    number, rest = parts[0], parts[1:]
    if not number.isdigit():
        if number[:1].isdigit():
            return f"a - goes after the number ({shape})"
        if any(p.isdigit() for p in rest):
            return f"the number goes first ({shape})"
        if all(p in words for p in parts):
            return f"the number in front is missing ({shape}; `commuter pair` printed it)"
        return f"it must start with the number `commuter pair` printed ({shape})"
    if not 1 <= int(number) <= NAMEPLATE_MAX:
        return f"its number is 1 to {NAMEPLATE_MAX}, not {number}"
    if len(rest) != CODE_WORDS:
        few = "only " if len(rest) < CODE_WORDS else ""
        counted = f"{len(rest)} word{'s' if len(rest) != 1 else ''}"
        return f"it has {few}{counted} after the number, not {CODE_WORDS} ({shape})"
    wrong = next((w for w in rest if w not in words), None)
    if wrong is not None:
        near = difflib.get_close_matches(wrong, words, n=1, cutoff=0.6)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        return f"{wrong!r} is not one of its words{hint}"
    return None


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """What each side tells the other once the key is confirmed."""

    name: str
    public_key: bytes
    addresses: tuple[str, ...] = ()
    port: int | None = None


class PairingSession:
    """One side of one pairing attempt: SPAKE2, transcript, confirmation and the info box."""

    def __init__(
        self, code: Code, role: Role, entropy: Callable[[int], bytes] = os.urandom
    ) -> None:
        from spake2 import SPAKE2_Symmetric  # type: ignore[import-untyped,unused-ignore]

        self.code = code
        self.role: Role = role
        self._spake = SPAKE2_Symmetric(code.password, idSymmetric=PROTOCOL, entropy_f=entropy)
        self._mine: bytes = self._spake.start()
        self._key: bytes | None = None
        self._transcript = b""

    @property
    def message(self) -> bytes:
        """My SPAKE2 message."""
        return self._mine

    @property
    def other_role(self) -> Role:
        return "joiner" if self.role == "inviter" else "inviter"

    def finish(self, theirs: bytes) -> None:
        """Complete SPAKE2 with the other side's message (a wrong code still yields a key)."""
        try:
            self._key = bytes(self._spake.finish(theirs))
        except Exception as exc:  # spake2 raises bare AssertionError/ValueError on bad input
            raise PairingFailed("pairing failed: malformed key-exchange message") from exc
        joiner, inviter = (self._mine, theirs) if self.role == "joiner" else (theirs, self._mine)
        self._transcript = hashlib.sha256(
            b"\n".join((PROTOCOL, str(self.code.nameplate).encode(), _b64(joiner), _b64(inviter)))
        ).digest()

    def _derive(self, label: bytes) -> bytes:
        if self._key is None:
            raise PairingFailed("pairing failed: key exchange not finished")
        return hmac.new(self._key, PROTOCOL + b"|" + label, hashlib.sha256).digest()

    def confirmation(self) -> bytes:
        """My key-confirmation MAC over the transcript."""
        return self._mac(self.role)

    def _mac(self, role: Role) -> bytes:
        key = self._derive(b"confirm")
        return hmac.new(key, role.encode() + b"|" + self._transcript, hashlib.sha256).digest()

    def check_confirmation(self, mac: bytes) -> None:
        """PairingFailed("wrong code") unless the other side derived the same key."""
        if not hmac.compare_digest(mac, self._mac(self.other_role)):
            raise PairingFailed(WRONG_CODE)

    def seal_info(self, identity: Identity, info: PeerInfo) -> bytes:
        """My name, key and addresses, signed over the transcript, in a box under the PAKE key."""
        proof = identity.sign(self._proof_message(self.role, identity.public_key))
        body = {
            "name": info.name,
            "key": _b64(info.public_key).decode(),
            "addresses": list(info.addresses),
            "port": info.port,
            "proof": _b64(proof).decode(),
        }
        box = SecretBox(self._derive(b"box-" + self.role.encode()))
        return bytes(box.encrypt(json.dumps(body).encode()))

    def open_info(self, blob: bytes) -> PeerInfo:
        """The other side's info; PairingFailed if it was not made by the confirmed party."""
        box = SecretBox(self._derive(b"box-" + self.other_role.encode()))
        try:
            data = json.loads(box.decrypt(blob))
            key = base64.b64decode(data["key"], validate=True)
            proof = base64.b64decode(data["proof"], validate=True)
            name = _clean_name(data["name"])
            addresses = tuple(str(a) for a in data.get("addresses") or ())[:MAX_ADDRESSES]
            port = data.get("port")
            if len(key) != 32 or (
                port is not None and not (isinstance(port, int) and 0 < port < 65536)
            ):
                raise ValueError("bad key or port")
        except (CryptoError, ValueError, KeyError, TypeError) as exc:
            raise PairingFailed("pairing failed: the other side's reply is malformed") from exc
        try:
            verify_signature(key, self._proof_message(self.other_role, key), proof)
        except Exception as exc:
            raise PairingFailed("pairing failed: the other side's key proof is invalid") from exc
        return PeerInfo(name, key, addresses, port)

    def _proof_message(self, role: Role, key: bytes) -> bytes:
        return b"|".join((PROTOCOL, b"proof", role.encode(), key, self._transcript))


def refuse_itself(mine: bytes, info: PeerInfo) -> None:
    """PairingFailed(ITSELF) if the other side's key is this machine's own (a code joined
    from the machine that made it): no machine trusts itself."""
    if hmac.compare_digest(bytes(mine), info.public_key):
        raise PairingFailed(ITSELF)


def _clean_name(value: Any) -> str:
    name = str(value).strip()
    if not name or len(name) > MAX_NAME or any(not c.isprintable() for c in name):
        raise ValueError("bad name")
    return name


# Wire messages (JSON bodies of the pairing listener); decoders raise PairingFailed.


def hello_request(code: Code, session: PairingSession) -> dict[str, Any]:
    """Joiner -> inviter: the nameplate and the joiner's SPAKE2 message."""
    return {"v": 1, "nameplate": code.nameplate, "spake": _b64(session.message).decode()}


def parse_hello_request(data: Any) -> tuple[int, bytes]:
    """(nameplate, spake message) of a hello."""
    try:
        if data.get("v") != 1:
            raise ValueError("unsupported pairing protocol version")
        nameplate = data["nameplate"]
        if not isinstance(nameplate, int):
            raise TypeError("nameplate")
        return nameplate, _unb64(data["spake"])
    except (AttributeError, ValueError, KeyError, TypeError) as exc:
        raise PairingFailed("pairing failed: malformed hello") from exc


def hello_reply(session: PairingSession) -> dict[str, Any]:
    """Inviter -> joiner: the inviter's SPAKE2 message."""
    return {"v": 1, "spake": _b64(session.message).decode()}


def confirm_message(session: PairingSession, identity: Identity, info: PeerInfo) -> dict[str, Any]:
    """Either side: key confirmation plus the boxed info."""
    return {
        "confirm": _b64(session.confirmation()).decode(),
        "info": _b64(session.seal_info(identity, info)).decode(),
    }


def parse_spake(data: Any) -> bytes:
    """The SPAKE2 message of a hello reply."""
    try:
        return _unb64(data["spake"])
    except (TypeError, KeyError, ValueError) as exc:
        raise PairingFailed("pairing failed: malformed hello reply") from exc


def parse_confirm_message(data: Any) -> tuple[bytes, bytes]:
    """(confirmation MAC, boxed info)."""
    try:
        return _unb64(data["confirm"]), _unb64(data["info"])
    except (TypeError, KeyError, ValueError) as exc:
        raise PairingFailed("pairing failed: malformed confirmation") from exc


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def _unb64(value: Any) -> bytes:
    if not isinstance(value, str) or len(value) > 65536:
        raise ValueError("not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise ValueError("bad base64") from exc
