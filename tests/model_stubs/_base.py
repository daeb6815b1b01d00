"""What the three model stubs share: the requests they recorded, a wait for
one, and the life of their HTTP server (stdlib, 127.0.0.1, a port of its
own, in a daemon thread)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

import attrs


@attrs.frozen
class Recorded:
    path: str
    headers: dict[str, str]
    body: Any  # parsed JSON or None
    kind: str  # "chat", "compact", or "other"
    text: str  # all text of the request, joined by "\n"
    last_user_text: str


class RecordingStub:
    """A model API stub: ``handler()`` answers; every request is ``record``ed."""

    name = "stub"
    url_path = ""  # what the CLI's base URL has after host and port

    def __init__(
        self,
        *,
        reply: str = "stub reply",
        summary: str = "stub summary of the conversation",
        compact_delay: float = 0.0,
        fail_status: int | None = None,
    ) -> None:
        self.reply = reply
        self.summary = summary
        self.compact_delay = compact_delay
        self.fail_status = fail_status
        self.url = ""
        self.requests: list[Recorded] = []
        self._changed = threading.Condition()
        self._server: ThreadingHTTPServer | None = None

    def handler(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    def start(self) -> str:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler())
        self._server.daemon_threads = True
        port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{port}{self.url_path}"
        threading.Thread(
            target=self._server.serve_forever, name=f"{self.name}-stub", daemon=True
        ).start()
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def record(self, recorded: Recorded) -> None:
        with self._changed:
            self.requests.append(recorded)
            self._changed.notify_all()

    def chats(self) -> list[Recorded]:
        with self._changed:
            return [r for r in self.requests if r.kind == "chat"]

    def wait_for(self, predicate: Callable[[Recorded], bool], timeout: float) -> Recorded:
        """The first request ``predicate`` takes (waiting at most ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            seen = 0
            while True:
                for recorded in self.requests[seen:]:
                    if predicate(recorded):
                        return recorded
                seen = len(self.requests)
                left = deadline - time.monotonic()
                if left <= 0:
                    summary = [(r.kind, r.path, r.last_user_text[:60]) for r in self.requests]
                    raise TimeoutError(f"no matching request within {timeout}s; saw {summary}")
                self._changed.wait(left)
