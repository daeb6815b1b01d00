"""A small ASGI server for HTTP/1.1 on trio and h11: what the dev relay needs.

    await nursery.start(serve_asgi, app, listening_socket)

It serves one ASGI 3 application (``http`` scope only; no lifespan, no
websockets) on a bound socket, inside the caller's nursery:

- keep-alive, as many requests per connection as the client sends, and an
  idle connection closed after ``KEEP_ALIVE_TIMEOUT`` seconds;
- ``TCP_NODELAY`` on every connection, and a response whose length is known
  (``content-length``) written with its headers in one send;
- streaming responses (``more_body``) sent as they come: chunked to an
  HTTP/1.1 client, until the connection closes to an HTTP/1.0 one; the
  headers of a response without ``content-length`` go out at once, so a
  Server-Sent Events client sees them before the first event;
- ``http.disconnect`` from ``receive()`` once the request body has been
  read and the client goes away (a stream's only way to learn it);
- an application that fails before it answers gets a 500; after it has
  started answering, the connection is closed.

The request body is read whole before the application runs (at most
``MAX_BODY`` bytes: larger ones answer 413). Why not hypercorn: the dev relay
spent about 0.75 ms of CPU per request inside hypercorn; this server spends
a tenth of that, which is what the bus benchmarks need (docs/performance.md).
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote_to_bytes

import h11
import trio

log = logging.getLogger("orchestrator.asgi")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

KEEP_ALIVE_TIMEOUT = 75.0  # an idle kept-alive connection is closed after this
MAX_BODY = 16 * 1024 * 1024
MAX_HEADERS = 64 * 1024
READ_SIZE = 65536


async def serve_asgi(
    app: ASGIApp,
    sock: socket.socket,
    *,
    ssl_context: ssl.SSLContext | None = None,
    backlog: int = 1024,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on the bound socket ``sock`` until cancelled; starts with its URL.

    With ``ssl_context`` (server side) every connection speaks TLS: https."""
    sock.listen(backlog)
    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    scheme = "http" if ssl_context is None else "https"
    async with listener, trio.open_nursery() as nursery:
        task_status.started(f"{scheme}://{shown}:{port}")
        while True:
            tcp = await listener.accept()
            stream: trio.abc.Stream = tcp
            if ssl_context is not None:
                stream = trio.SSLStream(tcp, ssl_context, server_side=True)
            nursery.start_soon(_Connection(app, stream, tcp.socket, scheme).run)


class _ClientGone(Exception):
    """The client closed the connection or broke the protocol."""


class _Connection:
    def __init__(self, app: ASGIApp, stream: trio.abc.Stream, sock: trio.socket.SocketType,
                 scheme: str) -> None:
        self._app = app
        self._stream = stream
        self._scheme = scheme
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADERS)
        self._client = _address(sock.getpeername())
        self._server = _address(sock.getsockname())

    async def run(self) -> None:
        try:
            async with self._stream:
                while await self._one_request():
                    pass
        except (_ClientGone, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except OSError as exc:  # ECONNRESET and friends
            log.debug("connection from %s ended: %s", self._client, exc)

    async def _next_event(self, *, idle: bool) -> Any:
        conn = self._h11
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                await self._refuse(exc)
                raise _ClientGone from exc
            if event is not h11.NEED_DATA:
                return event
            if idle:
                with trio.move_on_after(KEEP_ALIVE_TIMEOUT):
                    data = await self._stream.receive_some(READ_SIZE)
                    idle = False
                if idle:  # nothing came: close quietly
                    raise _ClientGone
            else:
                data = await self._stream.receive_some(READ_SIZE)
            conn.receive_data(data)  # b"" marks the end

    async def _refuse(self, exc: h11.RemoteProtocolError) -> None:
        if self._h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            body = b'{"error":"bad request"}'
            status = exc.error_status_hint
            try:
                await self._stream.send_all(
                    self._h11.send(h11.Response(status_code=status, headers=[
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close")]))
                    + self._h11.send(h11.Data(data=body)) + self._h11.send(h11.EndOfMessage()))
            except (h11.LocalProtocolError, trio.BrokenResourceError, OSError):
                pass

    async def _one_request(self) -> bool:
        """Serve one request; True when the connection may carry another."""
        conn = self._h11
        event = await self._next_event(idle=True)
        if isinstance(event, h11.ConnectionClosed):
            return False
        assert isinstance(event, h11.Request), event
        body = bytearray()
        while True:
            part = await self._next_event(idle=False)
            if isinstance(part, h11.Data):
                body += part.data
                if len(body) > MAX_BODY:
                    await self._answer_plain(413, b'{"error":"request body too large"}')
                    return False
            elif isinstance(part, h11.EndOfMessage):
                break
            else:  # ConnectionClosed in the middle of a body
                return False
        exchange = _Exchange(self, event, bytes(body))
        await exchange.run()
        if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
            return False
        if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            return False
        conn.start_next_cycle()
        return True

    async def _answer_plain(self, status: int, body: bytes) -> None:
        conn = self._h11
        await self._stream.send_all(
            conn.send(h11.Response(status_code=status, headers=[
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode())]))
            + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))

    def scope(self, request: h11.Request) -> Scope:
        target = bytes(request.target)
        raw_path, _, query = target.partition(b"?")
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": request.http_version.decode(),
            "method": request.method.decode(),
            "scheme": self._scheme,
            "path": unquote_to_bytes(raw_path).decode("utf-8", "replace"),
            "raw_path": raw_path,
            "query_string": query,
            "root_path": "",
            "headers": [(name, value) for name, value in request.headers],
            "client": self._client,
            "server": self._server,
        }


class _Exchange:
    """One request and its response: the ASGI ``receive`` and ``send``."""

    def __init__(self, connection: _Connection, request: h11.Request, body: bytes) -> None:
        self._connection = connection
        self._request = request
        self._body: bytes | None = body
        self._pending_head: bytes | None = None  # headers held back to go with the body
        self._started = False
        self._finished = False
        self._disconnected = False
        self._head_only = request.method == b"HEAD"

    async def run(self) -> None:
        connection = self._connection
        try:
            await connection._app(connection.scope(self._request), self.receive, self.send)
        except Exception as exc:
            if _client_gone(exc):
                raise _ClientGone from None
            log.exception("the ASGI application failed on %s %s",
                          self._request.method.decode(), bytes(self._request.target).decode())
            if not self._started:
                await connection._answer_plain(500, b'{"error":"internal server error"}')
                return
            raise _ClientGone from None
        if not self._finished:
            if not self._started:  # the app returned without answering
                await connection._answer_plain(500, b'{"error":"no response"}')
                return
            raise _ClientGone  # a response cut short: the client must not wait for more

    async def receive(self) -> Message:
        if self._body is not None:
            body, self._body = self._body, None
            return {"type": "http.request", "body": body, "more_body": False}
        if not self._disconnected and not self._finished:
            await self._wait_for_close()
        return {"type": "http.disconnect"}

    async def _wait_for_close(self) -> None:
        """Read until the client goes away (a request that follows is kept for later)."""
        stream = self._connection._stream
        conn = self._connection._h11
        try:
            while True:
                data = await stream.receive_some(READ_SIZE)
                if not data:
                    break
                conn.receive_data(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        self._disconnected = True

    async def send(self, message: Message) -> None:
        kind = message["type"]
        conn = self._connection._h11
        if kind == "http.response.start":
            if self._started:
                raise RuntimeError("http.response.start sent twice")
            self._started = True
            headers = list(message.get("headers", ()))
            head = conn.send(h11.Response(status_code=message["status"], headers=headers))
            if any(name.lower() == b"content-length" for name, _ in headers):
                self._pending_head = head  # goes out with the body, in one send
            else:
                await self._write(head)
        elif kind == "http.response.body":
            if not self._started or self._finished:
                raise RuntimeError("http.response.body outside a response")
            body = message.get("body", b"")
            out = self._pending_head or b""
            self._pending_head = None
            if body and not self._head_only:
                out += conn.send(h11.Data(data=body))
            if not message.get("more_body", False):
                out += conn.send(h11.EndOfMessage())
                self._finished = True
            if out:
                await self._write(out)
        else:
            raise RuntimeError(f"unsupported ASGI message: {kind}")

    async def _write(self, data: bytes) -> None:
        if self._disconnected:
            raise _ClientGone
        try:
            await self._connection._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            self._disconnected = True
            raise _ClientGone from None


def _client_gone(exc: BaseException) -> bool:
    """Whether ``exc`` (or every exception in its group) says the client went away."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_client_gone(inner) for inner in exc.exceptions)
    return isinstance(exc, (_ClientGone, trio.BrokenResourceError, trio.ClosedResourceError))


def _address(address: Any) -> tuple[str, int] | None:
    if isinstance(address, tuple) and len(address) >= 2:
        return str(address[0]), int(address[1])
    return None
