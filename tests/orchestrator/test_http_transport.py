"""The plain-HTTP transport and the relay client's hot path, against a scripted TCP server.

The server (``scripted_server.py``, the ``server`` fixture) reads each request
whole and answers with the next scripted reply, byte for byte. So every test
controls exactly what goes over the wire, and sees exactly what came.
"""

from __future__ import annotations

import json

import httpx
import pytest
import trio

from orchestrator._errors import (
    RelayAuthError,
    RelayConflict,
    RelayError,
    RelayNotFound,
    RelayUnavailable,
)
from orchestrator.http._transport import PlainHTTPTransport
from orchestrator.relay._client import (
    RelayClient,
    make_http_client,
    make_http_transport,
    plain_parts,
)
from orchestrator.relay._sse import SSEDecoder, SSEEvent

from .scripted_server import (
    DROP,
    HANG,
    WAIT,
    Server,
    answer,
    chunk,
    get,
    refused_socket,
    relay_client,
    send,
    start_server,
)

# -- the request on the wire ------------------------------------------------------


async def test_request_is_one_well_formed_http11_request(server: Server) -> None:
    server.script(answer({"id": "cmd_1", "status": "running"}))
    body = {"status": "running", "note": "é ✓"}
    with trio.fail_after(WAIT):
        async with relay_client(server.base) as client:
            result = await client.request("PATCH", "/api/commands/cmd_1", body)
        await server.wait_until(lambda: server.closed == server.accepted)

    assert result == {"id": "cmd_1", "status": "running"}
    assert len(server.requests) == 1 and server.leftover == []
    seen = server.requests[0]
    assert seen.line == b"PATCH /api/commands/cmd_1 HTTP/1.1"
    assert seen.header("Host") == f"127.0.0.1:{server.port}"
    assert seen.header("Authorization") == "Bearer tok"
    assert seen.header("Content-Type") == "application/json"
    assert seen.header("Content-Length") == str(len(seen.body))
    assert json.loads(seen.body) == body
    assert "transfer-encoding" not in dict(seen.headers)


async def test_get_sends_no_body_and_a_bodyless_patch_says_length_zero(server: Server) -> None:
    server.script(answer({"id": "cmd_1"}), answer({"ok": True}))
    with trio.fail_after(WAIT):
        async with relay_client(server.base) as client:
            assert await client.get_command("cmd_1") == {"id": "cmd_1"}
            assert await client.request("PATCH", "/api/commands/cmd_1") == {"ok": True}
    get_, patch = server.requests
    assert get_.line == b"GET /api/commands/cmd_1 HTTP/1.1"
    assert "content-length" not in dict(get_.headers) and get_.body == b""
    assert patch.header("Content-Length") == "0" and patch.body == b""


async def test_base_url_path_prefix_goes_before_the_path(server: Server) -> None:
    server.script(answer({"a": 1}), answer({"b": 2}))
    with trio.fail_after(WAIT):
        async with relay_client(server.base + "/relay/") as client:
            assert await client.request("PATCH", "/api/commands/cmd_1", {"x": 1}) == {"a": 1}
            # a path that needs encoding goes through httpx: the prefix is kept there too
            assert await client.request("PATCH", "/api/commands/cmd 1", {"x": 1}) == {"b": 2}
    plain, encoded = server.requests
    assert plain.line == b"PATCH /relay/api/commands/cmd_1 HTTP/1.1"
    assert plain.header("Host") == f"127.0.0.1:{server.port}"
    assert encoded.line == b"PATCH /relay/api/commands/cmd%201 HTTP/1.1"


async def test_path_needing_encoding_goes_out_percent_encoded(server: Server) -> None:
    server.script(answer({"id": "cmd é 1"}), answer({"id": "cmd_2"}))
    body = {"status": "succeeded", "result": {"text": "é"}}
    with trio.fail_after(WAIT):
        async with relay_client(server.base) as client:
            assert await client.patch_command("cmd é 1", body) == {"id": "cmd é 1"}
            # the plain path after the httpx one: same pool, same connection
            assert await client.patch_command("cmd_2", body) == {"id": "cmd_2"}
    seen = server.requests[0]
    assert seen.line == b"PATCH /api/commands/cmd%20%C3%A9%201 HTTP/1.1"
    assert seen.header("Host") == f"127.0.0.1:{server.port}"
    assert seen.header("Authorization") == "Bearer tok"
    assert seen.header("Content-Type") == "application/json"
    assert seen.header("Content-Length") == str(len(seen.body))
    assert json.loads(seen.body) == body
    assert server.accepted == 1
    assert [s.conn for s in server.requests] == [1, 1]


# -- keep-alive ---------------------------------------------------------------------


async def test_two_requests_in_a_row_share_one_connection(server: Server) -> None:
    server.script(answer({"n": 1}), answer({"n": 2}))
    with trio.fail_after(WAIT):
        async with relay_client(server.base) as client:
            assert await client.get_command("a") == {"n": 1}
            assert await client.get_command("b") == {"n": 2}
            assert server.accepted == 1
    assert [s.conn for s in server.requests] == [1, 1]


async def test_connection_close_answer_makes_the_next_request_reconnect(server: Server) -> None:
    # The server keeps its side open: only the client honouring the header
    # makes the next request go out on a new connection.
    server.script(answer({"n": 1}, headers=(b"Connection: close",)), answer({"n": 2}))
    with trio.fail_after(WAIT):
        async with relay_client(server.base) as client:
            assert await client.get_command("a") == {"n": 1}
            assert await client.get_command("b") == {"n": 2}
    assert server.accepted == 2
    assert [s.conn for s in server.requests] == [1, 2]


async def test_http10_answer_is_not_kept(server: Server) -> None:
    server.script(b'HTTP/1.0 200 OK\r\nContent-Length: 8\r\n\r\n{"n": 1}', answer({"n": 2}))
    with trio.fail_after(WAIT):
        async with relay_client(server.base) as client:
            assert await client.get_command("a") == {"n": 1}
            assert await client.get_command("b") == {"n": 2}
    assert [s.conn for s in server.requests] == [1, 2]


async def test_idle_connection_closed_by_the_server_is_not_reused(server: Server) -> None:
    server.script(send(answer({"n": 1}), close=True), answer({"n": 2}))
    with trio.fail_after(WAIT):
        async with relay_client(server.base) as client:
            assert await client.get_command("a") == {"n": 1}
            await server.wait_until(lambda: server.closed == 1)
            assert await client.get_command("b") == {"n": 2}
    assert server.accepted == 2
    assert [s.conn for s in server.requests] == [1, 2]


# -- response framing -----------------------------------------------------------------


async def test_chunked_answer_with_extension_and_trailer_is_read_whole(server: Server) -> None:
    server.script(
        send(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n",
            b'7;name="v"\r\n{"id": \r\n',
            b'A\r\n"cmd_1", "\r\n',
            b'13\r\nstatus": "running"}\r\n',
            b"0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n",
        ),
        answer({"n": 2}),
    )
    with trio.fail_after(WAIT):
        async with relay_client(server.base) as client:
            assert await client.get_command("cmd_1") == {"id": "cmd_1", "status": "running"}
            # the chunked body was consumed exactly: the connection is still good
            assert await client.get_command("cmd_2") == {"n": 2}
    assert [s.conn for s in server.requests] == [1, 1]


async def test_answer_ending_with_the_connection_is_read_whole(server: Server) -> None:
    payload = json.dumps({"items": list(range(3000))}).encode()  # more than one read
    server.script(
        send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n",
             payload[:100], payload[100:], close=True),
        answer({"n": 2}),
    )
    with trio.fail_after(WAIT):
        async with relay_client(server.base) as client:
            assert await client.get_command("a") == {"items": list(range(3000))}
            assert await client.get_command("b") == {"n": 2}
    assert [s.conn for s in server.requests] == [1, 2]


async def test_interim_100_continue_is_skipped(server: Server) -> None:
    server.script(
        send(b"HTTP/1.1 100 Continue\r\n\r\n",
             b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n" + answer({"ok": True})),
        answer({"n": 2}),
    )
    with trio.fail_after(WAIT):
        async with relay_client(server.base) as client:
            assert await client.request("PATCH", "/api/commands/cmd_1", {"a": 1}) == {"ok": True}
            assert await client.get_command("b") == {"n": 2}
    assert [s.conn for s in server.requests] == [1, 1]


async def test_204_without_body_returns_none(server: Server) -> None:
    server.script(b"HTTP/1.1 204 No Content\r\n\r\n", answer({"n": 2}))
    with trio.fail_after(WAIT):
        async with relay_client(server.base) as client:
            assert await client.request("PATCH", "/api/commands/cmd_1", {"a": 1}) is None
            assert await client.get_command("b") == {"n": 2}
    assert [s.conn for s in server.requests] == [1, 1]


async def test_200_with_empty_body_returns_none(server: Server) -> None:
    server.script(answer())
    with trio.fail_after(WAIT):
        async with relay_client(server.base) as client:
            assert await client.request("POST", "/api/orchestrators/o/heartbeat", {}) is None


# -- error statuses ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error"),
    [(404, RelayNotFound), (409, RelayConflict), (500, RelayUnavailable),
     (503, RelayUnavailable), (429, RelayUnavailable), (400, RelayError)],
)
async def test_error_status_maps_to_relay_error(
    server: Server, status: int, error: type[RelayError]
) -> None:
    server.script(answer({"error": "command cmd_1 is already settled"}, status,
                         reason=b"Whatever"),
                  answer({"n": 2}))
    with trio.fail_after(WAIT):
        async with relay_client(server.base) as client:
            with pytest.raises(error) as info:
                await client.request("PATCH", "/api/commands/cmd_1", {"status": "running"})
            # an error answer read whole leaves the connection good
            assert await client.get_command("b") == {"n": 2}
    assert type(info.value) is error
    assert info.value.status == status
    message = str(info.value)
    assert message.startswith(f"PATCH {server.base}/api/commands/cmd_1: {status}")
    assert "command cmd_1 is already settled" in message
    assert [s.conn for s in server.requests] == [1, 1]


async def test_error_detail_that_is_not_json_is_quoted(server: Server) -> None:
    server.script(answer(status=404, reason=b"Not Found", body=b"no such command\n"))
    with trio.fail_after(WAIT):
        async with relay_client(server.base) as client:
            with pytest.raises(RelayNotFound, match=r": 404: no such command$"):
                await client.get_command("cmd_1")


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_error_reads_the_token_again(server: Server, status: int) -> None:
    calls: list[int] = []

    def token() -> str:
        calls.append(1)
        return f"tok-{len(calls)}"

    server.script(answer({"error": "bad token"}, status), answer({"n": 1}), answer({"n": 2}))
    with trio.fail_after(WAIT):
        async with relay_client(server.base, token=token) as client:
            with pytest.raises(RelayAuthError) as info:
                await client.get_command("a")
            assert len(calls) == 1
            assert await client.get_command("b") == {"n": 1}
            assert len(calls) == 2
            assert await client.get_command("c") == {"n": 2}
            assert len(calls) == 2  # read again once, then kept
    assert info.value.status == status
    assert f"relay {server.base} refused our token ({status})" in str(info.value)
    assert [s.header("Authorization") for s in server.requests] == [
        "Bearer tok-1", "Bearer tok-2", "Bearer tok-2"]


# -- broken servers ----------------------------------------------------------------------


BROKEN = {
    "closes-without-answer": DROP,
    "garbage-status-line": send(b"HELLO\r\n\r\n", close=True),
    "not-http": send(b"SPDY/3 200 OK\r\n\r\n", close=True),
    "bad-header-line": send(b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", close=True),
    "bad-content-length": send(b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n{}"),
    "short-body": send(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{}", close=True),
    "bad-chunk-size": send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
    "bad-chunk-end": send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}XX"),
    "chunked-cut-short": send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{",
                              close=True),
    "not-json": answer(body=b"<html>hello</html>"),
}


@pytest.mark.parametrize("broken", list(BROKEN), ids=list(BROKEN))
async def test_broken_server_is_unavailable_and_client_recovers(
    server: Server, broken: str
) -> None:
    reply = BROKEN[broken]
    server.script(reply, answer({"n": 2}))
    with trio.fail_after(WAIT):
        async with relay_client(server.base) as client:
            with pytest.raises(RelayUnavailable) as info:
                await client.request("PATCH", "/api/commands/cmd_1", {"status": "running"})
            assert await client.get_command("b") == {"n": 2}
    assert str(info.value).startswith(f"PATCH {server.base}/api/commands/cmd_1: ")
    if broken == "not-json":
        assert str(info.value).endswith("answer is not JSON")
    else:
        assert isinstance(info.value.__cause__, httpx.HTTPError)
        assert type(info.value.__cause__).__name__ in str(info.value)


async def test_connection_refused_is_unavailable_until_the_relay_is_up(
    nursery: trio.Nursery,
) -> None:
    sock = await refused_socket()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with trio.fail_after(WAIT):
        async with relay_client(base) as client:
            with pytest.raises(RelayUnavailable) as info:
                await client.request("PATCH", "/api/commands/cmd_1", {"status": "running"})
            # the same port starts listening: the next request goes through
            sock.listen()
            server = await start_server(nursery, sock)
            server.script(answer({"n": 2}))
            assert await client.get_command("b") == {"n": 2}
    assert str(info.value).startswith(f"PATCH {base}/api/commands/cmd_1: ConnectError")
    assert isinstance(info.value.__cause__, httpx.ConnectError)


async def test_server_that_never_answers_times_out(server: Server) -> None:
    server.script(HANG, answer({"n": 2}))
    with trio.fail_after(WAIT):
        async with relay_client(server.base, request_timeout=0.5) as client:
            started = trio.current_time()
            with pytest.raises(RelayUnavailable) as info:
                await client.request("PATCH", "/api/commands/cmd_1", {"status": "running"})
            assert 0.5 <= trio.current_time() - started < WAIT
            assert await client.get_command("b") == {"n": 2}
    assert str(info.value) == (
        f"PATCH {server.base}/api/commands/cmd_1: no answer within 0.5 s")
    # the hung connection was given up, not reused
    assert [s.conn for s in server.requests] == [1, 2]


# -- the transport itself: exchange and handle_async_request --------------------------------


EXCHANGE_FAILURES = {
    "closes-without-answer": (DROP, httpx.RemoteProtocolError),
    "garbage-status-line": (send(b"HELLO\r\n\r\n"), httpx.RemoteProtocolError),
    "bad-content-length": (send(b"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n"),
                           httpx.RemoteProtocolError),
    "short-body": (send(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab", close=True),
                   httpx.RemoteProtocolError),
    "bad-chunk": (send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
                  httpx.RemoteProtocolError),
    "hangs-then-cancelled": (HANG, trio.TooSlowError),
    "refused": (None, httpx.ConnectError),
}


@pytest.mark.parametrize("failure", list(EXCHANGE_FAILURES), ids=list(EXCHANGE_FAILURES))
async def test_failed_exchange_gives_its_connection_slot_back(
    server: Server, failure: str
) -> None:
    reply, error = EXCHANGE_FAILURES[failure]
    transport = PlainHTTPTransport(max_connections=1, max_idle=1)
    refused = await refused_socket()
    try:
        with trio.fail_after(WAIT):
            if reply is None:
                key = ("127.0.0.1", refused.getsockname()[1])
                with pytest.raises(error):
                    await transport.exchange(key, get())
            else:
                server.script(reply)
                with pytest.raises(error):
                    with trio.fail_after(0.2):
                        await transport.exchange(server.key, get())
            server.script(answer({"n": 2}), answer({"n": 3}))
            assert await transport.exchange(server.key, get()) == (200, b'{"n": 2}')
            assert await transport.exchange(server.key, get()) == (200, b'{"n": 3}')
    finally:
        refused.close()
        await transport.aclose()
    good = server.requests[-2:]
    assert good[0].conn == good[1].conn  # the good connection was kept for the next one


async def test_exchange_head_only_ignores_the_announced_length(server: Server) -> None:
    server.script(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 42\r\n\r\n",
                  answer({"n": 2}))
    transport = PlainHTTPTransport()
    try:
        with trio.fail_after(WAIT):
            head = b"HEAD /api/commands/cmd_1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            assert await transport.exchange(server.key, head, head_only=True) == (200, b"")
            # nothing was left unread: the connection serves the next request
            assert await transport.exchange(server.key, get()) == (200, b'{"n": 2}')
    finally:
        await transport.aclose()
    assert [s.conn for s in server.requests] == [1, 1]
    assert server.requests[0].line == b"HEAD /api/commands/cmd_1 HTTP/1.1"


async def test_head_request_through_the_client_returns_none(server: Server) -> None:
    server.script(b"HTTP/1.1 200 OK\r\nContent-Length: 17\r\n\r\n")
    with trio.fail_after(WAIT):
        async with relay_client(server.base) as client:
            assert await client.request("HEAD", "/api/commands/cmd_1") is None
    seen = server.requests[0]
    assert seen.line == b"HEAD /api/commands/cmd_1 HTTP/1.1"
    assert "content-length" not in dict(seen.headers)


async def test_exchange_keeps_at_most_max_idle_connections(server: Server) -> None:
    transport = PlainHTTPTransport(max_connections=4, max_idle=1)
    server.script(*[answer({"n": n}) for n in range(4)])
    results: list[tuple[int, bytes]] = []

    async def one() -> None:
        results.append(await transport.exchange(server.key, get()))

    try:
        with trio.fail_after(WAIT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(one)
                nursery.start_soon(one)
            assert server.accepted == 2
            # one of the two was kept, the other closed
            await server.wait_until(lambda: server.closed == 1)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(one)
                nursery.start_soon(one)
            assert server.accepted == 3
    finally:
        await transport.aclose()
    assert sorted(results) == [(200, b'{"n": %d}' % n) for n in range(4)]


async def test_handle_async_request_reads_content_length_and_chunked(server: Server) -> None:
    server.script(
        answer({"n": 1}, headers=(b"X-Relay: yes",)),
        send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
             b"4;x=y\r\ndata\r\n", b"1\r\n!\r\n0\r\nTrailer: t\r\n\r\n"),
        answer({"n": 3}),
    )
    transport = PlainHTTPTransport(max_connections=1)
    try:
        with trio.fail_after(WAIT):
            async with httpx.AsyncClient(transport=transport, base_url=server.base) as http:
                first = await http.post("/api/x?a=b", json={"k": "v"})
                assert first.status_code == 200 and first.json() == {"n": 1}
                assert first.headers["x-relay"] == "yes"
                assert first.extensions["http_version"] == b"HTTP/1.1"
                assert first.extensions["reason_phrase"] == b"OK"
                async with http.stream("GET", "/api/stream") as streamed:
                    assert [part async for part in streamed.aiter_bytes()] in (
                        [b"data!"], [b"data", b"!"])
                third = await http.get("/api/y")
                assert third.json() == {"n": 3}
    finally:
        await transport.aclose()
    post = server.requests[0]
    assert post.line == b"POST /api/x?a=b HTTP/1.1"
    assert post.header("Host") == f"127.0.0.1:{server.port}"
    assert post.header("Content-Length") == str(len(post.body))
    assert json.loads(post.body) == {"k": "v"}
    assert [s.conn for s in server.requests] == [1, 1, 1]


async def test_stream_left_early_closes_its_connection_and_frees_the_slot(
    server: Server,
) -> None:
    server.script(
        send(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
             b"Transfer-Encoding: chunked\r\n\r\n",
             chunk(b'data: {"id": "cmd_1"}\r\n\r\n')),  # and then nothing, for ever
        answer({"n": 2}),
    )
    transport = PlainHTTPTransport(max_connections=1)
    http = make_http_client(server.base, transport=transport)
    async with http:
        client = RelayClient(server.base, lambda: "tok", http=http, transport=transport)
        with trio.fail_after(WAIT):
            got: list[SSEEvent] = []
            decoder = SSEDecoder(max_line=1000)
            async with client.stream("orch:o1") as chunks:
                # left as _feed.py leaves it: cancelled while waiting for more
                with trio.CancelScope() as scope:
                    async for part in chunks:
                        got += decoder.feed(part)
                        if got:
                            scope.cancel()
            assert got == [SSEEvent(event="message", data='{"id": "cmd_1"}')]
            assert await client.get_command("b") == {"n": 2}
    sse = server.requests[0]
    assert sse.line == b"GET /api/commands/stream?target=orch%3Ao1 HTTP/1.1"
    assert sse.header("Accept") == "text/event-stream"
    assert sse.header("Authorization") == "Bearer tok"
    assert [s.conn for s in server.requests] == [1, 2]


async def test_handle_async_request_refuses_https() -> None:
    transport = PlainHTTPTransport(max_connections=1)
    with pytest.raises(httpx.UnsupportedProtocol):
        await transport.handle_async_request(httpx.Request("GET", "https://127.0.0.1:1/"))
    await transport.aclose()


# -- framing corner cases (RFC 9112) ---------------------------------------------------


async def test_exchange_head_only_ignores_transfer_encoding(server: Server) -> None:
    # A HEAD answer may carry the headers a GET would, chunked framing included.
    # The server keeps the connection open, as a keep-alive server does: the
    # client must return at the end of the head. (The server closes here so the
    # bug shows as a fast error rather than a hang until the request timeout.)
    server.script(send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", close=True))
    transport = PlainHTTPTransport()
    try:
        with trio.fail_after(WAIT):
            head = b"HEAD /api/commands/cmd_1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            try:
                result = await transport.exchange(server.key, head, head_only=True)
            except httpx.RemoteProtocolError as exc:
                pytest.fail(f"read a chunked body after the head of a HEAD answer: {exc}")
            assert result == (200, b"")
    finally:
        await transport.aclose()


async def test_negative_content_length_is_a_protocol_error(server: Server) -> None:
    server.script(send(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", close=True))
    transport = PlainHTTPTransport()
    try:
        with trio.fail_after(WAIT), pytest.raises(httpx.RemoteProtocolError):
            await transport.exchange(server.key, get())
    finally:
        await transport.aclose()


@pytest.mark.parametrize("lengths", [(b"+5",), (b"1_0",), (b"5", b"6")])
async def test_content_length_other_than_plain_agreeing_digits_is_refused(
    server: Server, lengths: tuple[bytes, ...]
) -> None:
    head = b"HTTP/1.1 200 OK\r\n" + b"".join(b"Content-Length: " + n + b"\r\n" for n in lengths)
    server.script(send(head + b"\r\nhello", close=True))
    transport = PlainHTTPTransport()
    try:
        with trio.fail_after(WAIT), pytest.raises(httpx.RemoteProtocolError):
            await transport.exchange(server.key, get())
    finally:
        await transport.aclose()


async def test_an_id_holding_slash_question_or_hash_stays_one_path_segment(
    server: Server,
) -> None:
    server.script(answer({}), answer({}))
    with trio.fail_after(WAIT):
        async with relay_client(server.base) as client:
            await client.patch_command("cmd/1?x=1#y", {"status": "running"})
            await client.put_agent("orch:a b", "ag/../1", {"agentId": "ag/../1"})
    claim, report = server.requests
    assert claim.line == b"PATCH /api/commands/cmd%2F1%3Fx%3D1%23y HTTP/1.1"
    assert report.line == b"PUT /api/orchestrators/orch%3Aa%20b/agents/ag%2F..%2F1 HTTP/1.1"


# -- the event stream, on the lean transport alone -------------------------------------


async def test_the_event_stream_is_decoded_as_it_arrives(server: Server) -> None:
    event = json.dumps({"id": "cmd_1", "note": "a\u2028b é"}, ensure_ascii=False).encode()
    server.script(send(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n",
        chunk(b": keepalive\r"),  # a CRLF split across two chunks
        chunk(b"\nevent: command\ndata: " + event[:-3]),  # a line (and é) split too
        chunk(event[-3:] + b"\r\n\r\n"),
        b"0\r\n\r\n",
    ))
    async with relay_client(server.base) as client:
        with trio.fail_after(WAIT):
            decoder = SSEDecoder(max_line=1000)
            async with client.stream("orch:o1") as chunks:
                seen = [e async for part in chunks for e in decoder.feed(part)]
    assert seen == [SSEEvent(event="command", data=event.decode())]
    (request,) = server.requests
    assert request.line == b"GET /api/commands/stream?target=orch%3Ao1 HTTP/1.1"
    assert request.header("accept") == "text/event-stream"
    assert request.header("authorization") == "Bearer tok"
    assert request.header("host") == f"127.0.0.1:{server.port}"


@pytest.mark.parametrize(("status", "error"), [(401, RelayAuthError), (404, RelayNotFound),
                                               (503, RelayUnavailable)])
async def test_an_event_stream_refused_raises_the_relay_error(
    server: Server, status: int, error: type[Exception]
) -> None:
    server.script(answer({"error": "no"}, status, reason=b"No"))
    async with relay_client(server.base) as client:
        with trio.fail_after(WAIT), pytest.raises(error):
            async with client.stream("orch:o1") as lines:
                [line async for line in lines]


async def test_an_event_stream_cut_short_is_relay_unavailable(server: Server) -> None:
    server.script(send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                       chunk(b"data: {\n"), b"40\r\npart", close=True))
    async with relay_client(server.base) as client:
        seen: list[bytes] = []
        with trio.fail_after(WAIT), pytest.raises(RelayUnavailable, match="disconnected"):
            async with client.stream("orch:o1") as chunks:
                async for part in chunks:
                    seen.append(part)
    assert b"".join(seen).startswith(b"data: {\n")


@pytest.mark.parametrize(("url", "parts"), [
    ("http://127.0.0.1:8080/", (("127.0.0.1", 8080), "127.0.0.1:8080", "")),
    ("http://user:secret@relay.lan/base/", (("relay.lan", 80), "relay.lan", "/base")),
    ("http://[::1]:9", (("::1", 9), "[::1]:9", "")),
    ("http://relay.lan/a b", None),  # needs encoding: httpx does it
    ("http://relay.lan/?x=1", None),
    ("https://relay.lan", None),  # TLS: httpx
    ("http://relay.lan:99999", None),
])
def test_which_relays_the_lean_transport_speaks_to_by_itself(
    url: str, parts: tuple[tuple[str, int], str, str] | None
) -> None:
    assert plain_parts(url) == parts


async def test_a_relay_under_a_path_prefix_gets_it_on_every_request(server: Server) -> None:
    server.script(answer({"id": "cmd_1"}), send(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"0\r\n\r\n"))
    async with relay_client(server.base + "/relay/") as client:
        with trio.fail_after(WAIT):
            assert await client.get_command("cmd_1") == {"id": "cmd_1"}
            async with client.stream("orch:o1") as lines:
                assert [line async for line in lines] == []
    assert [r.line for r in server.requests] == [
        b"GET /relay/api/commands/cmd_1 HTTP/1.1",
        b"GET /relay/api/commands/stream?target=orch%3Ao1 HTTP/1.1",
    ]


def test_a_relay_the_lean_transport_cannot_speak_to_alone_needs_an_httpx_client() -> None:
    transport = make_http_transport("http://relay.lan/a b")
    with pytest.raises(ValueError, match="needs an httpx client"):
        RelayClient("http://relay.lan/a b", lambda: "tok", transport=transport)


async def test_an_event_stream_never_answered_is_relay_unavailable_in_time(
    server: Server, autojump_clock: trio.testing.MockClock
) -> None:
    server.script(HANG)
    async with relay_client(server.base, request_timeout=10.0) as client:
        started = trio.current_time()
        with trio.fail_after(60), pytest.raises(RelayUnavailable, match="no answer"):
            async with client.stream("orch:o1") as lines:
                [line async for line in lines]
        assert trio.current_time() - started == pytest.approx(10.0)


# -- foreign errors on every path (the table is relay/_foreign.py's) ----------------------


async def test_what_the_stream_consumer_raises_is_not_translated(server: Server) -> None:
    """The feed reads the stream inside ``client.stream()``: an OSError of its
    own (a full disk, say) must not pass for the relay being unavailable."""
    server.script(send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                       chunk(b"data: 1\n\n")))
    async with relay_client(server.base) as client:
        with trio.fail_after(WAIT), pytest.raises(OSError, match="No space left"):
            async with client.stream("orch:o1") as chunks:
                async for _ in chunks:
                    raise OSError(28, "No space left on device")


@pytest.mark.parametrize("under", ["ours", "httpcore"])
async def test_a_stream_through_httpx_cut_short_is_relay_unavailable(
    server: Server, under: str
) -> None:
    """The path of an https:// relay (or one the lean transport cannot speak to
    alone): httpx's client, over our transport or over httpcore and h11."""
    server.script(send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                       chunk(b"data: 1\n\n"), b"40\r\npart", close=True))
    transport = PlainHTTPTransport() if under == "ours" else httpx.AsyncHTTPTransport()
    async with make_http_client(server.base, transport=transport) as http:
        client = RelayClient(server.base, lambda: "tok", http=http)
        seen: list[bytes] = []
        with trio.fail_after(WAIT), pytest.raises(RelayUnavailable) as info:
            async with client.stream("orch:o1") as chunks:
                async for part in chunks:
                    seen.append(part)
    assert b"".join(seen).startswith(b"data: 1\n\n")
    assert str(info.value).startswith(
        f"GET {server.base}/api/commands/stream?target=orch%3Ao1: RemoteProtocolError: ")
    assert isinstance(info.value.__cause__, httpx.RemoteProtocolError)


async def test_a_garbled_answer_through_httpcore_and_h11_is_relay_unavailable(
    server: Server,
) -> None:
    server.script(send(b"HTTP/1.1 2OO OK\r\n\r\n", close=True), answer({"n": 2}))
    async with make_http_client(server.base, transport=httpx.AsyncHTTPTransport()) as http:
        client = RelayClient(server.base, lambda: "tok", http=http)
        with trio.fail_after(WAIT):
            with pytest.raises(RelayUnavailable) as info:
                await client.get_command("cmd_1")
            assert await client.get_command("b") == {"n": 2}
    assert str(info.value).startswith(
        f"GET {server.base}/api/commands/cmd_1: RemoteProtocolError: ")
    assert isinstance(info.value.__cause__, httpx.RemoteProtocolError)
