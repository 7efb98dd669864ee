"""A fake OpenAI Responses API on loopback for the real Codex CLI: it records every request and
answers each with one assistant message (streamed as server-sent events). One scripted tool:
a user prompt with a line `SPAWN:<task>` makes it call codex's `spawn_agent` (namespace
`multi_agent_v1`, as the real 0.169.0 rollout records it) with that task, then `wait_agent` on
the agent id codex returns, then answer; the subagent's own requests get the plain answer."""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CODEWORD = re.compile(r"\b[A-Z]+-\d+\b")
REPLY = "MOCK-REPLY"
SPAWN = re.compile(r"^SPAWN:(.+)$", re.M)
NAMESPACE = "multi_agent_v1"


def _text_of(item: dict[str, Any]) -> str:
    content = item.get("content")
    if isinstance(content, str):
        return content
    return "".join(
        p["text"] for p in content or [] if isinstance(p, dict) and isinstance(p.get("text"), str)
    )


def next_call(body: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The scripted tool call this request gets, or None for the plain answer: spawn_agent
    after a user prompt with `SPAWN:<task>`, wait_agent after spawn_agent's output."""
    items = [i for i in body.get("input") or [] if isinstance(i, dict)]
    if not items:
        return None
    last = items[-1]
    if last.get("type") == "function_call_output":
        calls = {i.get("call_id"): i for i in items if i.get("type") == "function_call"}
        call = calls.get(last.get("call_id")) or {}
        if call.get("name") == "spawn_agent":
            try:
                agent = json.loads(last.get("output") or "{}")["agent_id"]
            except (ValueError, KeyError, TypeError):
                return None
            return "wait_agent", {"targets": [agent], "timeout_ms": 60000}
        return None
    if last.get("type", "message") == "message" and last.get("role") == "user":
        found = SPAWN.search(_text_of(last))
        if found:
            return "spawn_agent", {"message": found.group(1).strip()}
    return None


def input_texts(body: dict[str, Any]) -> Iterator[str]:
    """Every text of the conversation a request carries (`input` items of user and assistant
    messages; the developer/system prompt is not conversation)."""
    for item in body.get("input") or []:
        if not isinstance(item, dict) or item.get("type", "message") != "message":
            continue
        if item.get("role") not in ("user", "assistant"):
            continue
        content = item.get("content")
        if isinstance(content, str):
            yield content
            continue
        for part in content or []:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                yield part["text"]


def codewords(body: dict[str, Any]) -> list[str]:
    seen: dict[str, None] = {}
    for text in input_texts(body):
        for word in CODEWORD.findall(text):
            if word != REPLY:
                seen.setdefault(word, None)
    return list(seen)


class FakeOpenAI:
    """`with FakeOpenAI() as fake:` serves on 127.0.0.1:<port>; `fake.requests` holds the
    decoded bodies of every POST /v1/responses, in order."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> FakeOpenAI:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: object) -> None:
                pass

            def _json(self, obj: object, status: int = 200) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                with fake._lock:
                    fake.paths.append("GET " + self.path)
                self._json({"object": "list", "data": [], "models": []})

            def do_POST(self) -> None:
                size = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(size)
                with fake._lock:
                    fake.paths.append("POST " + self.path)
                if not self.path.rstrip("/").endswith("/responses"):
                    self._json({})
                    return
                try:
                    body = json.loads(raw)
                except ValueError:
                    self._json({"error": {"message": "bad json"}}, 400)
                    return
                with fake._lock:
                    fake.requests.append(body)
                self._stream(next_call(body))

            def _stream(self, call: tuple[str, dict[str, Any]] | None) -> None:
                rid = f"resp_{uuid.uuid4().hex[:24]}"
                mid = f"msg_{uuid.uuid4().hex[:24]}"
                item: dict[str, Any] = {
                    "type": "message",
                    "role": "assistant",
                    "id": mid,
                    "status": "completed",
                    "content": [{"type": "output_text", "text": REPLY, "annotations": []}],
                }
                if call is not None:
                    item = {
                        "type": "function_call",
                        "id": f"fc_{uuid.uuid4().hex[:24]}",
                        "status": "completed",
                        "name": call[0],
                        "namespace": NAMESPACE,
                        "arguments": json.dumps(call[1]),
                        "call_id": f"call_{uuid.uuid4().hex[:24]}",
                    }
                usage = {
                    "input_tokens": 10,
                    "input_tokens_details": {"cached_tokens": 0},
                    "output_tokens": 3,
                    "output_tokens_details": {"reasoning_tokens": 0},
                    "total_tokens": 13,
                }
                events = [
                    ("response.created", {"type": "response.created", "response": {"id": rid}}),
                    (
                        "response.output_item.done",
                        {"type": "response.output_item.done", "output_index": 0, "item": item},
                    ),
                    (
                        "response.completed",
                        {"type": "response.completed", "response": {"id": rid, "usage": usage}},
                    ),
                ]
                payload = b"".join(
                    f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events
                )
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fake-openai", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(10)
        self._server = self._thread = None
