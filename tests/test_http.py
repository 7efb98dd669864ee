"""The HTTP boundary: an error keeps its type across the network; what the other side sends is
read capped, parsed safely and shown printable."""

from __future__ import annotations

import errno

import pytest
from aiohttp import web

from commuter import http
from commuter.errors import (
    ERRORS_BY_CODE,
    CommuterError,
    PeerError,
    QuotaExceeded,
    RelayError,
    UploadStalled,
)


def _app(raised: BaseException, logged: list[str], **kw) -> web.Application:
    async def fail(_request: web.Request) -> web.Response:
        raise raised

    app = web.Application(middlewares=[http.error_middleware(lambda _r: logged.append, **kw)])
    app.router.add_post("/x", fail)
    return app


@pytest.mark.parametrize("cls", [ERRORS_BY_CODE[code] for code in sorted(ERRORS_BY_CODE)])
async def test_every_error_keeps_its_class_and_message_across_the_network(aiohttp_client, cls):
    client = await aiohttp_client(_app(cls("it went wrong"), []))
    resp = await client.post("/x")
    assert resp.status == cls.http_status
    got = await http.read_error(resp, where="bob", fallback=PeerError)
    assert type(got) is cls and str(got) == "it went wrong"


async def test_a_relay_error_is_prefixed_and_an_unknown_code_is_the_fallback(aiohttp_client):
    client = await aiohttp_client(_app(QuotaExceeded("mailbox full"), []))
    got = await http.read_error(
        await client.post("/x"), where="the relay", fallback=RelayError, prefix="relay: "
    )
    assert type(got) is QuotaExceeded and str(got) == "relay: mailbox full"
    unknown = http.error_from(
        418, b'{"error": "teapot", "message": "short and stout"}', where="bob", fallback=RelayError
    )
    assert type(unknown) is RelayError and str(unknown) == "short and stout"


@pytest.mark.parametrize(
    "body",
    [
        None,
        b"",
        b"<html>bad gateway</html>",
        b"[" * 100_000,
        b'{"error": 1, "message": "x"}',
        b'{"error": "relay-full"}',
        b'["error", "message"]',
        b"\xff\xfe",
    ],
)
def test_a_body_that_is_not_an_error_answer_is_the_fallback_naming_the_status(body):
    got = http.error_from(502, body, where="the relay at http://r", fallback=RelayError)
    assert type(got) is RelayError and str(got) == "the relay at http://r answered HTTP 502"


async def test_an_error_body_past_the_cap_is_not_read(aiohttp_client):
    async def huge(_request: web.Request) -> web.Response:
        body = b'{"error": "relay-full", "message": "' + b"x" * http.MAX_ERROR_BODY + b'"}'
        return web.Response(body=body, status=429, content_type="application/json")

    app = web.Application()
    app.router.add_get("/", huge)
    client = await aiohttp_client(app)
    got = await http.read_error(await client.get("/"), where="bob", fallback=PeerError)
    assert type(got) is PeerError and str(got) == "bob answered HTTP 429"


def test_a_remote_message_is_shown_printable_and_cut():
    said = http.error_from(
        400,
        (
            '{"error": "peer", "message": "\\u001b]0;pwned\\u0007\\n\\u202e' + "z" * 999 + '"}'
        ).encode(),
        where="bob",
        fallback=PeerError,
    )
    text = str(said)
    assert text.startswith("?]0;pwned???z") and text.endswith("z…")
    assert len(text) == http.MAX_MESSAGE + 1 and text.isprintable()


def test_json_nested_too_deep_is_a_value_error():
    with pytest.raises(ValueError, match="nested too deep"):
        http.loads(b"[" * 100_000 + b"]" * 100_000)


async def test_http_errors_are_json_too(aiohttp_client):
    client = await aiohttp_client(_app(CommuterError("x"), []))
    resp = await client.get("/nowhere")
    assert resp.status == 404 and (await resp.json())["error"] == "http"
    resp = await client.get("/x")
    assert resp.status == 405 and (await resp.json())["error"] == "http"


async def test_a_stalled_upload_answer_closes_the_connection(aiohttp_client):
    client = await aiohttp_client(_app(UploadStalled("dropped"), [], close_after=(UploadStalled,)))
    resp = await client.post("/x")
    assert resp.status == 408 and resp.headers.get("Connection", "").lower() == "close"
    plain = await aiohttp_client(_app(UploadStalled("dropped"), []))
    resp = await plain.post("/x")
    assert resp.status == 408 and resp.headers.get("Connection", "").lower() != "close"


@pytest.mark.parametrize(
    ("raised", "status", "line"),
    [
        (
            OSError(errno.EMFILE, "Too many open files"),
            503,
            "cannot answer POST /x: Too many open files",
        ),
        (ConnectionResetError(), 400, "POST /x: connection lost mid-request"),
    ],
)
async def test_a_server_side_failure_is_one_log_line_and_an_answer(
    aiohttp_client, raised, status, line
):
    logged: list[str] = []
    client = await aiohttp_client(_app(raised, logged))
    resp = await client.post("/x")
    assert resp.status == status and logged == [line]
    assert set(await resp.json()) == {"error", "message"}
