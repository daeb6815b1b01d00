"""Foreign errors into the ``RelayError`` tree (``orchestrator/relay/_foreign.py``).

Each family the relay client can meet (httpx's, h11's, a socket's, trio's)
becomes the ``RelayError`` its callers act on, with a message that names
the request and the error; what is not foreign is left alone. The client's
own paths through it are pinned in ``test_http_transport.py``.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator

import h11
import httpx
import pytest
import trio
import trio.testing

from orchestrator._errors import (
    RelayConflict,
    RelayError,
    RelayNotFound,
    RelayUnavailable,
)
from orchestrator.relay._foreign import describe, relay_error, relay_errors

WHAT = "PATCH http://relay/api/commands/cmd_1"
REQUEST = httpx.Request("PATCH", "http://relay/api/commands/cmd_1")

UNAVAILABLE = [
    (httpx.ConnectError("[Errno 111] Connection refused", request=REQUEST),
     "ConnectError: [Errno 111] Connection refused"),
    (httpx.ReadError("connection reset", request=REQUEST), "ReadError: connection reset"),
    (httpx.WriteError("broken pipe", request=REQUEST), "WriteError: broken pipe"),
    (httpx.RemoteProtocolError("bad chunk size", request=REQUEST),
     "RemoteProtocolError: bad chunk size"),
    (httpx.ReadTimeout("timed out", request=REQUEST), "ReadTimeout: timed out"),
    (httpx.PoolTimeout("no connection", request=REQUEST), "PoolTimeout: no connection"),
    (httpx.DecodingError("bad gzip", request=REQUEST), "DecodingError: bad gzip"),
    (h11.RemoteProtocolError("illegal status line", 400),
     "RemoteProtocolError: illegal status line"),
    (ConnectionRefusedError(111, "Connection refused"),
     "ConnectionRefusedError: [Errno 111] Connection refused"),
    (ConnectionResetError(104, "Connection reset by peer"),
     "ConnectionResetError: [Errno 104] Connection reset by peer"),
    (ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify "
                                     "failed: self-signed certificate (_ssl.c:1006)"),
     "SSLCertVerificationError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
     "self-signed certificate (_ssl.c:1006)"),
    (trio.BrokenResourceError("the peer went away"), "BrokenResourceError: the peer went away"),
    (trio.ClosedResourceError(), "ClosedResourceError"),
    (trio.TooSlowError(), "no answer within 10 s"),
]


@pytest.mark.parametrize(("exc", "says"), UNAVAILABLE,
                         ids=[f"{type(e).__module__}.{type(e).__name__}" for e, _ in UNAVAILABLE])
def test_a_failed_exchange_is_unavailable(exc: Exception, says: str) -> None:
    error = relay_error(exc, WHAT, 10.0)
    assert type(error) is RelayUnavailable
    assert str(error) == f"{WHAT}: {says}"
    assert error.status is None  # no answer: the request may have reached the relay


LOCAL = [
    httpx.LocalProtocolError("Illegal header value b'tok\\n'", request=REQUEST),
    httpx.UnsupportedProtocol("Request URL has an unsupported protocol 'ftp://'."),
    h11.LocalProtocolError("Illegal header value b'tok\\n'"),
]


@pytest.mark.parametrize("exc", LOCAL, ids=[f"{type(e).__module__}.{type(e).__name__}"
                                            for e in LOCAL])
def test_a_request_that_could_not_be_sent_is_a_plain_relay_error(exc: Exception) -> None:
    """Not ``RelayUnavailable``: the request never left (a claim's answer was
    not lost), and sending it again as it is cannot work."""
    error = relay_error(exc, WHAT, 10.0)
    assert type(error) is RelayError
    assert str(error) == f"{WHAT}: {type(exc).__name__}: {exc}"


@pytest.mark.parametrize("exc", [
    ValueError("not ours to say"), KeyError("x"), RuntimeError("a bug"),
    httpx.StreamConsumed(), RelayConflict("409", status=409), RelayNotFound("404", status=404),
    KeyboardInterrupt(),
], ids=lambda e: type(e).__name__)
def test_what_is_not_foreign_is_left_alone(exc: BaseException) -> None:
    assert relay_error(exc, WHAT, 10.0) is None


def test_the_message_carries_the_root_cause() -> None:
    try:
        try:
            raise ssl.SSLCertVerificationError(1, "certificate verify failed: self-signed")
        except ssl.SSLError as root:
            raise httpx.ConnectError("TLS handshake failed", request=REQUEST) from root
    except httpx.ConnectError as exc:
        error = relay_error(exc, WHAT, 10.0)
    assert str(error) == (f"{WHAT}: ConnectError: TLS handshake failed "
                          "(SSLCertVerificationError: certificate verify failed: self-signed)")
    assert describe(httpx.ReadError("")) == "ReadError"


# -- the context ------------------------------------------------------------------------


async def test_a_foreign_error_inside_leaves_as_its_relay_error_with_its_cause() -> None:
    cause = httpx.ReadError("connection reset", request=REQUEST)
    with pytest.raises(RelayUnavailable) as info:
        with relay_errors("PATCH", "http://relay", "/api/commands/cmd_1", 10.0):
            raise cause
    assert str(info.value) == f"{WHAT}: ReadError: connection reset"
    assert info.value.__cause__ is cause


@pytest.mark.parametrize("exc", [ValueError("x"), RelayNotFound("gone", status=404)],
                         ids=lambda e: type(e).__name__)
async def test_ours_and_bugs_pass_through_the_context(exc: Exception) -> None:
    with pytest.raises(type(exc)) as info:
        with relay_errors("PATCH", "http://relay", "/api/commands/cmd_1", 10.0, bounded=True):
            raise exc
    assert info.value is exc


async def test_a_bounded_context_gives_up_at_its_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    started = trio.current_time()
    with pytest.raises(RelayUnavailable) as info:
        with relay_errors("PATCH", "http://relay", "/api/commands/cmd_1", 10.0, bounded=True):
            await trio.sleep_forever()
    assert trio.current_time() - started == 10.0
    assert str(info.value) == f"{WHAT}: no answer within 10 s"
    assert info.value.__cause__ is None and info.value.__suppress_context__


async def test_a_cancellation_from_outside_is_not_translated(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.move_on_after(1) as outer:
        with relay_errors("PATCH", "http://relay", "/api/commands/cmd_1", 10.0, bounded=True):
            await trio.sleep_forever()
    assert outer.cancelled_caught and trio.current_time() == 1.0


async def test_a_body_read_as_it_arrives_is_translated_part_by_part() -> None:
    async def parts() -> AsyncIterator[bytes]:
        yield b"data: 1\n\n"
        raise httpx.RemoteProtocolError("Server disconnected without sending a chunk.",
                                        request=REQUEST)

    errors = relay_errors("GET", "http://relay", "/api/commands/stream", 10.0)
    seen: list[bytes] = []
    with pytest.raises(RelayUnavailable, match="stream: RemoteProtocolError: Server disconn"):
        async for part in errors.parts(parts()):
            seen.append(part)
    assert seen == [b"data: 1\n\n"]
