"""The SSE codec on its own: bytes in, events out (orchestrator/relay/_sse.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.relay._sse import SSEDecoder, SSEError, SSEEvent

STREAM = (
    b": keepalive\r\n"
    b"event: command\nid: cmd_1\ndata: {\"id\": \"cmd_1\",\n"
    b"data:  \"text\": \"a\xe2\x80\xa8b\"}\n\n"  # U+2028 inside a JSON string is no line end
    b": keepalive\r"
    b"event: command\rdata: {}\r\r"
    b"data: no event name\r\n\r\n"
    b"event: command\n\n"  # no data: nothing dispatched
    b"data: unfinished"  # the stream ended before its blank line
)
EVENTS = [
    SSEEvent(event="command", data='{"id": "cmd_1",\n "text": "a\u2028b"}', id="cmd_1"),
    SSEEvent(event="command", data="{}", id="cmd_1"),
    SSEEvent(event="message", data="no event name", id="cmd_1"),
]


def test_a_stream_read_whole() -> None:
    assert SSEDecoder(max_line=1000).feed(STREAM) == EVENTS


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_the_same_events_however_the_bytes_are_cut(cuts: list[int]) -> None:
    decoder = SSEDecoder(max_line=1000)
    bounds = [0, *sorted(cuts), len(STREAM)]
    events = []
    for start, end in zip(bounds, bounds[1:], strict=False):
        events += decoder.feed(STREAM[start:end])
    assert events == EVENTS


def test_a_crlf_split_between_two_reads_is_one_line_end() -> None:
    decoder = SSEDecoder(max_line=1000)
    assert decoder.feed(b"data: x\r") == []
    assert decoder.feed(b"\n\r") == []
    assert decoder.feed(b"\n") == [SSEEvent(event="message", data="x")]


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    events = SSEDecoder(max_line=1000).feed(b"data: \xff\n\n")
    assert events == [SSEEvent(event="message", data="\ufffd")]


@pytest.mark.parametrize("chunks", [[b"data: " + b"x" * 20 + b"\n"], [b"data: xxxxx", b"x" * 20]])
def test_a_line_over_the_limit_is_an_error(chunks: list[bytes]) -> None:
    decoder = SSEDecoder(max_line=16)
    with pytest.raises(SSEError, match="a line longer than 16 characters"):
        for chunk in chunks:
            decoder.feed(chunk)
