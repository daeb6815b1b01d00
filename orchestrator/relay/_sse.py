"""Server-Sent Events as a codec: bytes in, events out, no I/O.

The relay's command stream (PROTOCOL.md §3) as the WHATWG event-stream
format has it: UTF-8 (invalid bytes replaced), lines ended by CR, LF or
CRLF only (not ``str.splitlines``: it also splits at U+2028, U+2029,
U+0085…, which a JSON string may hold unescaped), ``:`` comments (the
keepalives), ``event``, ``data`` and ``id`` fields, one space after the
colon dropped, an event dispatched by a blank line once it has data. A line
longer than ``max_line`` characters is an ``SSEError``: the stream is not
to be trusted after it. The I/O loop (``daemon/_feed.py``) only feeds it.
"""

from __future__ import annotations

import codecs
import re

import attrs

_EOL = re.compile("\r\n|\r|\n")


class SSEError(ValueError):
    """The stream broke the format's limits (a line too long)."""


@attrs.frozen(kw_only=True)
class SSEEvent:
    event: str  # "message" when the stream named none
    data: str  # its data lines, joined by "\n"
    id: str | None = None


@attrs.define(eq=False)
class SSEDecoder:
    max_line: int
    _text: codecs.IncrementalDecoder = attrs.field(
        init=False, factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace")
    )
    _held: list[str] = attrs.field(init=False, factory=list)  # the start of a line, in pieces
    _size: int = attrs.field(init=False, default=0)
    _event: str = attrs.field(init=False, default="message")
    _data: list[str] = attrs.field(init=False, factory=list)
    _id: str | None = attrs.field(init=False, default=None)

    def feed(self, data: bytes) -> list[SSEEvent]:
        """The events that ``data`` completes (none, one or many)."""
        chunk = self._text.decode(data)
        held = self._held
        if "\n" not in chunk and "\r" not in chunk and not (held and held[-1].endswith("\r")):
            held.append(chunk)  # no end of line: nothing to split
            self._size += len(chunk)
            self._check(self._size)
            return []
        text = "".join(held) + chunk
        cr = text.endswith("\r")  # maybe the first half of a CRLF
        *lines, rest = _EOL.split(text[:-1] if cr else text)
        events = []
        for line in lines:
            self._check(len(line))
            if (event := self._line(line)) is not None:
                events.append(event)
        rest += "\r" if cr else ""
        self._check(len(rest))
        self._held, self._size = [rest], len(rest)
        return events

    def _check(self, size: int) -> None:
        if size > self.max_line:
            raise SSEError(f"event stream: a line longer than {self.max_line} characters")

    def _line(self, line: str) -> SSEEvent | None:
        if line == "":
            event = None
            if self._data:
                event = SSEEvent(event=self._event, data="\n".join(self._data), id=self._id)
            self._event, self._data = "message", []
            return event
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            self._event = value
        elif field == "data":
            self._data.append(value)
        elif field == "id" and "\0" not in value:
            self._id = value
        return None
