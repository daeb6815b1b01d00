"""A stub of the OpenAI Responses API as the Codex CLI (0.171) uses it.

Codex only speaks the Responses API (``wire_api = "chat"`` is rejected), so a
chat turn is ``POST /v1/responses`` answered as a server-sent-event stream.
``/compact`` on a custom provider is a normal ``/v1/responses`` request whose
last user message is Codex's summarisation prompt; a provider-side compaction
call (``POST /v1/responses/compact``) is answered too, in case a build uses it.

Stdlib only: a ThreadingHTTPServer on 127.0.0.1, port 0, in a daemon thread.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from http.server import BaseHTTPRequestHandler
from typing import Any

from ._base import Recorded, RecordingStub

__all__ = ["Recorded", "OpenAIStub", "cli_env", "API_KEY_ENV", "MODEL"]

API_KEY_ENV = "STUB_API_KEY"
MODEL = "stub-model"  # not in codex's model catalog: no upgrade question (see notes)

# Codex's /compact prompt (templates/compact/prompt.md) starts with this; the
# marker is matched case-insensitively anywhere in the last user message.
_COMPACT_MARKERS = ("context checkpoint compaction",)


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    out: list[str] = []
    if isinstance(content, list):
        for part in content:
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, dict):
                for key in ("text", "output", "arguments", "summary"):
                    val = part.get(key)
                    if isinstance(val, str):
                        out.append(val)
                    elif isinstance(val, list):
                        out.extend(_texts(val))
    return out


def _item_texts(item: Any) -> list[str]:
    if not isinstance(item, dict):
        return _texts([item])
    if "content" in item:
        return _texts(item["content"])
    return _texts([item])


def _analyse(path: str, headers: dict[str, str], body: Any) -> tuple[str, str, str]:
    """Return (kind, text, last_user_text) of a request."""
    if not isinstance(body, dict):
        return "other", "", ""
    parts: list[str] = []
    if isinstance(body.get("instructions"), str):
        parts.append(body["instructions"])
    items = body.get("input")
    items = items if isinstance(items, list) else ([items] if items else [])
    last_user = ""
    for item in items:
        texts = _item_texts(item)
        parts.extend(texts)
        if isinstance(item, dict) and item.get("role") == "user":
            last_user = "\n".join(texts)
    text = "\n".join(parts)
    fmt = body.get("text")
    if isinstance(fmt, dict) and isinstance(fmt.get("format"), dict):
        return "other", text, last_user  # e.g. the thread-title request (JSON schema output)
    if path.rstrip("/").endswith("/responses/compact"):
        return "compact", text, last_user
    if not path.rstrip("/").endswith("/responses"):
        return "other", text, last_user
    try:  # Codex labels each request: request_kind "turn" or "compaction"
        meta = json.loads(headers.get("x-codex-turn-metadata", "{}"))
    except ValueError:
        meta = {}
    if isinstance(meta, dict) and meta.get("request_kind") == "compaction":
        return "compact", text, last_user
    lowered = last_user.lower()
    if any(marker in lowered for marker in _COMPACT_MARKERS):
        return "compact", text, last_user
    return "chat", text, last_user


def _sse(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


class OpenAIStub(RecordingStub):
    name = "openai"
    url_path = "/v1"  # codex's base_url ends there

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        # Extras for screen tests: delay of chat answers, and a shell command
        # the next chat turn asks to run (one tool call, then a text reply).
        self.reply_delay: float = 0.0
        self.shell_command: str | None = None

    # -- lifecycle ---------------------------------------------------------
    def handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:
                stub._serve(self, None)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if self.headers.get("Content-Encoding", "").lower() == "zstd":
                    body: Any = None  # not decodable with the stdlib
                else:
                    try:
                        body = json.loads(raw) if raw else None
                    except ValueError:
                        body = None
                stub._serve(self, body)

        return Handler

    # -- serving -----------------------------------------------------------
    def _serve(self, h: BaseHTTPRequestHandler, body: Any) -> None:
        try:
            self._handle(h, body)
        except (BrokenPipeError, ConnectionResetError):  # the CLI gave up (Esc, quit)
            h.close_connection = True

    def _handle(self, h: BaseHTTPRequestHandler, body: Any) -> None:
        path = h.path.split("?", 1)[0]
        headers = {k.lower(): v for k, v in h.headers.items()}
        kind, text, last_user = _analyse(path, headers, body)
        rec = Recorded(
            path=h.path, headers=headers, body=body, kind=kind, text=text, last_user_text=last_user
        )
        self.record(rec)
        if self.fail_status is not None and h.command == "POST":
            self._json(
                h,
                self.fail_status,
                {
                    "error": {
                        "message": f"stub failure {self.fail_status}",
                        "type": "server_error"
                        if self.fail_status >= 500
                        else "invalid_request_error",
                        "param": None,
                        "code": None,
                    }
                },
            )
            return
        if path.rstrip("/").endswith("/models"):
            self._json(
                h,
                200,
                {
                    "object": "list",
                    "models": [],
                    "data": [{"id": MODEL, "object": "model", "owned_by": "stub"}],
                },
            )
        elif kind == "compact" and path.rstrip("/").endswith("/compact"):
            time.sleep(self.compact_delay)
            self._json(h, 200, {"output": [self._message(self.summary)]})
        elif kind == "compact":
            time.sleep(self.compact_delay)
            self._stream(h, [self._message(self.summary)])
        elif kind == "chat":
            time.sleep(self.reply_delay)
            self._stream(h, self._chat_output(body, text))
        elif path.rstrip("/").endswith("/responses"):
            # Structured-output side requests (thread title): a JSON answer.
            self._stream(h, [self._message(json.dumps({"title": "Stub task"}))])
        else:
            self._json(h, 404, {"error": {"message": f"no route {path}", "type": "not_found"}})

    def _chat_output(self, body: Any, text: str) -> list[dict[str, Any]]:
        items = body.get("input") if isinstance(body, dict) else None
        last = items[-1] if isinstance(items, list) and items else {}
        answering_tool = isinstance(last, dict) and last.get("type", "").endswith("_output")
        if self.shell_command and not answering_tool:
            # Codex's shell tool is `exec_command`. Asking for escalation makes it
            # an approval question under `-a on-request`; under approval "never"
            # (`-a never`, bypass/yolo) escalation is refused, so ask plainly.
            args: dict[str, str] = {"cmd": self.shell_command}
            if "Approval policy is currently never" not in text:
                args["sandbox_permissions"] = "require_escalated"
                args["justification"] = f"Run {self.shell_command}?"
            return [
                {
                    "type": "function_call",
                    "id": f"fc_{uuid.uuid4().hex[:12]}",
                    "call_id": f"call_{uuid.uuid4().hex[:12]}",
                    "name": "exec_command",
                    "arguments": json.dumps(args),
                }
            ]
        return [self._message(self.reply)]

    @staticmethod
    def _message(text: str) -> dict[str, Any]:
        return {
            "type": "message",
            "role": "assistant",
            "id": f"msg_{uuid.uuid4().hex[:12]}",
            "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }

    @staticmethod
    def _json(h: BaseHTTPRequestHandler, status: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    @staticmethod
    def _stream(h: BaseHTTPRequestHandler, output: list[dict[str, Any]]) -> None:
        rid = f"resp_{uuid.uuid4().hex[:12]}"
        events: list[dict[str, Any]] = [
            {"type": "response.created", "response": {"id": rid, "status": "in_progress"}}
        ]
        for idx, item in enumerate(output):
            events.append({"type": "response.output_item.added", "output_index": idx, "item": item})
            if item["type"] == "message":
                events.append(
                    {
                        "type": "response.output_text.delta",
                        "output_index": idx,
                        "content_index": 0,
                        "item_id": item["id"],
                        "delta": item["content"][0]["text"],
                    }
                )
            events.append({"type": "response.output_item.done", "output_index": idx, "item": item})
        events.append(
            {
                "type": "response.completed",
                "response": {
                    "id": rid,
                    "status": "completed",
                    "output": output,
                    "usage": {
                        "input_tokens": 10,
                        "input_tokens_details": {"cached_tokens": 0},
                        "output_tokens": 5,
                        "output_tokens_details": {"reasoning_tokens": 0},
                        "total_tokens": 15,
                    },
                },
            }
        )
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Cache-Control", "no-cache")
        h.send_header("Connection", "close")
        h.end_headers()
        for event in events:
            h.wfile.write(_sse(event))
        h.wfile.flush()
        h.close_connection = True


def cli_env(home: str, base_url: str) -> dict[str, str]:
    """Configure ``home`` as a Codex user pointed at ``base_url`` would; return env.

    No project is marked trusted: the folder-trust question is left to the caller.
    """
    codex_home = os.path.join(home, ".codex")
    os.makedirs(codex_home, exist_ok=True)
    config = f"""\
model = "{MODEL}"
model_provider = "stub"
check_for_update_on_startup = false

[model_providers.stub]
name = "Stub"
base_url = "{base_url}"
env_key = "{API_KEY_ENV}"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0

[features]
daemon_auto_start = false
in_app_updates = false

[analytics]
enabled = false

[feedback]
enabled = false
"""
    with open(os.path.join(codex_home, "config.toml"), "w") as f:
        f.write(config)
    return {"HOME": home, "CODEX_HOME": codex_home, API_KEY_ENV: "stub-key"}
