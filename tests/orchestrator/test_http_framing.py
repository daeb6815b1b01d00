"""Response framing of the plain-HTTP transport: malformed and hostile answers.

Each response goes over a real loopback connection: a server reads the
request, writes the response byte for byte and closes its side. The
differential property parses the same responses with h11 (installed with
httpx) and with the transport: both must accept or both refuse, and agree on
the body. Where RFC 9112 asks more than h11 does, the oracle says so (one
rule: ``transfer-encoding`` on an HTTP/1.0 response is faulty framing).
"""

from __future__ import annotations

import socket

import h11
import httpx
import pytest
import trio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from orchestrator._errors import RelayUnavailable
from orchestrator.http._connection import MAX_CHUNK_LINE, MAX_HEAD
from orchestrator.http._transport import PlainHTTPTransport

from .scripted_server import Server, get, relay_client, send

WAIT = 5
PARTS_BOUND = 10_000  # more pieces than any response here holds: the parser is looping
REQUEST = b"GET /api/commands/stream HTTP/1.1\r\nHost: relay\r\n\r\n"


# -- one response, two parsers --------------------------------------------------


async def _serve_once(listener: trio.socket.SocketType, response: bytes) -> None:
    conn, _ = await listener.accept()
    with conn:
        try:
            received = b""
            while b"\r\n\r\n" not in received:
                data = await conn.recv(65536)
                if not data:
                    return
                received += data
            view = memoryview(response)
            while view:
                view = view[await conn.send(view):]
            conn.shutdown(socket.SHUT_WR)
            while await conn.recv(65536):  # until the client is done with it
                pass
        except OSError:
            pass


async def _ours(response: bytes) -> tuple[str, bytes]:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    key = ("127.0.0.1", listener.getsockname()[1])
    with listener:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_serve_once, listener, response)
            async with PlainHTTPTransport() as transport:
                try:
                    with trio.fail_after(WAIT):
                        async with transport.open_stream(key, REQUEST) as (_, body, parts):
                            pieces = [body]
                            async for piece in parts:
                                pieces.append(piece)
                                if len(pieces) > PARTS_BOUND:
                                    return "loops", b""
                except httpx.HTTPError:
                    return "refused", b""
            return "accepted", b"".join(pieces)


def _h11(response: bytes) -> tuple[str, bytes]:
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/api/commands/stream",
                          headers=[("Host", "relay")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(response)
    conn.receive_data(b"")
    body = []
    try:
        while True:
            event = conn.next_event()
            if isinstance(event, h11.Response) and event.http_version == b"1.0" and any(
                name == b"transfer-encoding" for name, _ in event.headers
            ):
                return "refused", b""  # RFC 9112 6.1: faulty framing
            if isinstance(event, h11.Data):
                body.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return "accepted", b"".join(body)
            elif isinstance(event, h11.ConnectionClosed) or event is h11.NEED_DATA:
                return "refused", b""
    except h11.RemoteProtocolError:
        return "refused", b""


def parse_ours(response: bytes) -> tuple[str, bytes]:
    return trio.run(_ours, response)


# -- the responses ----------------------------------------------------------------

_GOOD_HEADERS = [b"X-A: b", b"X-A:", b"X-A:  b c  ", b"Connection: close",
                 b"Connection: keep-alive", b"Content-Type: text/event-stream"]
_BAD_HEADERS = [b"X-A : b", b"X A: b", b": b", b"X-A: b\x00c", b"X-A: b\x0bc", b"X-A b",
                b"X-A\x7f: b"]
_BAD_SIZES = [b"-1", b"+a", b"1_0", b"0x10", b" 5", b"", b"g", b"5 ;x", b"-0", b"\xa0"]


@st.composite
def responses(draw: st.DrawFn) -> bytes:
    version = draw(st.sampled_from([b"HTTP/1.1"] * 4 + [b"HTTP/1.0", b"HTTP/1.x", b"http/1.1",
                                                       b"HTTP/2", b"HTTP/1.1 "]))
    status = draw(st.sampled_from([b"200"] * 4 + [b"204", b"304", b"404", b"100", b"099",
                                                  b"2000", b"20", b"+20", b"abc"]))
    reason = draw(st.sampled_from([b" OK", b"", b" ", b" Not Found", b" a\x00b", b" a\tb"]))
    body = draw(st.binary(max_size=40))
    framing = draw(st.sampled_from(["length", "chunked", "chunked", "close", "both"]))
    headers = draw(st.lists(st.sampled_from(_GOOD_HEADERS * 3 + _BAD_HEADERS), max_size=2))
    n = len(body)
    if framing in ("length", "both"):
        length = draw(st.sampled_from([b"%d" % n] * 6 + [
            b"%d" % (n + 1), b"%d" % max(n - 1, 0), b"-1", b"+%d" % n, b"%d, %d" % (n, n),
            b"%d, %d" % (n, n + 1), b"0x1", b"1_0", b"", b"%d%d" % (n, n)]))
        headers.append(b"Content-Length: " + length)
        if draw(st.integers(0, 9)) == 0:  # a repeated header, agreeing or not
            headers.append(b"Content-Length: " + draw(st.sampled_from([length, b"%d" % (n + 2)])))
    payload = body
    if framing in ("chunked", "both"):
        coding = draw(st.sampled_from([b"chunked"] * 6 + [
            b"Chunked", b"gzip", b"gzip, chunked", b"chunked, chunked", b"identity"]))
        headers.append(b"Transfer-Encoding: " + coding)
        if draw(st.integers(0, 9)) == 0:
            headers.append(b"Transfer-Encoding: chunked")
        cuts = sorted(draw(st.lists(st.integers(0, n), max_size=3)))
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, n], strict=True) if b > a]
        payload = b""
        for piece in pieces:
            size = b"%x" % len(piece)
            size = draw(st.sampled_from([size] * 8 + [size.upper(), b"00" + size,
                                                      size + b";ext=1", size + b"  ",
                                                      *_BAD_SIZES]))
            end = draw(st.sampled_from([b"\r\n"] * 12 + [b"\n", b"xx", b""]))
            payload += size + b"\r\n" + piece + end
        last = draw(st.sampled_from([b"0"] * 6 + [b"000", b"0;a=b", b"-0", b"0x0"]))
        trailers = draw(st.lists(st.sampled_from([b"X-T: 1"] * 3 + [b"bad", b"X T: 1"]),
                                 max_size=2))
        payload += last + b"\r\n" + b"".join(t + b"\r\n" for t in trailers) + b"\r\n"
    interim = b"HTTP/1.1 100 Continue\r\n\r\n" if draw(st.integers(0, 9)) == 0 else b""
    head = version + b" " + status + reason + b"\r\n" + b"".join(h + b"\r\n" for h in headers)
    response = interim + head + b"\r\n" + payload
    if draw(st.integers(0, 5)) == 0:
        response = response[: draw(st.integers(0, len(response)))]
    return response


@settings(max_examples=400, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(responses())
@example(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\nabc\r\n0\r\n\r\n")
@example(b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
@example(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n")
@example(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
         b"3\r\nabc\r\n0\r\n\r\n")
def test_the_transport_and_h11_agree_on_every_response(response: bytes) -> None:
    assert parse_ours(response) == _h11(response)


# -- what the review found, one by one --------------------------------------------


def chunked_head(version: bytes = b"HTTP/1.1", *extra: bytes) -> bytes:
    return b"\r\n".join([version + b" 200 OK", b"Transfer-Encoding: chunked", *extra, b"", b""])


@pytest.mark.parametrize("size", [b"-1", b"+a", b"1_0", b"0x10", b"-0", b"1" * 17, b"0" * 17])
async def test_a_chunk_size_is_one_to_sixteen_hex_digits(size: bytes) -> None:
    """``int(size, 16)`` took all of these; with ``-1`` the body loop yielded empty
    pieces forever, without a checkpoint (no timeout could fire)."""
    response = chunked_head() + size + b"\r\n" + b"abcdefghijklmnopq\r\n0\r\n\r\n"
    assert (await _ours(response)) == ("refused", b"")


async def test_sixteen_hex_digits_are_a_chunk_size() -> None:
    response = chunked_head() + b"0" * 15 + b"3\r\nabc\r\n" + b"0" * 16 + b"\r\n\r\n"
    assert (await _ours(response)) == ("accepted", b"abc")


@pytest.mark.parametrize("what", ["chunk-size line", "trailers"])
async def test_a_chunk_line_or_trailers_without_end_are_refused(
    server: Server, what: str
) -> None:
    """The server keeps the connection open and keeps sending: the transport
    refuses once over its bound instead of buffering without end."""
    endless = (b"1" + b";x" * MAX_CHUNK_LINE if what == "chunk-size line"
               else b"0\r\n" + b"X-T: 1\r\n" * (MAX_HEAD // 8 + 1))
    server.script(send(chunked_head(), endless))  # then waits for a next request
    async with PlainHTTPTransport() as transport:
        with trio.fail_after(WAIT), pytest.raises(httpx.RemoteProtocolError, match="too long"):
            async with transport.open_stream(server.key, get()) as (_, _, parts):
                [piece async for piece in parts]


async def test_both_transfer_encoding_and_content_length_close_the_connection(
    server: Server,
) -> None:
    server.script(
        send(chunked_head(b"HTTP/1.1", b"Content-Length: 100") + b"2\r\n{}\r\n0\r\n\r\n"),
        send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"),
    )
    async with relay_client(server.base) as client:
        with trio.fail_after(WAIT):
            await client.request("GET", "/a")
            await client.request("GET", "/b")
    assert [seen.conn for seen in server.requests] == [1, 2]  # not reused


async def test_transfer_encoding_on_an_http10_response_is_refused(server: Server) -> None:
    server.script(send(chunked_head(b"HTTP/1.0") + b"2\r\n{}\r\n0\r\n\r\n"))
    async with relay_client(server.base) as client:
        with trio.fail_after(WAIT), pytest.raises(RelayUnavailable, match="HTTP/1.0"):
            await client.request("GET", "/a")


def _sse_head() -> bytes:
    return chunked_head(b"HTTP/1.1", b"Content-Type: text/event-stream")


async def test_an_event_stream_line_without_end_ends_the_stream_with_an_error(
    server: Server,
) -> None:
    from orchestrator.daemon._feed import MAX_EVENT_LINE
    from orchestrator.relay._sse import SSEDecoder, SSEError, SSEEvent

    piece = b"a" * 65536
    count = MAX_EVENT_LINE // len(piece) + 2
    server.script(send(_sse_head(), b"a\r\ndata: hi\n\n\r\n",
                       *[b"%x\r\n%s\r\n" % (len(piece), piece)] * count))
    async with relay_client(server.base) as client:
        seen: list[SSEEvent] = []
        decoder = SSEDecoder(max_line=MAX_EVENT_LINE)
        with trio.fail_after(WAIT * 4), pytest.raises(SSEError, match="line longer"):
            async with client.stream("orch:o1") as chunks:
                async for part in chunks:
                    seen += decoder.feed(part)
        assert seen == [SSEEvent(event="message", data="hi")]
