"""A stub of the Anthropic Messages API for driving the real Claude Code CLI offline.

    with AnthropicStub(reply="hello") as stub:
        env = cli_env(home, stub.url)   # run `claude` with this environment
        stub.wait_for(lambda r: r.kind == "chat", timeout=30)

Serves ``POST /v1/messages`` (streamed as Server-Sent Events when the request
asks for ``stream: true``, plain JSON otherwise), ``/v1/messages/count_tokens``
and answers anything else with an empty JSON object. Every request is recorded.

Claude Code sends, besides the conversation itself, side requests (the session
title, unless nonessential traffic is switched off). They carry no ``tools``;
the conversation request always does, so ``kind == "chat"`` is a request with
tools. ``/compact`` sends the conversation with tools too, its last user
message asking for "a detailed summary of the conversation so far"
(``kind == "compact"``); it is answered with ``summary``.

``last_user_text`` is the last block of the last user message: what was typed
(Claude Code puts the blocks it adds, reminders and the like, before it) or
the last tool result.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

from ._base import Recorded, RecordingStub

# The last user message of a /compact request says this (Claude Code 2.1).
_COMPACT_MARKER = "create a detailed summary of the conversation"
_WRAPPERS = ("<system-reminder>", "<local-command-", "<command-name>", "<command-message>")


def _block_texts(content: Any) -> Iterator[str]:
    """The text in a message's (or system prompt's) content, tool results included."""
    if isinstance(content, str):
        yield content
        return
    if not isinstance(content, list):
        return
    for block in content:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            yield str(block.get("text", ""))
        elif block.get("type") == "tool_result":
            yield from _block_texts(block.get("content"))


def _texts(body: Any) -> tuple[str, str]:
    """(all text of the request, text of the last user message)."""
    if not isinstance(body, dict):
        return "", ""
    parts = list(_block_texts(body.get("system")))
    last_user = ""
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            continue
        texts = list(_block_texts(message.get("content")))
        parts.extend(texts)
        if message.get("role") == "user" and texts:
            # The prompt is the last block; Claude Code puts what it adds itself
            # (reminders, the record of slash commands, a summary) before it.
            own = [t for t in texts if not t.lstrip().startswith(_WRAPPERS)]
            last_user = (own or texts)[-1]
    return "\n".join(parts), last_user


def _kind(path: str, body: Any, last_user_text: str) -> str:
    if path.split("?")[0].rstrip("/") != "/v1/messages" or not isinstance(body, dict):
        return "other"
    if _COMPACT_MARKER in last_user_text:
        return "compact"
    return "chat" if body.get("tools") else "other"


class AnthropicStub(RecordingStub):
    def __init__(
        self,
        *,
        reply: str = "stub reply",
        summary: str = "stub summary of the conversation",
        compact_delay: float = 0.0,
        fail_status: int | None = None,
        reply_delay: float = 0.0,
        tool_use: tuple[str, dict[str, Any]] | None = None,
    ) -> None:
        """``reply_delay``: seconds to wait before answering a chat request.
        ``tool_use``: (tool name, input): answer chat requests with that tool call
        unless the last user message carries a tool result (then ``reply``)."""
        super().__init__(
            reply=reply, summary=summary, compact_delay=compact_delay, fail_status=fail_status
        )
        self.reply_delay = reply_delay
        self.tool_use = tool_use

    name = "anthropic"

    def handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(_Handler):
            owner = stub

        return Handler


class _Handler(BaseHTTPRequestHandler):
    owner: AnthropicStub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr
        pass

    def do_GET(self) -> None:
        self._handle(None)

    def do_HEAD(self) -> None:
        self._handle(None)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        self._handle(body)

    def _handle(self, body: Any) -> None:
        stub = self.owner
        text, last_user_text = _texts(body)
        kind = _kind(self.path, body, last_user_text)
        headers = {k.lower(): v for k, v in self.headers.items()}
        stub.record(Recorded(self.path, headers, body, kind, text, last_user_text))
        path = self.path.split("?")[0].rstrip("/")

        if stub.fail_status is not None and path.startswith("/v1/messages"):
            self._json(
                stub.fail_status,
                {
                    "type": "error",
                    "error": {
                        "type": _ERROR_TYPES.get(stub.fail_status, "api_error"),
                        "message": f"stub failure {stub.fail_status}",
                    },
                },
            )
            return
        if path == "/v1/messages/count_tokens":
            self._json(200, {"input_tokens": max(1, len(text) // 4)})
            return
        if path != "/v1/messages" or not isinstance(body, dict):
            self._json(200, {})
            return

        blocks: list[dict[str, Any]]
        if kind == "compact":
            time.sleep(stub.compact_delay)
            blocks = [{"type": "text", "text": f"<summary>\n{stub.summary}\n</summary>"}]
        elif kind == "chat":
            time.sleep(stub.reply_delay)
            if stub.tool_use is not None and not _ends_with_tool_result(body):
                name, tool_input = stub.tool_use
                blocks = [
                    {
                        "type": "tool_use",
                        "id": f"toolu_{uuid.uuid4().hex[:24]}",
                        "name": name,
                        "input": tool_input,
                    }
                ]
            else:
                blocks = [{"type": "text", "text": stub.reply}]
        else:
            blocks = [{"type": "text", "text": _side_reply(body)}]

        message: dict[str, Any] = {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "claude-stub"),
            "content": blocks,
            "stop_reason": "tool_use" if blocks[0]["type"] == "tool_use" else "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": max(1, len(text) // 4), "output_tokens": 10},
        }
        if body.get("safeguards"):
            # Auto mode asks the API to judge tool calls; without an answer it
            # stops to say that its safety check is unavailable. Judge them harmless.
            message["safeguard_results"] = [
                {
                    "type": "dangerous_tool_use",
                    "status": {
                        "type": "available",
                        "tool_uses": {
                            b["id"]: {"type": "evaluated", "outcome": "not_flagged"}
                            for b in blocks
                            if b["type"] == "tool_use"
                        },
                    },
                }
            ]
        if body.get("stream"):
            self._stream(message)
        else:
            self._json(200, message)

    # -- responses -------------------------------------------------------------

    def _json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _stream(self, message: dict[str, Any]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        blocks = message["content"]
        safeguards = message.pop("safeguard_results", None)
        head = {
            **message,
            "content": [],
            "stop_reason": None,
            "usage": {**message["usage"], "output_tokens": 1},
        }
        events: list[dict[str, Any]] = [{"type": "message_start", "message": head}]
        for index, block in enumerate(blocks):
            if block["type"] == "tool_use":
                events.append(
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {**block, "input": {}},
                    }
                )
                delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
            else:
                events.append(
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {"type": "text", "text": ""},
                    }
                )
                delta = {"type": "text_delta", "text": block["text"]}
            events.append({"type": "content_block_delta", "index": index, "delta": delta})
            events.append({"type": "content_block_stop", "index": index})
        final: dict[str, Any] = {"stop_reason": message["stop_reason"], "stop_sequence": None}
        if safeguards is not None:
            final["safeguard_results"] = safeguards
        events.append(
            {
                "type": "message_delta",
                "delta": final,
                "usage": {"output_tokens": message["usage"]["output_tokens"]},
            }
        )
        events.append({"type": "message_stop"})
        for event in events:
            self.wfile.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
            self.wfile.flush()


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def _ends_with_tool_result(body: dict[str, Any]) -> bool:
    messages = body.get("messages") or []
    if not messages or not isinstance(messages[-1].get("content"), list):
        return False
    return any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in messages[-1]["content"]
    )


def _side_reply(body: dict[str, Any]) -> str:
    """An answer to a side request that Claude Code can parse (the session title: JSON)."""
    if "title" in "\n".join(_block_texts(body.get("system"))).lower():
        return json.dumps({"title": "Stub session"})
    return "stub"


def cli_env(home: str, base_url: str) -> dict[str, str]:
    """Make ``home`` look like a machine where the user did Claude Code's onboarding
    (without it, claude checks that api.anthropic.com is reachable and exits) and
    return the environment for `claude` to talk to the stub.

    The folder trust and the API key approval are left for the caller to answer.
    Claude retries failed requests 10 times (about 3 minutes): add
    ``CLAUDE_CODE_MAX_RETRIES=0`` to see an error at once.
    """
    config_path = os.path.join(home, ".claude.json")
    config: dict[str, Any] = {}
    if os.path.exists(config_path):
        with open(config_path) as f:
            config = json.load(f)
    config["hasCompletedOnboarding"] = True
    with open(config_path, "w") as f:
        json.dump(config, f)
    # Claude keeps its scratch files and its messaging socket in /tmp otherwise.
    tmp, run = os.path.join(home, "tmp"), os.path.join(home, "run")
    os.makedirs(tmp, exist_ok=True)
    os.makedirs(run, mode=0o700, exist_ok=True)
    return {
        "HOME": home,
        "CLAUDE_CODE_TMPDIR": tmp,
        "XDG_RUNTIME_DIR": run,
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": "sk-ant-stub-0000000000000000",
        # No title generation, no preconnect, no telemetry or update checks.
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
    }
