"""Loopback stub of the Gemini API (generativelanguage v1beta) for gemini-cli 0.61.

    with GeminiStub(reply="hello") as stub:
        env = cli_env(home, stub.url)   # run `gemini` with this environment
        stub.wait_for(lambda r: r.kind == "chat", timeout=30)

gemini-cli is pointed at it with ``GOOGLE_GEMINI_BASE_URL`` (honoured for the
``gemini-api-key`` auth type; plain http is allowed for 127.0.0.1/localhost).
The CLI then calls ``POST {base}/v1beta/models/{model}:{method}`` with
``x-goog-api-key``:

* ``streamGenerateContent?alt=sse`` - the conversation turns ("chat"),
* ``generateContent`` - side requests: JSON-mode checks (next speaker, loop
  detection, model routing) and the two ``/compress`` requests (summary, then a
  "critically evaluate" verification pass), both with a ``<state_snapshot>``
  system instruction ("compact"),
* ``countTokens``.

Everything that is not a chat turn or a compaction is recorded as "other" and
answered so that the CLI proceeds (JSON-mode requests get an object filled from
their response schema, preferring ``"user"`` for enums such as next_speaker).

``last_user_text`` is the text of the last user content without the
``<session_context>`` part the CLI adds to the first turn; ``@file`` contents the
CLI inlines are included; it is "" for a turn that only returns a tool result.
``usageMetadata.promptTokenCount`` is the request size / 4, which keeps
``/compress`` from being rejected as "not beneficial".
"""

from __future__ import annotations

import json
import os
import re
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any

from ._base import Recorded, RecordingStub

_MODEL_PATH = re.compile(r"/models/(?P<model>[^:/?]+):(?P<method>[A-Za-z]+)")
_COMPACT_MARKER = "<state_snapshot>"
_SESSION_CONTEXT = "<session_context>"
_VERIFY_PREFIX = "Critically evaluate the <state_snapshot>"


def _parts_text(parts: Any) -> list[str]:
    if not isinstance(parts, list):
        return []
    return [p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)]


def _request_texts(body: Any) -> tuple[str, str, str]:
    """Return (system instruction text, all text, text of the last user content)."""
    if not isinstance(body, dict):
        return "", "", ""
    system = body.get("systemInstruction")
    if isinstance(system, str):
        system_texts = [system]
    elif isinstance(system, dict):
        system_texts = _parts_text(system.get("parts")) or (
            [system["text"]] if isinstance(system.get("text"), str) else []
        )
    else:
        system_texts = []
    texts = list(system_texts)
    last_user = ""
    for content in body.get("contents") or []:
        if not isinstance(content, dict):
            continue
        content_texts = _parts_text(content.get("parts"))
        texts.extend(content_texts)
        if content.get("role", "user") == "user":
            # The first turn carries the CLI's <session_context> as an extra part.
            last_user = "\n".join(t for t in content_texts if not t.startswith(_SESSION_CONTEXT))
    return "\n".join(system_texts), "\n".join(texts), last_user


def _fill_schema(schema: Any) -> Any:
    """A minimal value satisfying a (JSON or OpenAPI-style) response schema."""
    if not isinstance(schema, dict):
        return {}
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return "user" if "user" in enum else enum[0]
    kind = str(schema.get("type", "object")).lower()
    if kind == "object":
        props = schema.get("properties") or {}
        return {name: _fill_schema(sub) for name, sub in props.items()}
    return {"string": "", "number": 0, "integer": 0, "boolean": False, "array": []}.get(kind)


def _google_error(status: int) -> dict[str, Any]:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    names = {
        400: "INVALID_ARGUMENT",
        401: "UNAUTHENTICATED",
        403: "PERMISSION_DENIED",
        404: "NOT_FOUND",
        429: "RESOURCE_EXHAUSTED",
        500: "INTERNAL",
        503: "UNAVAILABLE",
    }
    return {
        "error": {
            "code": status,
            "message": f"stub error: {phrase}",
            "status": names.get(status, "UNKNOWN"),
        }
    }


class GeminiStub(RecordingStub):
    """Threaded HTTP stub on 127.0.0.1. Extra knobs (settable at run time):
    ``reply``, ``reply_delay`` (seconds before answering a chat turn) and
    ``function_calls`` (queue of (name, args) answered, one per chat turn, as a
    functionCall instead of text)."""

    name = "gemini"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.reply_delay = 0.0
        self.function_calls: list[tuple[str, dict[str, Any]]] = []

    # lifecycle -----------------------------------------------------------
    def handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:
                self._serve(None)

            def do_HEAD(self) -> None:
                self._serve(None)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self._serve(self.rfile.read(length))

            def _serve(self, raw: bytes | None) -> None:
                try:
                    stub._handle(self, raw)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the CLI cancelled the request (Esc / Ctrl-C)

        return Handler

    # handling ------------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler, raw: bytes | None) -> None:
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        match = _MODEL_PATH.search(h.path)
        method = match["method"] if match else ""
        system, text, last_user = _request_texts(body)
        gen_config = body.get("generationConfig", {}) if isinstance(body, dict) else {}
        if _COMPACT_MARKER in system:
            kind = "compact"
        elif method == "streamGenerateContent" and "application/json" != gen_config.get(
            "responseMimeType"
        ):
            kind = "chat"
        else:
            kind = "other"
        rec = Recorded(
            path=h.path,
            headers={k.lower(): v for k, v in h.headers.items()},
            body=body,
            kind=kind,
            text=text,
            last_user_text=last_user,
        )
        self.record(rec)

        if self.fail_status is not None and raw is not None:
            self._send_json(h, self.fail_status, _google_error(self.fail_status))
            return
        prompt_tokens = max(1, len(raw or b"") // 4)
        if method == "countTokens":
            self._send_json(h, 200, {"totalTokens": max(1, len(text) // 4)})
            return
        if method not in ("generateContent", "streamGenerateContent"):
            self._send_json(h, 200, {})
            return

        parts: list[dict[str, Any]]
        if kind == "compact":
            if not last_user.startswith(_VERIFY_PREFIX):  # delay once per /compress
                time.sleep(self.compact_delay)
            parts = [{"text": f"<state_snapshot>\n{self.summary}\n</state_snapshot>"}]
        elif kind == "chat":
            time.sleep(self.reply_delay)
            if self.function_calls:
                name, args = self.function_calls.pop(0)
                parts = [{"functionCall": {"name": name, "args": args}}]
            else:
                parts = [{"text": self.reply}]
        elif gen_config.get("responseMimeType") == "application/json":
            schema = gen_config.get("responseJsonSchema") or gen_config.get("responseSchema")
            parts = [{"text": json.dumps(_fill_schema(schema))}]
        else:
            parts = [{"text": self.reply}]
        response = {
            "candidates": [
                {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}
            ],
            "usageMetadata": {
                "promptTokenCount": prompt_tokens,
                "candidatesTokenCount": 5,
                "totalTokenCount": prompt_tokens + 5,
            },
            "modelVersion": match["model"] if match else "stub",
        }
        if method == "streamGenerateContent":
            data = f"data: {json.dumps(response)}\r\n\r\n".encode()
            h.send_response(200)
            h.send_header("Content-Type", "text/event-stream")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
        else:
            self._send_json(h, 200, response)

    @staticmethod
    def _send_json(h: BaseHTTPRequestHandler, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json; charset=UTF-8")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)


def cli_env(home: str, base_url: str) -> dict[str, str]:
    """Prepare ``home`` like a user who set gemini up with an API key (folder
    trust left ON and no folder trusted) and return the env for the CLI."""
    gemini_dir = os.path.join(home, ".gemini")
    os.makedirs(gemini_dir, exist_ok=True)
    settings = {
        "security": {"auth": {"selectedType": "gemini-api-key"}, "folderTrust": {"enabled": True}},
        "general": {"enableAutoUpdate": False, "enableAutoUpdateNotification": False},
        "privacy": {"usageStatisticsEnabled": False},
        "telemetry": {"enabled": False},
        "ide": {"enabled": False, "hasSeenNudge": True},
    }
    with open(os.path.join(gemini_dir, "settings.json"), "w", encoding="utf-8") as f:
        json.dump(settings, f, indent=2)
    return {
        "HOME": home,
        "GEMINI_API_KEY": "stub-gemini-key",
        "GOOGLE_GEMINI_BASE_URL": base_url,
        "NO_BROWSER": "true",
        # tmux does not advertise 24-bit colour; without this gemini prints a warning line.
        "COLORTERM": "truecolor",
    }
