"""A fake Gemini API (generativelanguage v1beta) on loopback: it records every request and
answers each `generateContent` / `streamGenerateContent` with one plain text, naming the
codewords of the conversation it was sent."""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CODEWORD = re.compile(r"\b[A-Z]+-\d+\b")


def texts(body: dict[str, Any]) -> list[str]:
    """The text parts of a request's `contents` (the conversation, not the system prompt)."""
    out: list[str] = []
    for content in body.get("contents", []) or []:
        for part in content.get("parts", []) or []:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                out.append(part["text"])
    return out


def codewords(body: dict[str, Any]) -> list[str]:
    seen: dict[str, None] = {}
    for text in texts(body):
        for word in CODEWORD.findall(text):
            seen.setdefault(word, None)
    return list(seen)


def reply_text(body: dict[str, Any]) -> str:
    words = codewords(body)
    return "Codewords seen: " + ", ".join(words) + "." if words else "OK"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: dict[str, Any]

    @property
    def is_chat(self) -> bool:
        return "generateContent" in self.path or "streamGenerateContent" in self.path

    @property
    def json_mode(self) -> bool:
        config = self.body.get("generationConfig") or {}
        return config.get("responseMimeType") == "application/json"


def _from_schema(schema: Any) -> Any:
    """A value of a JSON-mode request's response schema (the router's and the next-speaker
    checks ask for one)."""
    if not isinstance(schema, dict):
        return "fake"
    kind = str(schema.get("type", "object")).lower()
    if schema.get("enum"):
        return schema["enum"][0]
    if kind == "object":
        props = schema.get("properties") or {}
        return {k: _from_schema(v) for k, v in props.items()}
    if kind == "array":
        return []
    if kind in ("number", "integer"):
        return 1
    if kind == "boolean":
        return False
    return "user"


def tool_names(body: dict[str, Any]) -> set[str]:
    return {
        str(d.get("name"))
        for tool in body.get("tools", []) or []
        for d in tool.get("functionDeclarations", []) or []
        if isinstance(d, dict)
    }


def _call(body: dict[str, Any]) -> dict[str, Any] | None:
    """The one tool call a turn makes: `TOOL:Task:<prompt>` in the prompt runs the generalist
    subagent (invoke_agent); a subagent finishes with complete_task at once."""
    contents = body.get("contents") or []
    last = contents[-1] if contents else {}
    parts = [p for p in last.get("parts", []) or [] if isinstance(p, dict)]
    names = tool_names(body)
    answered = any("functionResponse" in p for p in parts)
    if "complete_task" in names and not answered:
        return {"name": "complete_task", "args": {"result": {"response": "subagent done"}}}
    text = " ".join(p["text"] for p in parts if isinstance(p.get("text"), str))
    if not answered and "invoke_agent" in names and "TOOL:Task:" in text:
        prompt = text.split("TOOL:Task:", 1)[1].strip()
        return {"name": "invoke_agent", "args": {"agent_name": "generalist", "prompt": prompt}}
    return None


def _response(body: dict[str, Any], json_mode: bool) -> dict[str, Any]:
    config = body.get("generationConfig") or {}
    schema = config.get("responseJsonSchema") or config.get("responseSchema")
    call = None if json_mode else _call(body)
    if call is not None:
        parts: list[dict[str, Any]] = [{"functionCall": call}]
    else:
        parts = [{"text": json.dumps(_from_schema(schema)) if json_mode else reply_text(body)}]
    return {
        "candidates": [
            {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}
        ],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 3, "totalTokenCount": 13},
        "modelVersion": "fake-gemini",
    }


class FakeGemini:
    """`with FakeGemini() as api:` serves on `api.url` (127.0.0.1, a free port)."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _body(self) -> dict[str, Any]:
                size = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(size) if size else b""
                try:
                    data = json.loads(raw) if raw else {}
                except ValueError:
                    data = {}
                return data if isinstance(data, dict) else {}

            def _send(self, code: int, payload: bytes, kind: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                owner._record(Request("GET", self.path, {}))
                self._send(200, b'{"models": []}', "application/json")

            def do_POST(self) -> None:
                request = Request("POST", self.path, self._body())
                owner._record(request)
                if ":countTokens" in self.path:
                    self._send(200, b'{"totalTokens": 10}', "application/json")
                elif ":streamGenerateContent" in self.path:
                    chunk = json.dumps(_response(request.body, request.json_mode))
                    self._send(200, f"data: {chunk}\r\n\r\n".encode(), "text/event-stream")
                elif ":generateContent" in self.path:
                    data = json.dumps(_response(request.body, request.json_mode)).encode()
                    self._send(200, data, "application/json")
                else:
                    self._send(
                        404, b'{"error": {"code": 404, "message": "fake"}}', "application/json"
                    )

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def chats(self) -> list[Request]:
        """The conversation requests (not the JSON-mode side calls)."""
        with self._lock:
            return [r for r in self.requests if r.is_chat and not r.json_mode]

    def __enter__(self) -> FakeGemini:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
