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
import re
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

from ._sockets import READ_SIZE, RawSocketStream

if TYPE_CHECKING:
    import httpx

MAX_HEAD = 64 * 1024  # a response head; the trailers of a chunked body too
MAX_CHUNK_LINE = 4096  # a chunk-size line, extensions included
_NO_BODY_STATUS = (204, 304)
# RFC 9112 (as h11 reads it): a status line, a field line, a chunk-size line.
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: ([^\x00\n\r\x0b\x0c]*))?")
_FIELD_LINE = re.compile(
    rb"([-!#$%&'*+.^_`|~0-9a-zA-Z]+):[ \t]*"
    rb"((?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?)[ \t]*"
)
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:;[^\n]*)?[ \t]*")


def _error(kind: str, message: str, request: Any) -> Exception:
    """httpx's exception ``kind`` (``ConnectError``…), httpx loaded only now."""
    import httpx

    error: Exception = getattr(httpx, kind)(message, request=request)
    return error


class PlainHTTPTransport:
    """An httpx transport by its methods (httpx checks no base class)."""

    def __init__(self, *, max_connections: int = 32, max_idle: int = 16) -> None:
        self._limit = trio.Semaphore(max_connections)
        self._max_idle = max_idle
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._closed = False

    async def __aenter__(self) -> PlainHTTPTransport:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        from ._httpx import handle_async_request

        return await handle_async_request(self, request)

    async def exchange(
        self, key: tuple[str, int], data: bytes, *, head_only: bool = False
    ) -> tuple[int, bytes]:
        """One request, already rendered (``data``: head and body), its answer
        read whole: ``(status, body)``. The relay client's hot path: no httpx
        Request or Response objects (their URL and header handling cost more
        than the exchange itself on loopback). Errors as ``handle_async_request``.
        """
        await self._acquire()
        released = False
        try:
            conn = self._idle_connection(key)
            if conn is None:
                conn = await _Connection.open(key, None)
            try:
                await conn.send(data, None)
                status, body, keep_alive = await conn.read_whole(head_only)
            except BaseException:
                conn.close()
                raise
            released = True
            self._done_with(conn, keep_alive)
            return status, body
        finally:
            if not released:
                self._limit.release()

    @asynccontextmanager
    async def open_stream(
        self, key: tuple[str, int], data: bytes, *, head_timeout: float = math.inf
    ) -> AsyncIterator[tuple[int, bytes, AsyncIterator[bytes]]]:
        """One request whose answer is read as it arrives (an event stream):
        ``(status, body so far if it has a length, the body's parts)``. The
        connection goes back to the pool only if the body was read to its end.
        ``head_timeout`` bounds everything before the body's parts (connect,
        send, the head, a body with a length): ``trio.TooSlowError``."""
        await self._acquire()
        conn: _Connection | None = None
        reusable = False
        try:
            with trio.fail_after(head_timeout):
                conn = self._idle_connection(key)
                if conn is None:
                    conn = await _Connection.open(key, None)
                await conn.send(data, None)
                status, _reason, version, headers = await conn._final_head(None)
                length, chunked, keep_alive = _framing(headers, version, None)
                if status in _NO_BODY_STATUS:
                    length, chunked = 0, False
                sized = length is not None and not chunked
                body = await conn._read_sized(None, length) if sized and length else b""
            if sized:
                reusable = keep_alive

                async def nothing() -> AsyncIterator[bytes]:
                    return
                    yield b""

                yield status, body, nothing()
                return
            parts = conn._chunked(None) if chunked else conn._until_closed(None)
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
                self._limit.release()
            else:
                self._done_with(conn, reusable and not conn._closed)

    async def _acquire(self) -> None:
        """A connection slot; one free is taken without a trip through the
        scheduler (``Semaphore.acquire`` yields even when it need not wait)."""
        try:
            self._limit.acquire_nowait()
        except trio.WouldBlock:
            await self._limit.acquire()

    def _idle_connection(self, key: tuple[str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if conn.usable():
                return conn
            conn.close()
        return None

    def _done_with(self, conn: _Connection, reusable: bool) -> None:
        """A response is over: its connection back to the idle list, or closed."""
        self._limit.release()
        idle = self._idle.setdefault(conn.key, [])
        if reusable and not self._closed and len(idle) < self._max_idle:
            idle.append(conn)
        else:
            conn.close()

    async def aclose(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()


def _framing(
    headers: list[tuple[bytes, bytes]], version: bytes, request: Any
) -> tuple[int | None, bool, bool]:
    """How the body is framed: ``(content-length, chunked, keep-alive)``.

    RFC 9112 6.1 and 6.3: a transfer coding other than ``chunked`` (we decode
    no other), or any on an HTTP/1.0 response, is faulty framing; with both
    ``transfer-encoding`` and ``content-length`` the former frames the body
    and the connection is not used again."""
    length: int | None = None
    chunked = False
    keep_alive = version == b"HTTP/1.1"
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"content-length":
            # digits only; a list or a repeated header must agree (RFC 9112 6.3)
            values = {part.strip() for part in value.split(b",")}
            given = values.pop() if len(values) == 1 else b""
            if not given.isdigit() or (length is not None and length != int(given)):
                raise _error("RemoteProtocolError", "bad content-length", request)
            length = int(given)
        elif lowered == b"transfer-encoding":
            if chunked or value.strip().lower() != b"chunked":
                raise _error("RemoteProtocolError", "unsupported transfer-encoding", request)
            if version != b"HTTP/1.1":
                raise _error("RemoteProtocolError", "transfer-encoding on HTTP/1.0", request)
            chunked = True
        elif lowered == b"connection":
            tokens = value.lower()
            if b"close" in tokens:
                keep_alive = False
            elif b"keep-alive" in tokens:
                keep_alive = True
    if chunked and length is not None:
        keep_alive = False  # smuggling or splitting, maybe: never reuse this connection
    return length, chunked, keep_alive


class _Connection:
    def __init__(self, key: tuple[str, int], stream: RawSocketStream) -> None:
        self.key = key
        self._stream = stream
        self._buffer = bytearray()

    @property
    def _closed(self) -> bool:
        return self._stream.closed

    @classmethod
    async def open(cls, key: tuple[str, int], request: Any) -> _Connection:
        try:
            stream = await trio.open_tcp_stream(*key)  # sets TCP_NODELAY
        except OSError as exc:
            raise _error("ConnectError", str(exc) or repr(exc), request) from exc
        return cls(key, RawSocketStream.detach(stream))

    def usable(self) -> bool:
        """An idle connection the server has not closed (nor written to)."""
        if self._closed or self._buffer:
            return False
        try:
            return not self._stream.is_readable()
        except (OSError, ValueError):
            return False

    def close(self) -> None:
        self._stream.close()

    async def send(self, data: bytes, request: Any) -> None:
        try:
            await self._stream.send_all(data)
        except (trio.ClosedResourceError, OSError) as exc:
            raise _error("WriteError", str(exc) or repr(exc), request) from exc

    async def _receive(self, request: Any) -> bytes:
        try:
            return await self._stream.receive_some(READ_SIZE)
        except (trio.ClosedResourceError, OSError) as exc:
            raise _error("ReadError", str(exc) or repr(exc), request) from exc

    async def _fill(self, request: Any, what: str) -> None:
        data = await self._receive(request)
        if not data:
            raise _error(
                "RemoteProtocolError", f"Server disconnected without sending {what}.", request
            )
        self._buffer += data

    async def read_whole(self, head_only: bool) -> tuple[int, bytes, bool]:
        """The next response, body and all: ``(status, body, keep_alive)``."""
        status, _reason, version, headers = await self._final_head(None)
        length, chunked, keep_alive = _framing(headers, version, None)
        if head_only or status in _NO_BODY_STATUS:
            length, chunked = 0, False  # ends at the head, whatever it announces
        if length is not None and not chunked:
            return status, await self._read_sized(None, length), keep_alive
        parts = self._chunked(None) if chunked else self._until_closed(None)
        body = b"".join([part async for part in parts])
        return status, body, keep_alive and chunked

    async def _read_sized(self, request: Any, length: int) -> bytes:
        while len(self._buffer) < length:
            await self._fill(request, "the whole response body")
        body = bytes(self._buffer[:length])
        del self._buffer[:length]
        return body

    async def _final_head(
        self, request: Any
    ) -> tuple[int, bytes, bytes, list[tuple[bytes, bytes]]]:
        while True:
            head = await self._read_head(request)
            if not 100 <= head[0] < 200 or head[0] == 101:
                return head

    async def _read_head(
        self, request: Any
    ) -> tuple[int, bytes, bytes, list[tuple[bytes, bytes]]]:
        while (end := self._buffer.find(b"\r\n\r\n")) < 0:
            if len(self._buffer) > MAX_HEAD:
                raise _error("RemoteProtocolError", "response head too large", request)
            await self._fill(request, "a response")
        head = bytes(self._buffer[:end])
        del self._buffer[: end + 4]
        lines = head.split(b"\r\n")
        status = _STATUS_LINE.fullmatch(lines[0])
        if status is None or int(status[2]) < 100:
            raise _error("RemoteProtocolError", f"bad status line: {lines[0][:100]!r}", request)
        version = b"HTTP/1." + status[1]
        return int(status[2]), status[3] or b"", version, _fields(lines[1:], request)

    async def _chunked(self, request: Any) -> AsyncGenerator[bytes, None]:
        while True:
            size_line = await self._line(request, MAX_CHUNK_LINE, "a chunk")
            match = _CHUNK_LINE.fullmatch(size_line)
            if match is None:
                raise _error("RemoteProtocolError", "bad chunk size", request)
            size = int(match[1], 16)
            if size == 0:
                trailers, room = [], MAX_HEAD
                while line := await self._line(request, max(room, 0), "the end of a chunked body"):
                    trailers.append(line)
                    room -= len(line) + 2
                _fields(trailers, request)
                return
            while size:
                if not self._buffer:
                    await self._fill(request, "a chunk")
                piece = bytes(self._buffer[:size])
                del self._buffer[: len(piece)]
                size -= len(piece)
                yield piece
            while len(self._buffer) < 2:
                await self._fill(request, "a chunk's end")
            if self._buffer[:2] != b"\r\n":
                raise _error("RemoteProtocolError", "bad chunk end", request)
            del self._buffer[:2]

    async def _line(self, request: Any, limit: int, what: str) -> bytes:
        """The next CRLF-ended line, at most ``limit`` bytes long."""
        while (end := self._buffer.find(b"\r\n", 0, limit + 2)) < 0:
            if len(self._buffer) >= limit + 2:
                raise _error("RemoteProtocolError", f"line too long in {what}", request)
            await self._fill(request, what)
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 2]
        return line

    async def _until_closed(
        self, request: Any
    ) -> AsyncGenerator[bytes, None]:
        if self._buffer:
            data = bytes(self._buffer)
            self._buffer.clear()
            yield data
        while data := await self._receive(request):
            yield data


def _fields(lines: list[bytes], request: Any) -> list[tuple[bytes, bytes]]:
    """Field lines (headers or trailers) as ``(name, value)``."""
    fields = []
    for line in lines:
        match = _FIELD_LINE.fullmatch(line)
        if match is None:
            raise _error("RemoteProtocolError", f"bad header line: {line[:100]!r}", request)
        fields.append((match[1], match[2]))
    return fields
