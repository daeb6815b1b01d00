"""The h11 equivalent of ``bench/_client_ours.py``, for ``bench/http_parser.py``:
the same socket layer, the request sent as h11 events and the answer read as
h11 events. What the client's ``Connection`` would become if h11 framed it.
(It does not import ``orchestrator/http/_connection.py``: the memory probe
measures h11's import on its own.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import h11

from orchestrator.http._sockets import READ_SIZE

MAX_HEAD = 64 * 1024  # as the client's own parser bounds a head


class Client:
    def __init__(self, stream: Any, host: bytes, token: bytes) -> None:
        self._stream = stream
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
        self._headers = [(b"Host", host), (b"Authorization", b"Bearer " + token),
                         (b"Accept", b"application/json"),
                         (b"Content-Type", b"application/json")]

    async def _send(self, method: bytes, target: bytes, body: bytes | None) -> None:
        conn = self.h11
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        headers = self._headers
        if body is not None:
            headers = [*headers, (b"Content-Length", b"%d" % len(body))]
        data = conn.send(h11.Request(method=method, target=target, headers=headers)) or b""
        if body:
            data += conn.send(h11.Data(data=body)) or b""
        data += conn.send(h11.EndOfMessage()) or b""
        await self._stream.send_all(data)

    async def _event(self) -> Any:
        while (event := self.h11.next_event()) is h11.NEED_DATA:
            self.h11.receive_data(bytes(await self._stream.receive_some(READ_SIZE)))
        return event

    async def _parts(self) -> AsyncIterator[bytes]:
        while not isinstance(event := await self._event(), h11.Response):
            assert isinstance(event, h11.InformationalResponse), event
        while isinstance(event := await self._event(), h11.Data):
            yield event.data
        assert isinstance(event, h11.EndOfMessage), event

    async def exchange(self, method: bytes, target: bytes, body: bytes | None) -> bytes:
        await self._send(method, target, body)
        return b"".join([part async for part in self._parts()])

    async def stream(self, target: bytes) -> AsyncIterator[bytes]:
        await self._send(b"GET", target, None)
        async for part in self._parts():
            yield part
