"""A refusal of a delta, sent back to its sender: "send this session whole next time".

A receiver that cannot apply a delta (its base is not what this machine holds) asks the
sender's daemon for the whole session over the LAN. When that daemon does not answer (the
sender is reachable only through the relay or the folder) the receiver keeps the delta where
it is and sends the sender this small item, sealed to it alone, the way the delta came. The
sender's receive path (pipeline._pull_one) recognises it once the seal is opened, forgets what
it believed the receiver held (acks.forget_ack) and its daemon sends the session whole.

Plain text inside the seal: the magic line, then one JSON object (agent, session id), at most
`MAX_SIZE` bytes; each field checked. Anything else is not a refusal.
"""

from __future__ import annotations

import json
from pathlib import Path

MAGIC = b"COMMUTER-NACK 1\n"
MAX_SIZE = 4096


def write(path: Path, agent: str, session_id: str) -> None:
    """The plain refusal of `session_id` of `agent`, to be sealed to its sender."""
    body = json.dumps({"agent": agent, "session_id": session_id, "want": "whole"})
    path.write_bytes(MAGIC + body.encode())


def read(path: Path) -> tuple[str, str] | None:
    """(agent, session id) if the opened file at `path` is a refusal, else None."""
    with path.open("rb") as fh:
        return parse(fh.read(MAX_SIZE + 1))


def parse(data: bytes) -> tuple[str, str] | None:
    """(agent, session id) if `data` is a whole refusal, else None."""
    from commuter.bundle.model import is_session_token

    if not data.startswith(MAGIC) or len(data) > MAX_SIZE:
        return None
    try:
        obj = json.loads(data[len(MAGIC) :])
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    agent, session_id = obj.get("agent"), obj.get("session_id")
    if not isinstance(agent, str) or not _agent_name(agent) or not is_session_token(session_id):
        return None
    assert isinstance(session_id, str)
    return agent, session_id


def _agent_name(text: str) -> bool:
    return (
        0 < len(text) <= 32
        and text[0].isascii()
        and text[0].islower()
        and all(c.isascii() and (c.islower() or c.isdigit() or c in "_-") for c in text)
    )
