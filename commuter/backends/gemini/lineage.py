"""Chat continuity by message ids, and the convergence rule for a divergence: which branch
keeps the session id and what the other one's fork is called, decided alike on both machines
(the Gemini counterpart of the Claude backend's lineage)."""

from __future__ import annotations

import hashlib
import math
import uuid
from dataclasses import dataclass
from enum import Enum

from commuter.backends.gemini.chat import Chat, parse_time


class Relation(Enum):
    IDENTICAL = "identical"
    CONTINUED = "continued"  # the local chat is a prefix of the incoming one
    LOCAL_NEWER = "local-newer"
    DIVERGENT = "divergent"


def relation(local: list[str], incoming: list[str]) -> Relation:
    """How two message-id lists of one chat relate. A resume checkpoints the whole list
    again (`$set.messages`) and may add records between the old ones (a tool result's own
    `user` record), so "continued" means every local id is kept, in order."""
    if local == incoming:
        return Relation.IDENTICAL
    if _subsequence(local, incoming):
        return Relation.CONTINUED
    if _subsequence(incoming, local):
        return Relation.LOCAL_NEWER
    return Relation.DIVERGENT


def _subsequence(short: list[str], long: list[str]) -> bool:
    rest = iter(long)
    return all(any(x == y for y in rest) for x in short)


@dataclass(frozen=True, slots=True)
class Divergence:
    """The first message of each branch that the other one lacks."""

    local: str
    incoming: str


def divergence(local: list[str], incoming: list[str]) -> Divergence | None:
    """Where two divergent id lists part (by membership, not position: a resume may put a
    record between old ones); None when either side has no message of its own (the same
    messages in another order)."""
    theirs, mine = set(incoming), set(local)
    own = next((m for m in local if m not in theirs), None)
    other = next((m for m in incoming if m not in mine), None)
    if own is None or other is None:
        return None
    return Divergence(own, other)


def order_entry(ids: list[str]) -> str:
    """A stand-in first entry for a branch without messages of its own (a reordering)."""
    return "order-" + hashlib.sha256("\n".join(ids).encode()).hexdigest()[:32]


def message_time(chat: Chat, mid: str) -> float:
    """The `timestamp` of message `mid` as POSIX time; +inf without one (a branch whose
    first message has no time never wins over one that has)."""
    stamp = chat.messages.get(mid, {}).get("timestamp")
    moment = parse_time(stamp) if isinstance(stamp, str) else None
    return moment.timestamp() if moment is not None else math.inf


def incoming_keeps_id(local: Chat, incoming: Chat, div: Divergence) -> bool:
    """The convergence rule, the same on both machines: of the two branches, the one whose
    first divergent message is earlier keeps the session id (no time loses; equal times:
    the smaller message id). The other becomes the fork `fork_id(sid, its first message)`."""
    mine = (message_time(local, div.local), div.local.lower())
    theirs = (message_time(incoming, div.incoming), div.incoming.lower())
    return theirs < mine


def fork_id(sid: str, first: str, attempt: int = 0) -> str:
    """The id of the fork holding a branch of `sid` that starts at message `first`:
    uuid5(namespace = the session id, name = that message id), so both machines name it
    alike; `attempt` > 0 gives the next candidate when its 8-character short id is taken."""
    try:
        namespace = uuid.UUID(sid)
    except ValueError:
        namespace = uuid.NAMESPACE_URL
    name = first.lower() if attempt == 0 else f"{first.lower()}#{attempt}"
    return str(uuid.uuid5(namespace, name))
