"""A small ASGI server for HTTP/1.1 on trio: what the dev relay needs.

    url = await nursery.start(serve_asgi, app, bound_socket)

It serves one ASGI 3 application (``http`` scope only; no lifespan, no
websockets) on a bound socket, inside the caller's nursery:

- keep-alive, as many requests per connection as the client sends, and an
  idle connection closed after ``KEEP_ALIVE_TIMEOUT`` seconds (an HTTP/1.0
  client gets one request a connection: h11 keeps no 1.0 connection alive);
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

HTTP/1.1 itself (parsing requests, framing responses, keep-alive) is h11's:
this module only moves bytes between the socket and an ``h11.Connection``,
and adds what h11 leaves to its user: the deadlines, a bound on the body
(``MAX_BODY``; the head and trailers are bounded by h11, ``MAX_HEAD``), and
three refusals RFC 9112 allows and h11 does not make (an HTTP version other
than 1.x, ``transfer-encoding`` on HTTP/1.0, both ``transfer-encoding`` and
``content-length``). A request is read whole before the application runs.
The dev relay is a tool: it has no CPU budget that would justify a parser
of its own (docs/performance.md).
"""

from __future__ import annotations

import http
import json
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote_to_bytes

import h11
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
MAX_HEAD = 64 * 1024  # a request's head, or a chunked body's trailers
_REASONS = {status.value: status.phrase.encode() for status in http.HTTPStatus}
_NO_BODY_STATUS = (204, 304)


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


def _bytes(data: bytes | None) -> bytes:
    """What ``h11.Connection.send`` gave (None only for ``ConnectionClosed``)."""
    return data or b""


class _Connection:
    def __init__(self, app: ASGIApp, stream: trio.SSLStream[Any] | RawSocketStream,
                 peer: Any, own: Any, scheme: str) -> None:
        self._app = app
        self.stream = stream
        self._scheme = scheme
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self.eof = False  # the client closed its side
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

    async def receive(self) -> None:
        """Hand h11 what the client sends next (its end, once it closes)."""
        data = await self.stream.receive_some(READ_SIZE)
        self.h11.receive_data(bytes(data))  # a TLS stream may give a bytearray
        if not data:
            self.eof = True

    async def _next_event(self) -> Any:
        while (event := self.h11.next_event()) is h11.NEED_DATA:
            await self.receive()
        return event

    async def _one_request(self) -> bool:
        """Serve one request; True when the connection may carry another."""
        if not self.h11.trailing_data[0]:  # nothing of the next request yet
            with trio.move_on_after(KEEP_ALIVE_TIMEOUT) as idle:
                await self.receive()
            if idle.cancelled_caught:
                raise _Gone
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

    async def _read_request(self) -> tuple[h11.Request, bytes]:
        """The next request and its whole body; ``_BadRequest`` when it cannot
        be served, ``_Gone`` when the client left before sending it all."""
        try:
            request = await self._next_event()
            if not isinstance(request, h11.Request):  # ConnectionClosed: between requests
                raise _Gone
            _check(request)
            if self.h11.they_are_waiting_for_100_continue:
                await self.stream.send_all(_bytes(self.h11.send(
                    h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue"))))
            body = bytearray()
            while isinstance(event := await self._next_event(), h11.Data):
                body += event.data
                if len(body) > MAX_BODY:
                    raise _BadRequest(413, "request body too large")
        except h11.RemoteProtocolError as exc:
            if self.eof:
                raise _Gone from None  # cut short: nobody to answer
            raise _BadRequest(exc.error_status_hint, str(exc)) from None
        return request, bytes(body)

    async def refuse(self, status: int, message: str, *, with_body: bool = True) -> None:
        """An error answer, then the connection closes; nothing if a response
        has already begun."""
        if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = json.dumps({"error": message}).encode() if with_body else b""
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", b"%d" % len(body)), (b"connection", b"close")]
        try:
            data = _bytes(self.h11.send(
                h11.Response(status_code=status, headers=headers,
                             reason=_REASONS.get(status, b""))))
            if body:
                data += _bytes(self.h11.send(h11.Data(data=body)))
            data += _bytes(self.h11.send(h11.EndOfMessage()))
            await self.stream.send_all(data)
        except (h11.LocalProtocolError, trio.BrokenResourceError, trio.ClosedResourceError,
                OSError):
            pass

    def next_cycle(self) -> bool:
        """After a response: ready for the next request on this connection, or not."""
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
            return True
        return False

    def scope(self, request: h11.Request) -> Scope:
        raw_path, _, query = request.target.partition(b"?")
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": request.http_version.decode("ascii"),
            "method": request.method.decode("ascii"),
            "scheme": self._scheme,
            "path": unquote_to_bytes(raw_path).decode("utf-8", "replace"),
            "raw_path": raw_path,
            "query_string": query,
            "root_path": "",
            "headers": list(request.headers),
            "client": self._client,
            "server": self._server,
        }


def _check(request: h11.Request) -> None:
    """What h11 lets through and this server refuses (RFC 9112 allows both)."""
    if request.http_version not in (b"1.1", b"1.0"):
        raise _BadRequest(505, "HTTP version not supported")
    length = chunked = False
    for name, value in request.headers:
        if name == b"content-length":
            length = True
            if int(value) > MAX_BODY:  # h11 has checked it is digits
                raise _BadRequest(413, "request body too large")
        elif name == b"transfer-encoding":
            chunked = True
    if chunked and request.http_version == b"1.0":  # RFC 9112 6.1: faulty framing
        raise _BadRequest(400, "transfer-encoding on HTTP/1.0")
    if chunked and length:  # RFC 9112 6.3: smuggling, maybe
        raise _BadRequest(400, "both content-length and transfer-encoding")


class _Exchange:
    """One request and its response: the ASGI ``receive`` and ``send``."""

    def __init__(self, connection: _Connection, request: h11.Request, body: bytes) -> None:
        self._connection = connection
        self._request = request
        self._body: bytes | None = body
        self._head_only = request.method == b"HEAD"
        self._pending_head: bytes | None = None  # headers held back to go with the body
        self._started = False
        self._finished = False
        self._disconnected = False

    async def run(self) -> bool:
        """Run the application; True when the connection may carry another request."""
        connection = self._connection
        scope = connection.scope(self._request)
        try:
            await connection._app(scope, self.receive, self.send)
        except Exception as exc:
            if _client_gone(exc):
                raise _Gone from None
            log.exception("the ASGI application failed on %s %s", scope["method"],
                          self._request.target.decode("latin-1"))
            if not self._started:
                await connection.refuse(500, "internal server error",
                                        with_body=not self._head_only)
            return False
        if not self._finished:
            if not self._started:  # the app returned without answering
                await connection.refuse(500, "no response", with_body=not self._head_only)
            return False  # a response cut short: the client must not wait for more
        return not self._disconnected and connection.next_cycle()

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
            while not connection.eof:
                await connection.receive()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        self._disconnected = True

    async def send(self, message: Message) -> None:
        kind = message["type"]
        h11_connection = self._connection.h11
        if kind == "http.response.start":
            if self._started:
                raise RuntimeError("http.response.start sent twice")
            self._started = True
            status = message["status"]
            headers = list(message.get("headers", ()))
            if status in _NO_BODY_STATUS:
                self._head_only = True
            head = _bytes(h11_connection.send(
                h11.Response(status_code=status, headers=headers,
                             reason=_REASONS.get(status, b""))))
            if any(name.lower() == b"content-length" for name, _ in headers):
                self._pending_head = head  # sent with the body, in one send
            else:
                await self._write(head)
        elif kind == "http.response.body":
            if not self._started or self._finished:
                raise RuntimeError("http.response.body outside a response")
            body = message.get("body", b"")
            out = self._pending_head or b""
            self._pending_head = None
            if body and not self._head_only:
                out += _bytes(h11_connection.send(h11.Data(data=body)))
            if not message.get("more_body", False):
                out += _bytes(h11_connection.send(h11.EndOfMessage()))
                self._finished = True
            if out:
                await self._write(out)
        else:
            raise RuntimeError(f"unsupported ASGI message: {kind}")

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
