"""The command feed: the relay's SSE stream (or polling) → ``Command`` objects.

The stream's bytes are decoded by ``relay/_sse.py``; this loop only feeds
it. The stream is dropped after ``silence_timeout`` seconds without a byte (the
relay sends a keepalive at least every 15 s) and reopened with jittered
exponential backoff. A relay that has no stream (404/405/501) is polled.
Deduplication is not done here: the dispatcher asks the journal.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import trio

from .._errors import RelayAuthError, RelayError, RelayUnavailable
from ..relay._backoff import Backoff
from ..relay._client import RelayClient
from ..relay._sse import SSEDecoder, SSEError
from ..relay._wire import Command, WireError, structure_command

log = logging.getLogger("relay_orchestrator.daemon")

SILENCE_TIMEOUT = 45.0
MAX_EVENT_LINE = 4 * 1024 * 1024  # a longer line of the event stream ends it with an error
POLL_INTERVAL = 1.0
STREAM_RETRY_WHILE_POLLING = 60.0
NO_STREAM = (404, 405, 501)


class CommandFeed:
    def __init__(
        self,
        client: RelayClient,
        target: Callable[[], str],
        deliver: Callable[[Command], None],
        *,
        silence_timeout: float = SILENCE_TIMEOUT,
        poll_interval: float = POLL_INTERVAL,
        backoff: Backoff | None = None,
    ) -> None:
        self._client = client
        self._target = target
        self._deliver = deliver
        self.silence_timeout = silence_timeout
        self.poll_interval = poll_interval
        self._backoff = backoff or Backoff()
        self.connected = False
        self.mode = "stream"
        self.connects = 0

    async def run(
        self, *, task_status: trio.TaskStatus[CommandFeed] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started(self)
        while True:
            try:
                if self.mode == "stream":
                    await self._stream_once()
                else:
                    await self._poll_for(STREAM_RETRY_WHILE_POLLING)
                    self.mode = "stream"
                    continue
            except RelayAuthError:
                pass  # the client logs it, once
            except RelayError as exc:
                if exc.status in NO_STREAM and self.mode == "stream":
                    log.warning("relay has no command stream; polling every %gs",
                                self.poll_interval)
                    self.mode = "poll"
                    continue
                if self.connected:
                    log.warning("command stream lost: %s", exc)
            self.connected = False
            await self._backoff.sleep()

    async def _stream_once(self) -> None:
        async with self._client.stream(self._target()) as chunks:
            self.connected = True
            self.connects += 1
            log.info("command stream open (%s)", self._target())
            decoder = SSEDecoder(max_line=MAX_EVENT_LINE)
            scope = trio.CancelScope(deadline=trio.current_time() + self.silence_timeout)
            with scope:
                async for chunk in chunks:
                    scope.deadline = trio.current_time() + self.silence_timeout
                    self._backoff.healthy()
                    try:
                        events = decoder.feed(chunk)
                    except SSEError as exc:
                        raise RelayUnavailable(str(exc)) from exc
                    for event in events:
                        if event.event == "command":
                            self._on_data(event.data)
            self.connected = False
            if scope.cancelled_caught:
                log.warning("command stream silent for %gs; reconnecting", self.silence_timeout)
            else:
                log.warning("command stream closed by the relay; reconnecting")

    async def _poll_for(self, seconds: float) -> None:
        with trio.move_on_after(seconds):
            while True:
                for raw in await self._client.pending_commands(self._target()):
                    self._on_raw(raw)
                self.connected = True
                self._backoff.success()
                await trio.sleep(self.poll_interval)

    def _on_data(self, text: str) -> None:
        try:
            raw = json.loads(text)
        except ValueError:
            log.warning("ignoring a stream event that is not JSON")
            return
        self._on_raw(raw)

    def _on_raw(self, raw: object) -> None:
        try:
            command = structure_command(raw)
        except WireError as exc:
            log.warning("ignoring an unreadable command: %s", exc)
            return
        self._deliver(command)
