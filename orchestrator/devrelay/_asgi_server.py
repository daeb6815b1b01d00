"""A small ASGI server for HTTP/1.1 on trio: what the dev relay needs.

    url = await nursery.start(serve_asgi, app, bound_socket)

It serves one ASGI 3 application (``http`` scope only; no lifespan, no
websockets) on a bound socket, inside the caller's nursery:

- keep-alive, as many requests per connection as the client sends, and an
  idle connection closed after ``KEEP_ALIVE_TIMEOUT`` seconds;
- bounds for a client on the network (``relay --host 0.0.0.0``): once its
  first byte is in, a request's head and body must arrive within
  ``REQUEST_TIMEOUT`` (else 408 and the connection closes), a TLS handshake
  within ``HANDSHAKE_TIMEOUT``, and at most ``max_connections`` are served
  at once (more wait to be accepted; a warning says the limit is reached);
- ``TCP_NODELAY`` on every connection, and a response whose length is known
  (``content-length``) written with its headers in one send;
- streaming responses (``more_body``) sent as they come: chunked to an
  HTTP/1.1 client, until the connection closes to an HTTP/1.0 one; the
  headers of a response without ``content-length`` go out at once, so a
  Server-Sent Events client sees them before the first event;
- ``http.disconnect`` from ``receive()`` once the request body has been
  read and the client goes away (a stream's only way to learn it);
- an application that fails before it answers gets a 500; after it has
  started answering, the connection is closed;
- https when given a server-side ``ssl.SSLContext``.

The request is parsed here (request line, headers, a body by
``content-length`` or chunked, ``Expect: 100-continue``) and read whole
before the application runs (at most ``MAX_BODY`` bytes). Why not hypercorn,
or h11: each cost more CPU per request than the bus's budget for the relay's
side of a command (docs/performance.md, "What was removed").
"""

from __future__ import annotations

import http
import logging
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote_to_bytes

import trio

from ..http._sockets import READ_SIZE, RawSocketStream

log = logging.getLogger("relay_orchestrator.devrelay")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

KEEP_ALIVE_TIMEOUT = 75.0  # an idle kept-alive connection is closed after this
REQUEST_TIMEOUT = 30.0  # from a request's first byte to the end of its body
HANDSHAKE_TIMEOUT = 10.0  # a TLS handshake
REFUSE_TIMEOUT = 5.0  # an error answer to a client that does not read is given up
MAX_CONNECTIONS = 1024
MAX_BODY = 16 * 1024 * 1024
MAX_HEAD = 64 * 1024
_METHOD_CHARS = frozenset(
    b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)
_REASONS = {status.value: status.phrase.encode() for status in http.HTTPStatus}
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:;[^\n]*)?[ \t]*")


async def serve_asgi(
    app: ASGIApp,
    sock: socket.socket,
    *,
    ssl_context: ssl.SSLContext | None = None,
    backlog: int = 1024,
    max_connections: int = MAX_CONNECTIONS,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on the bound socket ``sock`` until cancelled; starts with its URL.

    With ``ssl_context`` (server side) every connection speaks TLS: https."""
    slots = trio.Semaphore(max_connections)
    sock.listen(backlog)
    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    scheme = "http" if ssl_context is None else "https"
    async with listener, trio.open_nursery() as nursery:
        task_status.started(f"{scheme}://{shown}:{port}")
        while True:
            if slots.value == 0:
                log.warning("%d connections open, the limit: new ones wait until one closes",
                            max_connections)
            await slots.acquire()
            try:
                tcp = await listener.accept()
            except BaseException:
                slots.release()
                raise
            peer, own = tcp.socket.getpeername(), tcp.socket.getsockname()
            stream: trio.SSLStream[Any] | RawSocketStream
            if ssl_context is not None:
                stream = trio.SSLStream(tcp, ssl_context, server_side=True)
            else:  # the socket itself: no checkpoints around every send and receive
                stream = RawSocketStream.detach(tcp)
            nursery.start_soon(_Connection(app, stream, peer, own, scheme).run, slots)


class _Gone(Exception):
    """The connection is over: the client left, or must not be answered further."""


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Connection:
    def __init__(self, app: ASGIApp, stream: trio.SSLStream[Any] | RawSocketStream,
                 peer: Any, own: Any, scheme: str) -> None:
        self._app = app
        self.stream = stream
        self._scheme = scheme
        self.buffer = bytearray()
        self._client = _address(peer)
        self._server = _address(own)

    async def run(self, slots: trio.Semaphore) -> None:
        try:
            async with self.stream:
                if isinstance(self.stream, trio.SSLStream):
                    with trio.move_on_after(HANDSHAKE_TIMEOUT) as late:
                        await self.stream.do_handshake()
                    if late.cancelled_caught:
                        log.debug("TLS handshake from %s took too long", self._client)
                        return
                while await self._one_request():
                    pass
        except (_Gone, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except OSError as exc:  # ECONNRESET and friends
            log.debug("connection from %s ended: %s", self._client, exc)
        finally:
            slots.release()

    async def _fill(self) -> None:
        data = await self.stream.receive_some(READ_SIZE)
        if not data:
            raise _Gone
        self.buffer += data

    async def _line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            if len(self.buffer) > MAX_HEAD:
                raise _BadRequest(431, "request head too large")
            await self._fill()
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 2]
        return line

    async def _one_request(self) -> bool:
        """Serve one request; True when the connection may carry another."""
        if not self.buffer:
            with trio.move_on_after(KEEP_ALIVE_TIMEOUT):
                await self._fill()
            if not self.buffer:
                raise _Gone  # idle too long
        try:
            with trio.move_on_after(REQUEST_TIMEOUT) as late:
                request = await self._read_request()
            if late.cancelled_caught:
                raise _BadRequest(408, "request not received in time")
        except _BadRequest as exc:
            with trio.move_on_after(REFUSE_TIMEOUT):
                await self.refuse(exc.status, str(exc))
            return False
        return await _Exchange(self, *request).run()

    async def _read_request(
        self,
    ) -> tuple[bytes, bytes, bytes, list[tuple[bytes, bytes]], bytes, bool]:
        """The next request, read whole: ``(method, target, version, headers, body,
        keep_alive)``; ``_BadRequest`` when it cannot be served."""
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            if len(self.buffer) > MAX_HEAD:
                raise _BadRequest(431, "request head too large")
            await self._fill()
        head = bytes(self.buffer[:end])
        del self.buffer[: end + 4]
        method, target, version, headers = _parse_head(head)
        keep_alive = version == b"HTTP/1.1"
        length = chunked = None
        expect_continue = False
        for name, value in headers:
            if name == b"content-length":
                if length is not None or not value.isdigit():
                    raise _BadRequest(400, "bad content-length")
                length = int(value)
            elif name == b"transfer-encoding":
                if chunked or value.lower() != b"chunked":
                    raise _BadRequest(501, "unsupported transfer-encoding")
                if version != b"HTTP/1.1":  # RFC 9112 6.1: faulty framing
                    raise _BadRequest(400, "transfer-encoding on HTTP/1.0")
                chunked = True
            elif name == b"connection":
                tokens = value.lower()
                if b"close" in tokens:
                    keep_alive = False
                elif b"keep-alive" in tokens:
                    keep_alive = True
            elif name == b"expect":
                expect_continue = value.lower() == b"100-continue"
        if length is not None and chunked:
            raise _BadRequest(400, "both content-length and transfer-encoding")
        if (length or chunked) and expect_continue and version == b"HTTP/1.1":
            await self.stream.send_all(b"HTTP/1.1 100 Continue\r\n\r\n")
        if chunked:
            body = await self._chunked_body()
        else:
            length = length or 0
            if length > MAX_BODY:
                raise _BadRequest(413, "request body too large")
            while len(self.buffer) < length:
                await self._fill()
            body = bytes(self.buffer[:length])
            del self.buffer[:length]
        return method, target, version, headers, body, keep_alive

    async def _chunked_body(self) -> bytes:
        body = bytearray()
        while True:
            match = _CHUNK_LINE.fullmatch(await self._line())
            if match is None:
                raise _BadRequest(400, "bad chunk size")
            size = int(match[1], 16)
            if size == 0:
                room = MAX_HEAD
                while line := await self._line():  # trailers, up to a blank line
                    room -= len(line) + 2
                    if room < 0:
                        raise _BadRequest(431, "trailers too large")
                return bytes(body)
            if len(body) + size > MAX_BODY:
                raise _BadRequest(413, "request body too large")
            while len(self.buffer) < size + 2:
                await self._fill()
            if self.buffer[size : size + 2] != b"\r\n":
                raise _BadRequest(400, "bad chunk end")
            body += self.buffer[:size]
            del self.buffer[: size + 2]

    async def refuse(self, status: int, message: str) -> None:
        body = b'{"error":"%s"}' % message.encode()
        try:
            await self.stream.send_all(
                b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                b"connection: close\r\n\r\n%s"
                % (status, _REASONS.get(status, b""), len(body), body))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass

    def scope(self, method: bytes, target: bytes, version: bytes,
              headers: list[tuple[bytes, bytes]]) -> Scope:
        raw_path, _, query = target.partition(b"?")
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1" if version == b"HTTP/1.1" else "1.0",
            "method": method.decode("ascii"),
            "scheme": self._scheme,
            "path": unquote_to_bytes(raw_path).decode("utf-8", "replace"),
            "raw_path": raw_path,
            "query_string": query,
            "root_path": "",
            "headers": headers,
            "client": self._client,
            "server": self._server,
        }


def _parse_head(head: bytes) -> tuple[bytes, bytes, bytes, list[tuple[bytes, bytes]]]:
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise _BadRequest(400, "bad request line")
    method, target, version = parts
    if not method or not _METHOD_CHARS.issuperset(method) or not target:
        raise _BadRequest(400, "bad request line")
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise _BadRequest(505, "HTTP version not supported")
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip() or b" " in name:
            raise _BadRequest(400, "bad header line")
        headers.append((name.lower(), value.strip()))
    return method, target, version, headers


class _Exchange:
    """One request and its response: the ASGI ``receive`` and ``send``."""

    def __init__(self, connection: _Connection, method: bytes, target: bytes, version: bytes,
                 headers: list[tuple[bytes, bytes]], body: bytes, keep_alive: bool) -> None:
        self._connection = connection
        self._method = method
        self._target = target
        self._version = version
        self._headers = headers
        self._body: bytes | None = body
        self._keep_alive = keep_alive
        self._pending_head: bytes | None = None  # headers held back to go with the body
        self._chunked = False
        self._started = False
        self._finished = False
        self._disconnected = False

    async def run(self) -> bool:
        """Run the application; True when the connection may carry another request."""
        connection = self._connection
        scope = connection.scope(self._method, self._target, self._version, self._headers)
        try:
            await connection._app(scope, self.receive, self.send)
        except Exception as exc:
            if _client_gone(exc):
                raise _Gone from None
            log.exception("the ASGI application failed on %s %s", self._method.decode(),
                          self._target.decode("latin-1"))
            if not self._started:
                await connection.refuse(500, "internal server error")
            return False
        if not self._finished:
            if not self._started:  # the app returned without answering
                await connection.refuse(500, "no response")
            return False  # a response cut short: the client must not wait for more
        return self._keep_alive and not self._disconnected

    async def receive(self) -> Message:
        if self._body is not None:
            body, self._body = self._body, None
            return {"type": "http.request", "body": body, "more_body": False}
        if not self._disconnected and not self._finished:
            await self._wait_for_close()
        return {"type": "http.disconnect"}

    async def _wait_for_close(self) -> None:
        """Read until the client goes away (a request that follows is kept for later)."""
        connection = self._connection
        try:
            while data := await connection.stream.receive_some(READ_SIZE):
                connection.buffer += data
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        self._disconnected = True

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self._started:
                raise RuntimeError("http.response.start sent twice")
            self._started = True
            head = self._head(message["status"], message.get("headers", ()))
            if self._pending_head is None:
                await self._write(head)
            else:
                self._pending_head = head
        elif kind == "http.response.body":
            if not self._started or self._finished:
                raise RuntimeError("http.response.body outside a response")
            body = message.get("body", b"")
            more = message.get("more_body", False)
            out = self._pending_head or b""
            self._pending_head = None
            if self._method == b"HEAD":
                body = b""
            if self._chunked:
                if body:
                    out += b"%x\r\n%s\r\n" % (len(body), body)
                if not more:
                    out += b"0\r\n\r\n"
            else:
                out += body
            if not more:
                self._finished = True
            if out:
                await self._write(out)
        else:
            raise RuntimeError(f"unsupported ASGI message: {kind}")

    def _head(self, status: int, headers: Any) -> bytes:
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b""))]
        length_given = False
        for name, value in headers:
            lowered = name.lower()
            if lowered == b"content-length":
                length_given = True
            elif lowered == b"connection" and b"close" in value.lower():
                self._keep_alive = False
            lines.append(b"%s: %s\r\n" % (name, value))
        no_body = status < 200 or status in (204, 304)
        if length_given:
            self._pending_head = b""  # marks "send the head with the body"
        elif not no_body and self._method != b"HEAD":
            if self._version == b"HTTP/1.1":
                self._chunked = True
                lines.append(b"transfer-encoding: chunked\r\n")
            else:
                self._keep_alive = False  # the body ends with the connection
        if not self._keep_alive:
            lines.append(b"connection: close\r\n")
        elif self._version == b"HTTP/1.0":
            lines.append(b"connection: keep-alive\r\n")
        lines.append(b"\r\n")
        return b"".join(lines)

    async def _write(self, data: bytes) -> None:
        if self._disconnected:
            raise _Gone
        try:
            await self._connection.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            self._disconnected = True
            raise _Gone from None


def _client_gone(exc: BaseException) -> bool:
    """Whether ``exc`` (or every exception in its group) says the client went away."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_client_gone(inner) for inner in exc.exceptions)
    return isinstance(exc, (_Gone, trio.BrokenResourceError, trio.ClosedResourceError))


def _address(address: Any) -> tuple[str, int] | None:
    if isinstance(address, tuple) and len(address) >= 2:
        return str(address[0]), int(address[1])
    return None
