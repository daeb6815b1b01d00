"""A lean httpx transport for a plain-HTTP (``http://``) relay: HTTP/1.1 on trio sockets.

The relay client stays on one ``httpx.AsyncClient``; for an ``http://``
relay that client gets this transport instead of httpx's default (httpcore),
which spends about 0.6 ms of CPU per request on connection-pool bookkeeping,
cancel scopes and stream wrappers: more than the whole bus may take per
command (docs/performance.md). An ``https://`` relay keeps httpx's own
transport (TLS, certificate checks).

What it does, and no more:

- keep-alive connections, at most ``max_connections`` at once, idle ones
  reused newest first and checked before reuse (one that turned readable
  while idle was closed by the server, and is dropped);
- ``TCP_NODELAY``, and each request (head and body) written in one send;
- a response with ``content-length`` is read whole before it is returned;
  a chunked one (a Server-Sent Events stream) or one that ends with the
  connection is handed over as it arrives;
- errors as httpx's own: ``ConnectError``, ``WriteError``, ``ReadError``,
  ``RemoteProtocolError``. A request cancelled half way closes its
  connection (its state is unknown); nothing is retried here.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import httpx
import trio

READ_SIZE = 65536
MAX_HEAD = 64 * 1024
_NO_BODY_STATUS = (204, 304)


class PlainHTTPTransport(httpx.AsyncBaseTransport):
    def __init__(self, *, max_connections: int = 32, max_idle: int = 16) -> None:
        self._limit = trio.Semaphore(max_connections)
        self._max_idle = max_idle
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "http":
            raise httpx.UnsupportedProtocol(
                f"PlainHTTPTransport speaks http:// only, not {url.scheme}://", request=request
            )
        await self._limit.acquire()
        released = False
        try:
            data = _request_bytes(request, await request.aread())
            key = (url.host, url.port or 80)
            conn = self._idle_connection(key)
            if conn is None:
                conn = await _Connection.open(key, request)
            try:
                await conn.send(data, request)
                response = await conn.read_response(request, self)
            except BaseException:
                conn.close()
                raise
            released = True  # the response's stream releases it
            return response
        finally:
            if not released:
                self._limit.release()

    async def exchange(
        self, key: tuple[str, int], data: bytes, *, head_only: bool = False
    ) -> tuple[int, bytes]:
        """One request, already rendered (``data``: head and body), its answer
        read whole: ``(status, body)``. The relay client's hot path: no httpx
        Request or Response objects (their URL and header handling cost more
        than the exchange itself on loopback). Errors as ``handle_async_request``.
        """
        await self._limit.acquire()
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


def _request_bytes(request: httpx.Request, body: bytes) -> bytes:
    parts = [request.method.encode("ascii"), b" ", request.url.raw_path, b" HTTP/1.1\r\n"]
    length_given = False
    for name, value in request.headers.raw:
        lowered = name.lower()
        if lowered == b"transfer-encoding":
            continue  # the body is sent whole, with its length
        if lowered == b"content-length":
            length_given = True
        parts += (name, b": ", value, b"\r\n")
    if not length_given and (body or request.method not in ("GET", "HEAD")):
        parts += (b"Content-Length: ", str(len(body)).encode("ascii"), b"\r\n")
    parts += (b"\r\n", body)
    return b"".join(parts)


def _framing(
    headers: list[tuple[bytes, bytes]], version: bytes, request: httpx.Request | None
) -> tuple[int | None, bool, bool]:
    """How the body is framed: ``(content-length, chunked, keep-alive)``."""
    length: int | None = None
    chunked = False
    keep_alive = version == b"HTTP/1.1"
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"content-length":
            # digits only (RFC 9112), and a repeated header must agree
            if not value.isdigit() or (length is not None and length != int(value)):
                raise httpx.RemoteProtocolError("bad content-length", request=request)
            length = int(value)
        elif lowered == b"transfer-encoding":
            chunked = value.strip().lower().endswith(b"chunked")
        elif lowered == b"connection":
            tokens = value.lower()
            if b"close" in tokens:
                keep_alive = False
            elif b"keep-alive" in tokens:
                keep_alive = True
    return length, chunked, keep_alive


class _Connection:
    def __init__(self, key: tuple[str, int], stream: trio.SocketStream) -> None:
        self.key = key
        self._stream = stream
        self._buffer = bytearray()
        self._closed = False

    @classmethod
    async def open(cls, key: tuple[str, int], request: httpx.Request | None) -> _Connection:
        try:
            stream = await trio.open_tcp_stream(*key)  # sets TCP_NODELAY
        except OSError as exc:
            raise httpx.ConnectError(str(exc) or repr(exc), request=request) from exc
        return cls(key, stream)

    def usable(self) -> bool:
        """An idle connection the server has not closed (nor written to)."""
        if self._closed or self._buffer:
            return False
        try:
            return not self._stream.socket.is_readable()
        except OSError:
            return False

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._stream.socket.close()

    async def send(self, data: bytes, request: httpx.Request | None) -> None:
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise httpx.WriteError(str(exc) or repr(exc), request=request) from exc

    async def _receive(self, request: httpx.Request | None) -> bytes:
        try:
            return await self._stream.receive_some(READ_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise httpx.ReadError(str(exc) or repr(exc), request=request) from exc

    async def _fill(self, request: httpx.Request | None, what: str) -> None:
        data = await self._receive(request)
        if not data:
            raise httpx.RemoteProtocolError(
                f"Server disconnected without sending {what}.", request=request
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

    async def _read_sized(self, request: httpx.Request | None, length: int) -> bytes:
        while len(self._buffer) < length:
            await self._fill(request, "the whole response body")
        body = bytes(self._buffer[:length])
        del self._buffer[:length]
        return body

    async def _final_head(
        self, request: httpx.Request | None
    ) -> tuple[int, bytes, bytes, list[tuple[bytes, bytes]]]:
        while True:
            head = await self._read_head(request)
            if not 100 <= head[0] < 200 or head[0] == 101:
                return head

    async def read_response(
        self, request: httpx.Request, transport: PlainHTTPTransport
    ) -> httpx.Response:
        status, reason, version, headers = await self._final_head(request)
        length, chunked, keep_alive = _framing(headers, version, request)
        extensions: dict[str, Any] = {"http_version": version, "reason_phrase": reason}
        if request.method == "HEAD" or status in _NO_BODY_STATUS:
            length, chunked = 0, False  # ends at the head, whatever it announces
        if length is not None and not chunked:
            body = await self._read_sized(request, length)
            transport._done_with(self, keep_alive)
            return httpx.Response(status, headers=headers, content=body, extensions=extensions)
        stream = _ResponseStream(
            self._chunked(request) if chunked else self._until_closed(request),
            self, transport, keep_alive and chunked,
        )
        return httpx.Response(status, headers=headers, stream=stream, extensions=extensions)

    async def _read_head(
        self, request: httpx.Request | None
    ) -> tuple[int, bytes, bytes, list[tuple[bytes, bytes]]]:
        while (end := self._buffer.find(b"\r\n\r\n")) < 0:
            if len(self._buffer) > MAX_HEAD:
                raise httpx.RemoteProtocolError("response head too large", request=request)
            await self._fill(request, "a response")
        head = bytes(self._buffer[:end])
        del self._buffer[: end + 4]
        lines = head.split(b"\r\n")
        try:
            version, status, *rest = lines[0].split(b" ", 2)
            code = int(status)
        except ValueError:
            raise httpx.RemoteProtocolError(
                f"bad status line: {lines[0][:100]!r}", request=request
            ) from None
        if not version.startswith(b"HTTP/1."):
            raise httpx.RemoteProtocolError(f"not HTTP/1.x: {version[:20]!r}", request=request)
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip():
                raise httpx.RemoteProtocolError(
                    f"bad header line: {line[:100]!r}", request=request
                )
            headers.append((name, value.strip()))
        return code, rest[0] if rest else b"", version, headers

    async def _chunked(self, request: httpx.Request | None) -> AsyncGenerator[bytes, None]:
        while True:
            while (end := self._buffer.find(b"\r\n")) < 0:
                await self._fill(request, "a chunk")
            size_line = bytes(self._buffer[:end]).split(b";", 1)[0].strip()
            del self._buffer[: end + 2]
            try:
                size = int(size_line, 16)
            except ValueError:
                raise httpx.RemoteProtocolError("bad chunk size", request=request) from None
            if size == 0:
                while (end := self._buffer.find(b"\r\n")) != 0:  # trailers, then a blank line
                    if end > 0:
                        del self._buffer[: end + 2]
                    else:
                        await self._fill(request, "the end of a chunked body")
                del self._buffer[:2]
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
                raise httpx.RemoteProtocolError("bad chunk end", request=request)
            del self._buffer[:2]

    async def _until_closed(
        self, request: httpx.Request | None
    ) -> AsyncGenerator[bytes, None]:
        if self._buffer:
            data = bytes(self._buffer)
            self._buffer.clear()
            yield data
        while data := await self._receive(request):
            yield data


class _ResponseStream(httpx.AsyncByteStream):
    """A body read as it arrives; closing it gives the connection back (or closes it)."""

    def __init__(
        self,
        parts: AsyncGenerator[bytes, None],
        conn: _Connection,
        transport: PlainHTTPTransport,
        keep_alive: bool,
    ) -> None:
        self._parts = parts
        self._conn = conn
        self._transport = transport
        self._keep_alive = keep_alive
        self._complete = False
        self._released = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for part in self._parts:
                yield part
        except BaseException:
            self._conn.close()
            raise
        self._complete = True

    async def aclose(self) -> None:
        if not self._released:
            self._released = True
            if not self._complete:
                self._conn.close()
                await self._parts.aclose()
            self._transport._done_with(self._conn, self._keep_alive and self._complete)
