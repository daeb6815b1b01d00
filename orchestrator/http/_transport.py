"""A lean httpx transport for a plain-HTTP (``http://``) relay: HTTP/1.1 on trio sockets.

The relay client stays on one ``httpx.AsyncClient``; for an ``http://``
relay that client gets this transport instead of httpx's default (httpcore),
whose connection-pool bookkeeping, cancel scopes and stream wrappers cost
more CPU per request than the whole bus may take per command
(docs/performance.md, "What was removed"). An ``https://`` relay keeps httpx's own
transport (TLS, certificate checks).

What it does, and no more:

- keep-alive connections, at most ``max_connections`` at once, idle ones
  reused newest first and checked before reuse (one that turned readable
  while idle was closed by the server, and is dropped);
- ``TCP_NODELAY``, and each request (head and body) written in one send;
  on the socket itself (``_sockets.RawSocketStream``), not a trio stream;
- a response with ``content-length`` is read whole before it is returned;
  a chunked one (a Server-Sent Events stream) or one that ends with the
  connection is handed over as it arrives;
- framing as RFC 9112 has it, and no more lenient than h11 (a test parses
  the same responses with both): a chunk size is 1-16 hex digits, its line
  and the trailers are bounded, ``transfer-encoding`` other than ``chunked``
  or on an HTTP/1.0 response is refused, and a response framed by both
  ``transfer-encoding`` and ``content-length`` is read by the former and
  its connection closed;
- errors as httpx's own: ``ConnectError``, ``WriteError``, ``ReadError``,
  ``RemoteProtocolError``. A request cancelled half way closes its
  connection (its state is unknown); nothing is retried here.

httpx itself is loaded only when something needs it: an httpx request handed
to ``handle_async_request`` (``_httpx``), or an error to
raise. The relay client's own requests (``exchange``) and its event stream
(``open_stream``) go without it, so the daemon of an ``http://`` relay never
loads httpx (docs/performance.md, "Memory").
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import trio

from ._connection import NO_BODY_STATUS, Connection, Pool, framing

if TYPE_CHECKING:
    import httpx


class PlainHTTPTransport:
    """An httpx transport by its methods (httpx checks no base class)."""

    def __init__(self, *, max_connections: int = 32, max_idle: int = 16) -> None:
        self._pool = Pool(max_connections=max_connections, max_idle=max_idle)

    async def __aenter__(self) -> PlainHTTPTransport:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        from ._httpx import handle_async_request

        return await handle_async_request(self._pool, request)

    async def exchange(
        self, key: tuple[str, int], data: bytes, *, head_only: bool = False
    ) -> tuple[int, bytes]:
        """One request, already rendered (``data``: head and body), its answer
        read whole: ``(status, body)``. The relay client's hot path: no httpx
        Request or Response objects (their URL and header handling cost more
        than the exchange itself on loopback). Errors as ``handle_async_request``.
        """
        await self._pool.acquire()
        released = False
        try:
            conn = self._pool.idle_connection(key)
            if conn is None:
                conn = await Connection.open(key, None)
            try:
                await conn.send(data, None)
                status, body, keep_alive = await conn.read_whole(head_only)
            except BaseException:
                conn.close()
                raise
            released = True
            self._pool.done_with(conn, keep_alive)
            return status, body
        finally:
            if not released:
                self._pool.release()

    @asynccontextmanager
    async def open_stream(
        self, key: tuple[str, int], data: bytes, *, head_timeout: float = math.inf
    ) -> AsyncIterator[tuple[int, bytes, AsyncIterator[bytes]]]:
        """One request whose answer is read as it arrives (an event stream):
        ``(status, body so far if it has a length, the body's parts)``. The
        connection goes back to the pool only if the body was read to its end.
        ``head_timeout`` bounds everything before the body's parts (connect,
        send, the head, a body with a length): ``trio.TooSlowError``."""
        await self._pool.acquire()
        conn: Connection | None = None
        reusable = False
        try:
            with trio.fail_after(head_timeout):
                conn = self._pool.idle_connection(key)
                if conn is None:
                    conn = await Connection.open(key, None)
                await conn.send(data, None)
                status, _reason, version, headers = await conn.final_head(None)
                length, chunked, keep_alive = framing(headers, version, None)
                if status in NO_BODY_STATUS:
                    length, chunked = 0, False
                sized = length is not None and not chunked
                body = await conn.read_sized(None, length) if sized and length else b""
            if sized:
                reusable = keep_alive

                async def nothing() -> AsyncIterator[bytes]:
                    return
                    yield b""

                yield status, body, nothing()
                return
            parts = conn.read_chunked(None) if chunked else conn.read_until_closed(None)
            try:
                yield status, b"", parts
            finally:
                await parts.aclose()
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        finally:
            if conn is None:
                self._pool.release()
            else:
                self._pool.done_with(conn, reusable and not conn.closed)

    async def aclose(self) -> None:
        await self._pool.aclose()
