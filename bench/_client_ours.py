"""The relay client's HTTP/1.1 framing as ``bench/http_parser.py`` drives it:
a request rendered to bytes as ``RelayClient`` renders it (its head kept per
token), the answer read by ``orchestrator/http/_connection.py``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from orchestrator.http._connection import Connection, framing


class Client:
    def __init__(self, stream: Any, host: bytes, token: bytes) -> None:
        self.conn = Connection((host.decode(), 0), stream)
        self._head = (b"Host: %s\r\nAuthorization: Bearer %s\r\nAccept: application/json\r\n"
                      b"Content-Type: application/json\r\n" % (host, token))

    def _render(self, method: bytes, target: bytes, body: bytes | None) -> bytes:
        length = b"Content-Length: %d\r\n\r\n" % len(body) if body is not None else b"\r\n"
        return b"".join((method, b" ", target, b" HTTP/1.1\r\n", self._head, length, body or b""))

    async def exchange(self, method: bytes, target: bytes, body: bytes | None) -> bytes:
        await self.conn.send(self._render(method, target, body), None)
        _status, answer, _keep_alive = await self.conn.read_whole(False)
        return answer

    async def stream(self, target: bytes) -> AsyncIterator[bytes]:
        await self.conn.send(self._render(b"GET", target, None), None)
        _status, _reason, version, headers = await self.conn.final_head(None)
        _length, chunked, _keep_alive = framing(headers, version, None)
        assert chunked
        async for part in self.conn.read_chunked(None):
            yield part
