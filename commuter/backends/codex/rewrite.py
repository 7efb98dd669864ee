"""Path translation inside a Codex rollout: only the fields that hold paths (session-formats.md
§2.2), never prose (prompts, the model's text, tool output)."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote, unquote

import orjson

from commuter.pathmap import PathMap

# What may follow a path prefix inside a text (a command, a patch header, an XML element).
_Pattern = tuple[re.Pattern[str], dict[str, str]]
_END = r"""(?=$|[/\s"'`<>()\[\]:;,|&])"""


class Rewriter:
    """Translates one rollout line at a time by a PathMap (source → target prefixes);
    `codex_map` carries the source codex home to the target's (skills roots)."""

    def __init__(self, paths: PathMap, codex_map: PathMap | None = None) -> None:
        self.paths = paths
        self.codex = codex_map or PathMap(())
        self._text = self._pattern(paths)
        self._json_text = self._pattern(paths, escaped=True)
        self._codex_text = self._pattern(self.codex)
        self._needles = self._needles_of([*paths.pairs, *self.codex.pairs])

    @staticmethod
    def _needles_of(pairs: list[tuple[str, str]]) -> tuple[bytes, ...] | None:
        """Every form a source prefix can take in a raw line: JSON-escaped (raw UTF-8 or
        \\u-escaped), escaped twice (inside `function_call.arguments`), percent-encoded (a
        `file://` URL). A line holding none of them has nothing to translate. None: no
        shortcut (a source of `/` matches everything)."""
        out: set[bytes] = set()
        for src, _dst in pairs:
            if src == "/" or not src:
                return None
            once = orjson.dumps(src)[1:-1]
            ascii_once = json.dumps(src)[1:-1].encode()
            out |= {once, ascii_once, orjson.dumps(once.decode())[1:-1]}
            out |= {orjson.dumps(ascii_once.decode())[1:-1], quote(src).encode()}
        return tuple(sorted(out, key=len))

    @staticmethod
    def _pattern(pm: PathMap, *, escaped: bool = False) -> _Pattern | None:
        if not pm.pairs:
            return None
        table: dict[str, str] = {}
        for src, dst in pm.pairs:
            if src == "/":
                continue
            if not escaped:
                table[src] = dst
                continue
            # as a JSON string inside the text: non-ASCII raw (as codex writes it) or \u-escaped
            for ascii_only in (True, False):
                key = json.dumps(src, ensure_ascii=ascii_only)[1:-1]
                table[key] = json.dumps(dst, ensure_ascii=ascii_only)[1:-1]
        if not table:
            return None
        alts = "|".join(re.escape(k) for k in sorted(table, key=len, reverse=True))
        return re.compile(rf"(?<![\w.\-/])({alts}){_END}"), table

    @staticmethod
    def _sub(pat: _Pattern | None, text: str) -> str:
        if pat is None:
            return text
        rx, table = pat
        return rx.sub(lambda m: table[m.group(1)], text)

    # --- field kinds ------------------------------------------------------------------------

    def path(self, value: Any) -> Any:
        if isinstance(value, str) and value.startswith("/"):
            return self.paths.apply(value)
        return value

    def text(self, value: Any) -> Any:
        return self._sub(self._text, value) if isinstance(value, str) else value

    def url(self, value: Any) -> Any:
        if not isinstance(value, str) or not value.startswith("file://"):
            return value
        local = unquote(value[len("file://") :])
        new = self.paths.apply(local)
        return value if new == local else "file://" + quote(new)

    def paths_list(self, value: Any) -> Any:
        return [self.path(v) for v in value] if isinstance(value, list) else value

    # --- lines ------------------------------------------------------------------------------

    def line(self, raw: bytes) -> bytes:
        """One rollout line, translated (returned as is when nothing in it changes)."""
        if not self.paths.pairs or not raw.strip():
            return raw
        if self._needles is not None and not any(n in raw for n in self._needles):
            return raw
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return raw
        if not isinstance(obj, dict) or not isinstance(obj.get("payload"), dict):
            return raw
        before = orjson.dumps(obj)
        self._record(obj["type"] if isinstance(obj.get("type"), str) else "", obj["payload"])
        after = orjson.dumps(obj)
        if after == before:
            return raw
        return after + (b"\n" if raw.endswith(b"\n") else b"")

    def _record(self, kind: str, p: dict[str, Any]) -> None:
        if kind in ("session_meta", "turn_context"):
            self._settings(p)
        elif kind == "world_state":
            self._world(p.get("state"))
        elif kind == "response_item":
            self._item(p)
        elif kind == "event_msg":
            self._event(p)

    def _settings(self, p: dict[str, Any]) -> None:
        if "cwd" in p:
            p["cwd"] = self.path(p["cwd"])
        for key in ("runtime_workspace_roots", "writable_roots"):
            if key in p:
                p[key] = self.paths_list(p[key])

    def _world(self, state: Any, depth: int = 0) -> None:
        """The environment codex describes to the model: `cwd` fields, the `<filesystem>` and
        other XML texts it renders (workspace roots), the skills roots under its home."""
        if depth > 8:
            return
        items = (
            state.items()
            if isinstance(state, dict)
            else enumerate(state)
            if isinstance(state, list)
            else ()
        )
        for key, value in list(items):
            if isinstance(value, (dict, list)):
                self._world(value, depth + 1)
            elif isinstance(value, str):
                if key == "cwd":
                    new = self.path(value)
                elif value.startswith("<"):
                    new = self.text(value)
                else:
                    new = self._sub(self._codex_text, value)
                if new != value:
                    state[key] = new

    def _item(self, p: dict[str, Any]) -> None:
        kind = p.get("type")
        if kind == "message":
            role = p.get("role")
            for part in p.get("content") or []:
                if not isinstance(part, dict) or not isinstance(part.get("text"), str):
                    continue
                text: str = part["text"]
                if role == "user" and text.startswith("<environment_context>"):
                    part["text"] = self.text(text)
                elif role == "developer" and text.startswith("<skills_instructions>"):
                    part["text"] = self._sub(self._codex_text, text)
        elif kind == "function_call" and isinstance(p.get("arguments"), str):
            p["arguments"] = self._sub(self._json_text, p["arguments"])
        elif kind == "custom_tool_call" and isinstance(p.get("input"), str):
            p["input"] = self.text(p["input"])
        elif kind == "local_shell_call" and isinstance(p.get("action"), dict):
            action = p["action"]
            if isinstance(action.get("command"), list):
                action["command"] = [self.text(c) for c in action["command"]]
            if "working_directory" in action:
                action["working_directory"] = self.path(action["working_directory"])

    def _event(self, p: dict[str, Any]) -> None:
        kind = p.get("type")
        if kind == "thread_settings_applied" and isinstance(p.get("thread_settings"), dict):
            self._settings(p["thread_settings"])
        elif kind in ("item_started", "item_completed") and isinstance(p.get("item"), dict):
            self._thread_item(p["item"])
        elif kind in ("exec_command_begin", "exec_command_end"):
            if isinstance(p.get("command"), list):
                p["command"] = [self.text(c) for c in p["command"]]
            if "cwd" in p:
                p["cwd"] = self.path(p["cwd"])
            self._parsed(p.get("parsed_cmd"))
        elif kind in ("patch_apply_begin", "patch_apply_end") and isinstance(
            p.get("changes"), dict
        ):
            p["changes"] = self._changes(p["changes"])

    def _thread_item(self, item: dict[str, Any]) -> None:
        kind = item.get("type")
        if kind == "CommandExecution":
            if isinstance(item.get("command"), list):
                item["command"] = [self.text(c) for c in item["command"]]
            elif isinstance(item.get("command"), str):
                item["command"] = self.text(item["command"])
            if "cwd" in item:
                item["cwd"] = (
                    self.url(item["cwd"])
                    if str(item["cwd"]).startswith("file://")
                    else self.path(item["cwd"])
                )
            self._parsed(item.get("parsed_cmd"))
        elif kind == "FileChange" and isinstance(item.get("changes"), dict):
            item["changes"] = self._changes(item["changes"])

    def _parsed(self, parsed: Any) -> None:
        for entry in parsed if isinstance(parsed, list) else []:
            if isinstance(entry, dict):
                if "path" in entry:
                    entry["path"] = self.path(entry["path"])
                if "cmd" in entry:
                    entry["cmd"] = self.text(entry["cmd"])

    def _changes(self, changes: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, change in changes.items():
            if isinstance(change, dict) and isinstance(change.get("move_path"), str):
                change["move_path"] = self.path(change["move_path"])
            out[self.path(key)] = change
        return out
