"""A fake Anthropic Messages API on loopback that records requests and answers with plain text."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

CODEWORD = re.compile(r"\b[A-Z]+-\d+\b")
SYSTEM_REMINDER = re.compile(r"<system-reminder>.*?</system-reminder>", re.DOTALL)
DEFAULT_MODEL = "claude-sonnet-4-5"


def message_texts(body: dict[str, Any]) -> Iterator[str]:
    """Yield every text string inside the user and assistant `messages` of a request body."""
    for message in body.get("messages", []):
        if message.get("role") in ("user", "assistant"):
            yield from _texts(message.get("content"))


def conversation_texts(body: dict[str, Any]) -> Iterator[str]:
    """Yield the message texts with the client's <system-reminder> sections removed."""
    for text in message_texts(body):
        yield SYSTEM_REMINDER.sub("", text)


def session_id(body: dict[str, Any]) -> str | None:
    """Return the Claude Code session id carried in `metadata.user_id`, if any."""
    user_id = body.get("metadata", {}).get("user_id")
    try:
        value = json.loads(user_id)["session_id"] if isinstance(user_id, str) else None
    except (ValueError, TypeError, KeyError):
        return None
    return value if isinstance(value, str) and value else None


def _texts(content: Any) -> Iterator[str]:
    """Yield the text strings of a content value (string or list of blocks)."""
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for block in content:
            if not isinstance(block, dict):
                continue
            if isinstance(block.get("text"), str):
                yield block["text"]
            if "content" in block:
                yield from _texts(block["content"])


def codewords(body: dict[str, Any]) -> list[str]:
    """Return the distinct codewords in a request's messages, in order of appearance."""
    seen: dict[str, None] = {}
    for text in conversation_texts(body):
        for word in CODEWORD.findall(text):
            seen.setdefault(word, None)
    return list(seen)


def reply_text(body: dict[str, Any]) -> str:
    """Return the deterministic answer to a request."""
    words = codewords(body)
    return "Codewords seen: " + ", ".join(words) + "." if words else "OK"


def _usage(body: dict[str, Any], output_tokens: int) -> dict[str, int]:
    """Return a plausible usage object."""
    size = len(json.dumps(body.get("messages", [])))
    return {
        "input_tokens": max(1, size // 4),
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def _sse(event: str, data: dict[str, Any]) -> bytes:
    """Encode one server-sent event."""
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


@dataclass
class FakeModel:
    """Records every request and answers with text; `start()` runs it on a background thread."""

    host: str = "127.0.0.1"
    port: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    calls: list[tuple[str, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)
    _runner: web.AppRunner | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        """Return the URL to put in ANTHROPIC_BASE_URL."""
        return f"http://{self.host}:{self.port}"

    def make_app(self) -> web.Application:
        """Build the aiohttp application."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/v1/messages/count_tokens", self._count_tokens)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/v1/models/{model_id}", self._model)
        app.router.add_route("*", "/{tail:.*}", self._other)
        app.middlewares.append(self._log_calls)
        return app

    @web.middleware
    async def _log_calls(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Record the method and path of every call."""
        with self._lock:
            self.calls.append((request.method, request.path))
        response: web.StreamResponse = await handler(request)
        return response

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        """Answer POST /v1/messages, streaming or not."""
        body = await request.json()
        with self._lock:
            self.requests.append(body)
        text = reply_text(body)
        model = body.get("model", DEFAULT_MODEL)
        msg_id = "msg_" + uuid.uuid4().hex[:24]
        usage = _usage(body, max(1, len(text) // 4))
        if not body.get("stream"):
            return web.json_response(
                {
                    "id": msg_id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [{"type": "text", "text": text}],
                    "stop_reason": "end_turn",
                    "stop_sequence": None,
                    "usage": usage,
                },
                headers={"request-id": "req_" + msg_id[4:]},
            )
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "request-id": "req_" + msg_id[4:],
            }
        )
        await response.prepare(request)
        start = {
            "id": msg_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {**usage, "output_tokens": 1},
        }
        await response.write(_sse("message_start", {"type": "message_start", "message": start}))
        await response.write(
            _sse(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            )
        )
        await response.write(_sse("ping", {"type": "ping"}))
        await response.write(
            _sse(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": text},
                },
            )
        )
        await response.write(_sse("content_block_stop", {"type": "content_block_stop", "index": 0}))
        await response.write(
            _sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": usage["output_tokens"]},
                },
            )
        )
        await response.write(_sse("message_stop", {"type": "message_stop"}))
        await response.write_eof()
        return response

    async def _count_tokens(self, request: web.Request) -> web.Response:
        """Answer POST /v1/messages/count_tokens."""
        body = await request.json()
        return web.json_response({"input_tokens": _usage(body, 0)["input_tokens"]})

    async def _models(self, request: web.Request) -> web.Response:
        """Answer GET /v1/models with one model."""
        return web.json_response(
            {
                "data": [self._model_info(DEFAULT_MODEL)],
                "has_more": False,
                "first_id": DEFAULT_MODEL,
                "last_id": DEFAULT_MODEL,
            }
        )

    async def _model(self, request: web.Request) -> web.Response:
        """Answer GET /v1/models/{id}: every model exists."""
        return web.json_response(self._model_info(request.match_info["model_id"]))

    async def _other(self, request: web.Request) -> web.Response:
        """Answer anything else with an empty JSON object."""
        await request.read()
        return web.json_response({})

    @staticmethod
    def _model_info(model_id: str) -> dict[str, Any]:
        """Return a model object."""
        return {
            "type": "model",
            "id": model_id,
            "display_name": model_id,
            "created_at": "2025-01-01T00:00:00Z",
        }

    def start(self) -> FakeModel:
        """Start serving on a background thread with its own event loop."""
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve())
            except BaseException as exc:
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-model", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake model server did not start within 10 s")
        if errors:
            raise RuntimeError("fake model server failed to start") from errors[0]
        return self

    async def _serve(self) -> None:
        """Bind the application to host:port and remember the actual port."""
        self._runner = web.AppRunner(self.make_app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _cleanup(self) -> None:
        """Shut the application down."""
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        """Stop the server and join its thread."""
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop = None
        self._thread = None

    def __enter__(self) -> FakeModel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def clear(self) -> None:
        """Forget the recorded requests and calls."""
        with self._lock:
            self.requests.clear()
            self.calls.clear()

    def snapshot(self) -> list[dict[str, Any]]:
        """Return a copy of the recorded /v1/messages request bodies."""
        with self._lock:
            return list(self.requests)

    def requests_containing(self, text: str) -> list[dict[str, Any]]:
        """Return the recorded requests whose messages contain `text`."""
        return [b for b in self.snapshot() if any(text in t for t in message_texts(b))]

    def session_ids(self) -> list[str]:
        """Return the distinct session ids of the recorded requests, in order."""
        ids = (session_id(b) for b in self.snapshot())
        return list(dict.fromkeys(i for i in ids if i))


if __name__ == "__main__":
    import time

    with FakeModel() as server:
        print(server.base_url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
