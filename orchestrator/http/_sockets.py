"""A connected TCP socket read and written the way HTTP/1.1 uses it.

trio's ``SocketStream`` checkpoints twice around each send or receive that
succeeds at once, and tries every receive before waiting for it: on a
request/response connection that is a trip through the scheduler and a
failed ``recv`` (a ``BlockingIOError`` raised and caught) per call. Both the
lean transport (the relay client) and the dev relay's server sit on this
instead: a send is written as far as the socket takes it, waiting only when
it is full; a receive waits until the socket is readable first, unless the
last one filled its buffer (more is likely there already). A receive that
waits can be cancelled as usual, and ``close`` wakes it.
"""

from __future__ import annotations

import select
import socket

import trio

READ_SIZE = 65536


class RawSocketStream:
    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.socket = sock
        self.closed = False
        self._more = False  # the last receive filled its buffer

    @classmethod
    def detach(cls, stream: trio.SocketStream) -> RawSocketStream:
        """Take over the socket of a trio stream (which must not be used again)."""
        connected = stream.socket
        return cls(socket.socket(connected.family, connected.type, connected.proto,
                                 fileno=connected.detach()))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            if self.closed:
                raise trio.ClosedResourceError("the connection was closed")
            try:
                sent = self.socket.send(view)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self.socket)
            else:
                view = view[sent:]

    async def receive_some(self, max_bytes: int = READ_SIZE) -> bytes:
        """Up to ``max_bytes``; ``b""`` once the peer has closed its side."""
        while True:
            if self.closed:
                raise trio.ClosedResourceError("the connection was closed")
            if not self._more:
                await trio.lowlevel.wait_readable(self.socket)
            try:
                data = self.socket.recv(max_bytes)
            except BlockingIOError:
                self._more = False
                continue
            self._more = len(data) == max_bytes
            return data

    def is_readable(self) -> bool:
        """Data waits, or the peer closed (a kept-alive connection gone stale)."""
        poll = select.poll()
        poll.register(self.socket, select.POLLIN)
        return bool(poll.poll(0))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            trio.lowlevel.notify_closing(self.socket)
            self.socket.close()

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> RawSocketStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
