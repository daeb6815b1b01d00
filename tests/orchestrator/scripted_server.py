"""A scripted HTTP/1.1 server on loopback, and a relay client built for it.

The server is a few lines of trio on 127.0.0.1: it reads each request whole
(head and ``Content-Length`` body), records its raw bytes and the connection
it came on, and answers with the next scripted reply, byte for byte. So every
test controls exactly what goes over the wire, and sees exactly what came.
The ``server`` fixture (``conftest.py``) starts one per test.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial

import trio

from orchestrator.http._transport import PlainHTTPTransport
from orchestrator.relay._client import RelayClient, make_http_transport

WAIT = 5  # seconds: the bound on every wait of the server's


@dataclass
class Reply:
    """What the server does with one request: send ``pieces`` (each in its own
    send), then close the connection if ``close``; or never answer (``hang``)."""

    pieces: tuple[bytes, ...] = ()
    close: bool = False
    hang: bool = False
    gate: trio.Event | None = None  # answer only once this is set


def send(*pieces: bytes, close: bool = False) -> Reply:
    return Reply(pieces=pieces, close=close)


DROP = Reply(close=True)  # close the connection without answering
HANG = Reply(hang=True)  # read the request, never answer


def answer(
    obj: object = None,
    status: int = 200,
    *,
    reason: bytes = b"OK",
    headers: tuple[bytes, ...] = (),
    body: bytes | None = None,
) -> bytes:
    """A whole response with a ``Content-Length`` body (JSON of ``obj`` by default)."""
    if body is None:
        body = b"" if obj is None else json.dumps(obj).encode()
    head = [b"HTTP/1.1 %d %s" % (status, reason), *headers, b"Content-Length: %d" % len(body)]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


@dataclass
class Seen:
    """One request as the server received it."""

    conn: int  # 1 for the first connection accepted, 2 for the next...
    raw: bytes

    @property
    def head(self) -> bytes:
        return self.raw.split(b"\r\n\r\n", 1)[0]

    @property
    def line(self) -> bytes:
        return self.head.split(b"\r\n", 1)[0]

    @property
    def headers(self) -> list[tuple[str, str]]:
        out = []
        for line in self.head.split(b"\r\n")[1:]:
            name, sep, value = line.partition(b": ")
            assert sep and name and name == name.strip(), f"malformed header line {line!r}"
            out.append((name.decode("ascii").lower(), value.decode("latin-1")))
        return out

    def header(self, name: str) -> str:
        values = [value for key, value in self.headers if key == name.lower()]
        assert len(values) == 1, f"{name}: {values} in {self.head!r}"
        return values[0]

    @property
    def body(self) -> bytes:
        return self.raw.split(b"\r\n\r\n", 1)[1]


async def _read_request(stream: trio.SocketStream, buf: bytearray) -> bytes | None:
    """The next request, head and body; None when the client closed the connection."""
    while (end := buf.find(b"\r\n\r\n")) < 0:
        data = await stream.receive_some(65536)
        if not data:
            return None
        buf += data
    length = 0
    for line in bytes(buf[:end]).split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    total = end + 4 + length
    while len(buf) < total:
        data = await stream.receive_some(65536)
        if not data:
            return None
        buf += data
    raw = bytes(buf[:total])
    del buf[:total]
    return raw


@dataclass
class Server:
    port: int = 0
    replies: list[Reply] = field(default_factory=list)
    requests: list[Seen] = field(default_factory=list)
    accepted: int = 0  # connections accepted
    closed: int = 0  # connections over (closed by either side)
    leftover: list[bytes] = field(default_factory=list)  # bytes after the last whole request
    _changed: trio.Event = field(default_factory=trio.Event)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def key(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def script(self, *replies: Reply | bytes) -> None:
        self.replies += [send(r) if isinstance(r, bytes) else r for r in replies]

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        with trio.fail_after(WAIT):
            while not predicate():
                await self._changed.wait()

    async def handle(self, stream: trio.SocketStream) -> None:
        self.accepted += 1
        conn = self.accepted
        self._notify()
        buf = bytearray()
        try:
            while True:
                raw = await _read_request(stream, buf)
                if raw is None:
                    if buf:
                        self.leftover.append(bytes(buf))
                    return
                self.requests.append(Seen(conn, raw))
                self._notify()
                assert self.replies, f"unscripted request: {raw!r}"
                reply = self.replies.pop(0)
                if reply.hang:
                    await trio.sleep_forever()
                if reply.gate is not None:
                    await reply.gate.wait()
                for piece in reply.pieces:
                    await stream.send_all(piece)
                if reply.close:
                    return
        except trio.BrokenResourceError:
            return
        finally:
            self.closed += 1
            self._notify()
            await stream.aclose()  # the socket is closed before this checkpoints


async def start_server(nursery: trio.Nursery, sock: trio.socket.SocketType | None = None) -> Server:
    server = Server()
    if sock is None:
        listeners = await nursery.start(partial(trio.serve_tcp, server.handle, 0,
                                                host="127.0.0.1"))
    else:
        listeners = [trio.SocketListener(sock)]
        await nursery.start(trio.serve_listeners, server.handle, listeners)
    server.port = listeners[0].socket.getsockname()[1]
    return server


@asynccontextmanager
async def relay_client(
    base_url: str,
    *,
    token: Callable[[], str | None] = lambda: "tok",
    request_timeout: float = 10.0,
) -> AsyncIterator[RelayClient]:
    """A relay client built as ``_app.py`` builds it; closed (and its connections) after."""
    transport = make_http_transport(base_url)
    assert isinstance(transport, PlainHTTPTransport)
    async with transport:  # an http:// relay: no httpx client at all
        yield RelayClient(base_url, token, transport=transport, request_timeout=request_timeout)


async def refused_socket() -> trio.socket.SocketType:
    """A socket bound to a loopback port but not listening: connecting to it is refused."""
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))
    return sock


def chunk(data: bytes, extension: bytes = b"") -> bytes:
    return b"%x%s\r\n%s\r\n" % (len(data), extension, data)


def get(path: str = "/api/commands/cmd_1", host: str = "127.0.0.1") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
