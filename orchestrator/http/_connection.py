"""One HTTP/1.1 client connection and its framing (RFC 9112, no more lenient
than h11), and the pool that hands connections out: what ``PlainHTTPTransport``
and its httpx adapter (``_httpx.py``) share. Errors are httpx's own kinds
(``http_error``), httpx loaded only when one is raised."""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator
from typing import Any

import attrs
import trio

from ._sockets import READ_SIZE, RawSocketStream

MAX_HEAD = 64 * 1024  # a response head; the trailers of a chunked body too
MAX_CHUNK_LINE = 4096  # a chunk-size line, extensions included
NO_BODY_STATUS = (204, 304)
# RFC 9112 (as h11 reads it): a status line, a field line, a chunk-size line.
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: ([^\x00\n\r\x0b\x0c]*))?")
_FIELD_LINE = re.compile(
    rb"([-!#$%&'*+.^_`|~0-9a-zA-Z]+):[ \t]*"
    rb"((?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?)[ \t]*"
)
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:;[^\n]*)?[ \t]*")


def http_error(kind: str, message: str, request: Any) -> Exception:
    """httpx's exception ``kind`` (``ConnectError``…), httpx loaded only now."""
    import httpx

    error: Exception = getattr(httpx, kind)(message, request=request)
    return error


def framing(
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
                raise http_error("RemoteProtocolError", "bad content-length", request)
            length = int(given)
        elif lowered == b"transfer-encoding":
            if chunked or value.strip().lower() != b"chunked":
                raise http_error("RemoteProtocolError", "unsupported transfer-encoding", request)
            if version != b"HTTP/1.1":
                raise http_error("RemoteProtocolError", "transfer-encoding on HTTP/1.0", request)
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


class Connection:
    def __init__(self, key: tuple[str, int], stream: RawSocketStream) -> None:
        self.key = key
        self._stream = stream
        self._buffer = bytearray()

    @property
    def closed(self) -> bool:
        return self._stream.closed

    @classmethod
    async def open(cls, key: tuple[str, int], request: Any) -> Connection:
        try:
            stream = await trio.open_tcp_stream(*key)  # sets TCP_NODELAY
        except OSError as exc:
            raise http_error("ConnectError", str(exc) or repr(exc), request) from exc
        return cls(key, RawSocketStream.detach(stream))

    def usable(self) -> bool:
        """An idle connection the server has not closed (nor written to)."""
        if self.closed or self._buffer:
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
            raise http_error("WriteError", str(exc) or repr(exc), request) from exc

    async def _receive(self, request: Any) -> bytes:
        try:
            return await self._stream.receive_some(READ_SIZE)
        except (trio.ClosedResourceError, OSError) as exc:
            raise http_error("ReadError", str(exc) or repr(exc), request) from exc

    async def _fill(self, request: Any, what: str) -> None:
        data = await self._receive(request)
        if not data:
            raise http_error(
                "RemoteProtocolError", f"Server disconnected without sending {what}.", request
            )
        self._buffer += data

    async def read_whole(self, head_only: bool) -> tuple[int, bytes, bool]:
        """The next response, body and all: ``(status, body, keep_alive)``."""
        status, _reason, version, headers = await self.final_head(None)
        length, chunked, keep_alive = framing(headers, version, None)
        if head_only or status in NO_BODY_STATUS:
            length, chunked = 0, False  # ends at the head, whatever it announces
        if length is not None and not chunked:
            return status, await self.read_sized(None, length), keep_alive
        parts = self.read_chunked(None) if chunked else self.read_until_closed(None)
        body = b"".join([part async for part in parts])
        return status, body, keep_alive and chunked

    async def read_sized(self, request: Any, length: int) -> bytes:
        while len(self._buffer) < length:
            await self._fill(request, "the whole response body")
        body = bytes(self._buffer[:length])
        del self._buffer[:length]
        return body

    async def final_head(
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
                raise http_error("RemoteProtocolError", "response head too large", request)
            await self._fill(request, "a response")
        head = bytes(self._buffer[:end])
        del self._buffer[: end + 4]
        lines = head.split(b"\r\n")
        status = _STATUS_LINE.fullmatch(lines[0])
        if status is None or int(status[2]) < 100:
            raise http_error("RemoteProtocolError", f"bad status line: {lines[0][:100]!r}", request)
        version = b"HTTP/1." + status[1]
        return int(status[2]), status[3] or b"", version, _fields(lines[1:], request)

    async def read_chunked(self, request: Any) -> AsyncGenerator[bytes, None]:
        while True:
            size_line = await self._line(request, MAX_CHUNK_LINE, "a chunk")
            match = _CHUNK_LINE.fullmatch(size_line)
            if match is None:
                raise http_error("RemoteProtocolError", "bad chunk size", request)
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
                raise http_error("RemoteProtocolError", "bad chunk end", request)
            del self._buffer[:2]

    async def _line(self, request: Any, limit: int, what: str) -> bytes:
        """The next CRLF-ended line, at most ``limit`` bytes long."""
        while (end := self._buffer.find(b"\r\n", 0, limit + 2)) < 0:
            if len(self._buffer) >= limit + 2:
                raise http_error("RemoteProtocolError", f"line too long in {what}", request)
            await self._fill(request, what)
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 2]
        return line

    async def read_until_closed(
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
            raise http_error("RemoteProtocolError", f"bad header line: {line[:100]!r}", request)
        fields.append((match[1], match[2]))
    return fields


@attrs.define(eq=False)
class Pool:
    """Connection slots (at most ``max_connections`` at once) and idle
    keep-alive connections per host, newest reused first."""

    max_connections: int
    max_idle: int
    _limit: trio.Semaphore = attrs.field(init=False)
    _idle: dict[tuple[str, int], list[Connection]] = attrs.field(init=False, factory=dict)
    _closed: bool = attrs.field(init=False, default=False)

    def __attrs_post_init__(self) -> None:
        self._limit = trio.Semaphore(self.max_connections)

    def release(self) -> None:
        """A slot taken by ``acquire`` and given back without a connection."""
        self._limit.release()

    async def acquire(self) -> None:
        """A connection slot; one free is taken without a trip through the
        scheduler (``Semaphore.acquire`` yields even when it need not wait)."""
        try:
            self._limit.acquire_nowait()
        except trio.WouldBlock:
            await self._limit.acquire()

    def idle_connection(self, key: tuple[str, int]) -> Connection | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if conn.usable():
                return conn
            conn.close()
        return None

    def done_with(self, conn: Connection, reusable: bool) -> None:
        """A response is over: its connection back to the idle list, or closed."""
        self._limit.release()
        idle = self._idle.setdefault(conn.key, [])
        if reusable and not self._closed and len(idle) < self.max_idle:
            idle.append(conn)
        else:
            conn.close()

    async def aclose(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()


