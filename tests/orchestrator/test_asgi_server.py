"""The dev relay's HTTP server (``serve_asgi``) against malformed and slow clients.

Real sockets on loopback, a small ASGI app (it answers with the body it was
sent), and trio's ``MockClock`` for the deadlines: a client that sends part
of a head or body, a TLS handshake that never completes, more connections
than the server takes at once.
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing
import trustme

from orchestrator.devrelay._asgi_server import (
    HANDSHAKE_TIMEOUT,
    KEEP_ALIVE_TIMEOUT,
    MAX_BODY,
    MAX_HEAD,
    REQUEST_TIMEOUT,
    serve_asgi,
)

WAIT = 5  # seconds of real time for a wait that needs no deadline of the server


async def echo(scope: Any, receive: Any, send: Any) -> None:
    message = await receive()
    body = message.get("body", b"")
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


def bound_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


async def start(nursery: trio.Nursery, **kwargs: Any) -> tuple[str, int]:
    sock = bound_socket()
    await nursery.start(partial(serve_asgi, echo, sock, **kwargs))
    return sock.getsockname()[:2]


async def read_all(stream: trio.abc.ReceiveStream) -> bytes:
    """Everything the server sends until it closes the connection."""
    out = b""
    while data := await stream.receive_some(65536):
        out += data
    return out


@pytest.fixture
def warnings() -> Iterator[list[str]]:
    seen: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("relay_orchestrator.devrelay")
    logger.addHandler(handler)
    yield seen
    logger.removeHandler(handler)


async def test_a_well_formed_request_is_answered(nursery: trio.Nursery) -> None:
    address = await start(nursery)
    async with await trio.open_tcp_stream(*address) as stream:
        await stream.send_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                              b"Connection: close\r\n\r\nhi")
        with trio.fail_after(WAIT):
            answer = await read_all(stream)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\nhi")


POST = b"POST / HTTP/1.1\r\nHost: x\r\n"  # RFC 9112 3.2: an HTTP/1.1 request names its host
CHUNKED = POST + b"Transfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"GET /\r\n\r\n", b"400"),
    (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", b"505"),
    (b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", b"400"),
    (b"GET / HTTP/1.1\r\n\r\n", b"400"),  # no Host
    (b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", b"400"),
    (POST + b"Content-Length: -1\r\n\r\n", b"400"),
    (POST + b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"2\r\nhi\r\n0\r\n\r\n", b"400"),
    (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n", b"400"),
    (POST + b"Transfer-Encoding: gzip\r\n\r\n", b"501"),
    (POST + b"Content-Length: %d\r\n\r\n" % (MAX_BODY + 1), b"413"),
    (CHUNKED + b"-1\r\nhi\r\n0\r\n\r\n", b"400"),
    (CHUNKED + b"0x2\r\nhi\r\n0\r\n\r\n", b"400"),
    (CHUNKED + b"+2\r\nhi\r\n0\r\n\r\n", b"400"),
    (CHUNKED + b"2\r\nhiX\r\n0\r\n\r\n", b"400"),
    # just over the bound, all of it read before the answer (no reset loses it)
    ((b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * (MAX_HEAD // 8))[: MAX_HEAD + 1], b"431"),
    (CHUNKED + b"0\r\n" + b"X-T: 1\r\n" * (MAX_HEAD // 8 + 1), b"431"),
])
async def test_a_malformed_request_is_refused_and_the_connection_closed(
    nursery: trio.Nursery, request_bytes: bytes, status: bytes
) -> None:
    address = await start(nursery)
    async with await trio.open_tcp_stream(*address) as stream:
        await stream.send_all(request_bytes)
        with trio.fail_after(WAIT):
            answer = await read_all(stream)
    assert answer.split(b" ", 2)[:2] == [b"HTTP/1.1", status], answer[:200]
    assert b"connection: close" in answer.lower()


@pytest.mark.parametrize("partial_request", [
    b"G",
    b"GET / HTTP/1.1\r\nHost: x\r\n",
    POST + b"Content-Length: 10\r\n\r\nabc",
    CHUNKED + b"5\r\nab",
])
async def test_a_request_sent_in_part_is_given_up_after_one_deadline(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, partial_request: bytes
) -> None:
    """Before: only the wait for a request's first byte had a timeout, so a
    client that sent part of a head or body held its connection for ever."""
    address = await start(nursery)
    async with await trio.open_tcp_stream(*address) as stream:
        await stream.send_all(partial_request)
        started = trio.current_time()
        with trio.fail_after(KEEP_ALIVE_TIMEOUT * 4):
            answer = await read_all(stream)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert trio.current_time() - started == pytest.approx(REQUEST_TIMEOUT)


async def test_a_request_trickled_in_is_given_up_at_the_same_deadline(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The deadline is one for the whole request: each byte does not renew it."""
    address = await start(nursery)
    async with await trio.open_tcp_stream(*address) as stream:
        started = trio.current_time()
        head = b"GET / HTTP/1.1\r\nHost: " + b"x" * 100
        with trio.fail_after(KEEP_ALIVE_TIMEOUT * 4):
            for byte in head:
                try:
                    await stream.send_all(bytes([byte]))
                except trio.BrokenResourceError:
                    break
                await trio.sleep(1)
            answer = await read_all(stream)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert trio.current_time() - started == pytest.approx(REQUEST_TIMEOUT, abs=1.5)


async def test_an_idle_connection_is_closed_after_the_keep_alive_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    address = await start(nursery)
    async with await trio.open_tcp_stream(*address) as stream:
        started = trio.current_time()
        with trio.fail_after(KEEP_ALIVE_TIMEOUT * 4):
            assert await read_all(stream) == b""
    assert trio.current_time() - started == pytest.approx(KEEP_ALIVE_TIMEOUT)


async def test_a_tls_handshake_has_its_own_deadline(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    address = await start(nursery, ssl_context=context)
    async with await trio.open_tcp_stream(*address) as stream:
        await stream.send_all(b"\x16\x03\x01")  # the start of a ClientHello, no more
        started = trio.current_time()
        with trio.fail_after(KEEP_ALIVE_TIMEOUT * 4):
            try:
                await read_all(stream)
            except trio.BrokenResourceError:
                pass
    assert trio.current_time() - started == pytest.approx(HANDSHAKE_TIMEOUT)


async def test_tls_requests_are_still_served(nursery: trio.Nursery) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    address = await start(nursery, ssl_context=server_context)
    tcp = await trio.open_tcp_stream(*address)
    async with trio.SSLStream(tcp, client_context, server_hostname="127.0.0.1") as stream:
        await stream.send_all(POST + b"Content-Length: 2\r\nConnection: close\r\n\r\nok")
        with trio.fail_after(WAIT):
            answer = b""
            try:
                answer = await read_all(stream)
            except trio.BrokenResourceError:
                pass
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"ok")


async def test_connections_over_the_limit_wait_and_the_limit_is_logged(
    nursery: trio.Nursery, warnings: list[str]
) -> None:
    address = await start(nursery, max_connections=2)
    first = await trio.open_tcp_stream(*address)
    second = await trio.open_tcp_stream(*address)
    third = await trio.open_tcp_stream(*address)
    await third.send_all(POST + b"Content-Length: 1\r\n\r\n3")
    with trio.fail_after(WAIT):
        while not warnings:  # the server logs as it stops accepting
            await trio.testing.wait_all_tasks_blocked()
            await trio.lowlevel.checkpoint()
    assert warnings == ["2 connections open, the limit: new ones wait until one closes"]
    await trio.testing.wait_all_tasks_blocked()
    poll = select.poll()  # not served while two others hold the slots
    poll.register(third.socket, select.POLLIN)
    assert poll.poll(0) == []
    await first.aclose()  # a slot frees: the third is taken in and answered
    with trio.fail_after(WAIT):
        answer = await third.receive_some(65536)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"3")
    await second.aclose()
    await third.aclose()


# -- what the server does for a well-behaved client ---------------------------------


async def app(scope: Any, receive: Any, send: Any) -> None:
    """``/echo`` answers with the body; ``/stream`` sends two parts, the second
    once the test says so, then waits for ``http.disconnect``; ``/fail``
    raises; ``/silent`` returns without answering."""
    message = await receive()
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b"one", "more_body": True})
        await scope["state"]["go"].wait()
        await send({"type": "http.response.body", "body": b"two", "more_body": True})
        scope["state"]["after"] = await receive()
        scope["state"]["gone"].set()
        return
    if scope["path"] == "/fail":
        raise RuntimeError("the app broke")
    if scope["path"] == "/silent":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"%d" % len(message["body"]))]})
    await send({"type": "http.response.body", "body": message["body"]})


async def serve(nursery: trio.Nursery, state: dict[str, Any]) -> tuple[str, int]:
    async def with_state(scope: Any, receive: Any, send: Any) -> None:
        await app({**scope, "state": state}, receive, send)

    sock = bound_socket()
    await nursery.start(partial(serve_asgi, with_state, sock))
    return sock.getsockname()[:2]


async def read_until(stream: trio.abc.ReceiveStream, buffer: bytearray, end: bytes) -> bytes:
    """The bytes up to and including ``end`` (the rest stays in ``buffer``)."""
    while (at := buffer.find(end)) < 0:
        data = await stream.receive_some(65536)
        assert data, f"closed before {end!r}: {bytes(buffer)!r}"
        buffer += data
    out = bytes(buffer[: at + len(end)])
    del buffer[: at + len(end)]
    return out


async def test_pipelined_requests_are_answered_in_order_on_one_connection(
    nursery: trio.Nursery,
) -> None:
    address = await serve(nursery, {})
    async with await trio.open_tcp_stream(*address) as stream:
        await stream.send_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\na"
                              b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nb")
        buffer = bytearray()
        with trio.fail_after(WAIT):
            first = await read_until(stream, buffer, b"\r\n\r\na")
            second = await read_until(stream, buffer, b"\r\n\r\nb")
            await stream.send_all(POST.replace(b"/", b"/echo", 1)
                                  + b"Content-Length: 1\r\nConnection: close\r\n\r\nc")
            third = await read_all(stream)
    assert first.startswith(b"HTTP/1.1 200 OK\r\n") and second.startswith(b"HTTP/1.1 200 OK\r\n")
    assert bytes(buffer) == b""
    assert third.startswith(b"HTTP/1.1 200 OK\r\n") and third.endswith(b"\r\n\r\nc")


@pytest.mark.parametrize(("version", "framing"), [(b"1.1", b"chunked"), (b"1.0", b"close")])
async def test_a_stream_is_sent_as_it_comes_and_learns_of_the_client_leaving(
    nursery: trio.Nursery, version: bytes, framing: bytes
) -> None:
    state = {"go": trio.Event(), "gone": trio.Event()}
    address = await serve(nursery, state)
    stream = await trio.open_tcp_stream(*address)
    buffer = bytearray()
    with trio.fail_after(WAIT):
        await stream.send_all(b"GET /stream HTTP/%s\r\nHost: x\r\n\r\n" % version)
        head = (await read_until(stream, buffer, b"\r\n\r\n")).lower()
        assert head.startswith(b"http/1.1 200 ok\r\n")
        if framing == b"chunked":
            assert b"transfer-encoding: chunked" in head
            assert await read_until(stream, buffer, b"one\r\n") == b"3\r\none\r\n"
        else:
            assert b"connection: close" in head and b"transfer-encoding" not in head
            assert await read_until(stream, buffer, b"one") == b"one"
        state["go"].set()
        assert (await read_until(stream, buffer, b"two")).endswith(b"two")
        await stream.aclose()
        await state["gone"].wait()
    assert state["after"] == {"type": "http.disconnect"}


async def test_a_client_expecting_100_continue_is_told_to_send_the_body(
    nursery: trio.Nursery,
) -> None:
    address = await serve(nursery, {})
    async with await trio.open_tcp_stream(*address) as stream:
        buffer = bytearray()
        with trio.fail_after(WAIT):
            await stream.send_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                                  b"Expect: 100-continue\r\n\r\n")
            assert await read_until(stream, buffer, b"\r\n\r\n") == (
                b"HTTP/1.1 100 Continue\r\n\r\n")
            await stream.send_all(b"ok")
            answer = await read_until(stream, buffer, b"\r\n\r\nok")
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")


async def test_a_head_request_gets_the_head_alone(nursery: trio.Nursery) -> None:
    address = await serve(nursery, {})
    async with await trio.open_tcp_stream(*address) as stream:
        buffer = bytearray()
        with trio.fail_after(WAIT):
            await stream.send_all(b"HEAD /echo HTTP/1.1\r\nHost: x\r\n\r\n"
                                  b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n!")
            head = await read_until(stream, buffer, b"\r\n\r\n")
            after = await read_until(stream, buffer, b"\r\n\r\n!")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"content-length: 0" in head.lower()
    assert after.startswith(b"HTTP/1.1 200 OK\r\n")  # nothing between the two


@pytest.mark.parametrize("path", [b"/fail", b"/silent"])
async def test_an_app_that_fails_or_says_nothing_gives_a_500(
    nursery: trio.Nursery, path: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    address = await serve(nursery, {})
    async with await trio.open_tcp_stream(*address) as stream:
        await stream.send_all(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path)
        with trio.fail_after(WAIT):
            answer = await read_all(stream)
    assert answer.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert b"connection: close" in answer.lower()
    if path == b"/fail":
        assert "the ASGI application failed on GET /fail" in caplog.text
