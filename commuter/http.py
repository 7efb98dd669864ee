"""The HTTP boundary of the peer daemon, the relay and their two clients, in one place.

Both servers answer a CommuterError as `{"error": code, "message": text}` with its class's
HTTP status (`error_middleware`); both clients read such an answer back into the class that
`errors.ERRORS_BY_CODE` names (`read_error`), so an error keeps its type across the network.
Whatever the other side sends is read capped (`read_capped`), parsed without crashing on
nesting (`loads`) and, if shown, cut and made printable (`shown`). Connections and reads are
bounded the same way everywhere (`client_timeout`, `watched_body`).

aiohttp is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from commuter.errors import ERRORS_BY_CODE, CommuterError

if TYPE_CHECKING:
    import asyncio

    import aiohttp
    from aiohttp import web
    from aiohttp.typedefs import Handler, Middleware

    from commuter.settings import Settings

Log = Callable[[str], None]

MAX_ERROR_BODY = 64 * 1024  # an error answer is read up to this; longer is "answered HTTP n"
MAX_MESSAGE = 300  # characters of a remote error message that are shown
OUT_OF_FDS = (errno.EMFILE, errno.ENFILE)


# Server side


def error_body(exc: CommuterError) -> dict[str, str]:
    """What a server sends for `exc` (with `exc.http_status`)."""
    return {"error": exc.code, "message": str(exc)}


def error_middleware(
    log: Callable[[web.Request], Log], *, close_after: tuple[type[CommuterError], ...] = ()
) -> Middleware:
    """An aiohttp middleware: a CommuterError becomes its JSON answer and status (the
    connection closed after one of `close_after`: the rest of its body is not waited for);
    any HTTP error (404, 405, 413) a JSON one too; a client gone mid-body or running out of
    file descriptors is one line to `log(request)` and an answer, never a traceback."""
    from aiohttp import web

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except CommuterError as exc:
            resp = web.json_response(error_body(exc), status=exc.http_status)
            if isinstance(exc, close_after):
                resp.force_close()
            return resp
        except ConnectionResetError:
            log(request)(f"{request.method} {request.path}: connection lost mid-request")
            return web.json_response({"error": "http", "message": "connection lost"}, status=400)
        except OSError as exc:
            if exc.errno not in OUT_OF_FDS:
                raise
            log(request)(f"cannot answer {request.method} {request.path}: {exc.strerror}")
            return web.json_response(
                {"error": "busy", "message": "this machine is out of file descriptors; try again"},
                status=503,
            )
        except web.HTTPException as exc:
            if exc.status >= 400:
                return web.json_response(
                    {"error": "http", "message": exc.reason}, status=exc.status
                )
            raise

    return errors


# Client side


def client_timeout(
    settings: Settings, *, read: float | None = None, total: float | None = None
) -> aiohttp.ClientTimeout:
    """settings.connect_timeout to connect; `read` (default settings.stall_timeout) for every
    silence of an answer; `total` for the whole request (None: unbounded)."""
    import aiohttp

    return aiohttp.ClientTimeout(
        total=total,
        sock_connect=settings.connect_timeout,
        sock_read=settings.stall_timeout if read is None else read,
    )


async def watched_body(
    chunks: AsyncIterator[bytes], deadline: asyncio.Timeout, settings: Settings
) -> AsyncIterator[bytes]:
    """`chunks`, pushing `deadline` back by settings.stall_timeout each time the sender asks
    for the next one (the previous one was written); off once all is written. aiohttp's
    sock_read starts only once the body is sent: this bounds a receiver that stops reading."""
    import asyncio

    loop = asyncio.get_running_loop()
    # The sender pulls this from aiohttp's writer task: the request may have ended already.
    async for chunk in chunks:
        with contextlib.suppress(RuntimeError):
            deadline.reschedule(loop.time() + settings.stall_timeout)
        yield chunk
    with contextlib.suppress(RuntimeError):
        deadline.reschedule(None)


async def read_capped(resp: Any, limit: int) -> bytes | None:
    """A response's whole body, or None if it is (or announces itself) longer than `limit`
    (not read further)."""
    if resp.content_length is not None and resp.content_length > limit:
        return None
    chunks, size = [], 0
    async for chunk in resp.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def loads(data: bytes) -> Any:
    """JSON from the other side; ValueError for anything that is not JSON, nested too deep
    included (json raises RecursionError for that)."""
    try:
        return json.loads(data)
    except RecursionError as exc:
        raise ValueError("JSON nested too deep") from exc


def error_from(
    status: int,
    body: bytes | None,
    *,
    where: str,
    fallback: type[CommuterError],
    prefix: str = "",
) -> CommuterError:
    """The error a `{"error": code, "message": text}` answer names, as the class registered
    for `code` (`fallback` for a code unknown here), its message `shown` after `prefix`;
    `fallback("<where> answered HTTP <status>")` for any other body (None: too long)."""
    try:
        data = loads(body) if body is not None else None
        code, message = data["error"], data["message"]  # type: ignore[index]
        if not isinstance(code, str) or not isinstance(message, str):
            raise TypeError(code)
    except (ValueError, KeyError, TypeError):
        return fallback(f"{where} answered HTTP {status}")
    return ERRORS_BY_CODE.get(code, fallback)(prefix + shown(message))


async def read_error(
    resp: Any, *, where: str, fallback: type[CommuterError], prefix: str = ""
) -> CommuterError:
    """`error_from` of a failed response, its body read up to MAX_ERROR_BODY."""
    body = await read_capped(resp, MAX_ERROR_BODY)
    return error_from(resp.status, body, where=where, fallback=fallback, prefix=prefix)


def shown(text: str, limit: int = MAX_MESSAGE) -> str:
    """Text from the other side made safe to print in one line: every character that is not
    printable (controls, newlines, bidi overrides, lone surrogates) as `?`, at most `limit`
    of them, `…` if cut."""
    clean = "".join(c if c.isprintable() else "?" for c in text[:limit])
    return clean + ("…" if len(text) > limit else "")


_ERRNO_REASONS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.ECONNABORTED: "connection aborted",
    errno.EPIPE: "connection closed",
    errno.EHOSTUNREACH: "no route to host",
    errno.ENETUNREACH: "network is unreachable",
    errno.EHOSTDOWN: "host is down",
    errno.ETIMEDOUT: "timed out",
    errno.EADDRNOTAVAIL: "address not available",
}


def connect_reason(exc: BaseException) -> str:
    """Why a connection failed, in a few words ("connection refused"). aiohttp's own text
    repeats the host, the port and the socket call: `Cannot connect to host h:p ssl:default
    [Connect call failed ('h', p)]`; callers name the address once themselves."""
    import socket

    import aiohttp

    cause = exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else exc
    if isinstance(cause, socket.gaierror):
        return "cannot resolve the host name"
    if isinstance(exc, TimeoutError):  # aiohttp's ConnectionTimeoutError is one
        return "timed out"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the connection closed before an answer"
    number = getattr(cause, "errno", None)
    if not isinstance(number, int):
        # "Multiple exceptions: [Errno 111] ..., [Errno 111] ..." (one per resolved address)
        found = {int(n) for n in re.findall(r"\[Errno (\d+)\]", str(cause))}
        number = found.pop() if len(found) == 1 else None
    if number is not None and number > 0:
        reason = _ERRNO_REASONS.get(number) or os.strerror(number)
        return reason[:1].lower() + reason[1:]
    return str(cause) or type(cause).__name__
