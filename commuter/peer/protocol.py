"""What the peer daemon and its client agree on: the API's path and version, the default port,
and the one shape a remote token (a session id in a URL or a listing) may have."""

from __future__ import annotations

import re

API = "/v1"
PROTOCOL_VERSION = 1
DEFAULT_PORT = 47474

# Session ids from a peer's listing go into a URL and are shown to the user: a plain token
# (the backends' ids are UUIDs), never a path.
_SAFE_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def safe_token(text: object) -> str | None:
    """`text` if it is a plain token (letters, digits, `.`, `_`, `-`, at most 128, no `..`),
    else None."""
    if isinstance(text, str) and _SAFE_TOKEN.fullmatch(text) and ".." not in text:
        return text
    return None
