"""The outbox: delivers settles and agent reports from the journal.

An outcome is written to the journal first (``Journal.record_outcome``);
this task then delivers it until the relay accepts it. A relay that is down
delays a settle, never loses it. An agent's newer report replaces the older
one that has not gone out yet.

Order: items that share an order key go out one after another, in the order
they were journaled; others go out side by side, at most ``MAX_IN_FLIGHT``
at once. An agent's reports share the key ``agent:<id>``; a settle carries
the keys the dispatcher gives it (its lane, and ``agent:<id>`` of every agent
its result names), so the commands about one agent settle in the order they
were acted on, and never before the reports that came before them. While the
relay fails, one item at a time is tried, with backoff.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable
from typing import Any

import trio

from .._errors import RelayAuthError, RelayConflict, RelayError, RelayNotFound
from ..relay._backoff import Backoff
from ..relay._client import RelayClient
from ._journal import Journal, OutboxItem, OutboxKind

log = logging.getLogger("relay_orchestrator.daemon")

MAX_IN_FLIGHT = 16
REPORT_SLOTS = 4  # more, for agent reports only
IDLE_FLUSH = 1.0  # seconds of quiet before the lazy marks are committed


def order_keys(item: OutboxItem) -> tuple[str, ...]:
    if item.kind is OutboxKind.AGENT:
        return (f"agent:{item.key}",)
    return item.order or (f"command:{item.key}",)


class Outbox:
    def __init__(
        self,
        journal: Journal,
        client: RelayClient,
        orchestrator_id: str,
        *,
        on_forgotten: Callable[[], None] = lambda: None,
        backoff: Backoff | None = None,
    ) -> None:
        self._journal = journal
        self._client = client
        self._orch_id = orchestrator_id
        self._on_forgotten = on_forgotten
        self._backoff = backoff or Backoff()
        self._wake = trio.Event()
        self._idle = trio.Event()
        # Items waiting, per order key, oldest first; an item may go once it
        # heads the queue of each of its keys.
        self._queues: dict[str, deque[OutboxItem]] = {}
        # Items free to go, reports and settles taken in turn; reports have
        # slots of their own (an agent's crash reaches the relay at once,
        # even while the settles of a burst fill the others).
        self._ready_reports: deque[OutboxItem] = deque()
        self._ready_settles: deque[OutboxItem] = deque()
        self._report_turn = True
        self._in_flight: set[int] = set()
        self._failing = False  # the last delivery failed: one at a time until one succeeds
        self.delivered_count = 0
        for item in journal.outbox(None):
            self._arrived(item)
        journal.watch_outbox(self._arrived)

    def wake(self) -> None:
        self._wake.set()

    def report_agent(self, agent: dict[str, Any]) -> None:
        """actors.Reporter: journal the report, then deliver it."""
        agent_id = agent.get("agentId")
        if not isinstance(agent_id, str):
            return
        self._journal.enqueue_report(agent_id, agent)

    agent_changed = report_agent

    def _arrived(self, item: OutboxItem) -> None:
        heads = True
        for key in order_keys(item):
            queue = self._queues.setdefault(key, deque())
            heads = heads and not queue
            queue.append(item)
        if heads:
            self._queue_ready(item)
        self._wake.set()

    def _finished(self, item: OutboxItem) -> None:
        """``item`` is done with: whatever it held back may now be ready."""
        for key in order_keys(item):
            queue = self._queues[key]
            assert queue[0] is item
            queue.popleft()
            if not queue:
                del self._queues[key]
            elif all(self._queues[k][0] is queue[0] for k in order_keys(queue[0])):
                self._queue_ready(queue[0])

    async def run(self, *, task_status: trio.TaskStatus[Outbox] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            task_status.started(self)
            while True:
                self._start_ready(nursery)
                idle = not self._in_flight and not self._journal.outbox_size()
                if idle:
                    self._idle.set()
                elif self._idle.is_set():
                    self._idle = trio.Event()
                with trio.move_on_after(IDLE_FLUSH if idle else math.inf) as quiet:
                    await self._wake.wait()
                if quiet.cancelled_caught:
                    # Quiet for a while: the lazy "delivered" marks go to disk
                    # (not after every command: one commit fewer each).
                    self._journal.flush()
                    await self._wake.wait()
                self._wake = trio.Event()

    def _queue_ready(self, item: OutboxItem, *, first: bool = False) -> None:
        ready = self._ready_reports if item.kind is OutboxKind.AGENT else self._ready_settles
        if first:
            ready.appendleft(item)
        else:
            ready.append(item)

    def _next_ready(self, limit: int, report_limit: int) -> OutboxItem | None:
        """Reports and settles in turn: neither starves the other (a report
        waits for the settle of its agent's earlier command)."""
        report = bool(self._ready_reports) and len(self._in_flight) < report_limit
        settle = bool(self._ready_settles) and len(self._in_flight) < limit
        if report and (not settle or self._report_turn):
            self._report_turn = False
            return self._ready_reports.popleft()
        if settle:
            self._report_turn = True
            return self._ready_settles.popleft()
        return None

    def _start_ready(self, nursery: trio.Nursery) -> None:
        if self._ready_reports or self._ready_settles:
            self._journal.make_durable()  # what leaves is durable: one commit for the batch
        limit = 1 if self._failing else MAX_IN_FLIGHT
        # Reports have slots of their own: settles in flight never hold one back.
        report_limit = 1 if self._failing else MAX_IN_FLIGHT + REPORT_SLOTS
        while (item := self._next_ready(limit, report_limit)) is not None:
            if not self._journal.pending(item):  # replaced by a newer report
                self._finished(item)
                continue
            self._in_flight.add(item.seq)
            nursery.start_soon(self._deliver_one, item)

    async def flush(self) -> None:
        """Wait until everything journaled has gone out (bound it with a cancel scope)."""
        while self._journal.outbox_size() or self._in_flight:
            self._wake.set()
            await self._idle.wait()

    async def _deliver_one(self, item: OutboxItem) -> None:
        ok = False
        try:
            ok = await self._deliver(item)
        finally:
            self._in_flight.discard(item.seq)
            if ok:
                self._finished(item)
            else:
                self._queue_ready(item, first=True)  # its turn again, after the backoff
            self._failing = not ok
            self._wake.set()

    async def _deliver(self, item: OutboxItem) -> bool:
        """True when the item is done with (accepted or moot); False after a backoff."""
        try:
            if item.kind is OutboxKind.SETTLE:
                await self._client.patch_command(item.key, item.body)
            else:
                await self._client.put_agent(self._orch_id, item.key, item.body)
        except RelayConflict:
            if item.kind is OutboxKind.SETTLE and not await self._settled_as(item):
                log.warning(
                    "relay refused the outcome of command %s: it is no longer running",
                    item.key, extra={"commandId": item.key},
                )
        except RelayNotFound:
            if item.kind is OutboxKind.AGENT:
                self._on_forgotten()
                await self._backoff.sleep()
                return False
            log.warning("relay does not know command %s; outcome dropped", item.key,
                        extra={"commandId": item.key})
        except RelayAuthError:  # the client logs it, once
            await self._backoff.sleep()
            return False
        except RelayError as exc:
            log.warning("delivery deferred: %s", exc)
            await self._backoff.sleep()
            return False
        self._journal.delivered(item)
        self._backoff.success()
        self.delivered_count += 1
        return True

    async def _settled_as(self, item: OutboxItem) -> bool:
        try:
            current = await self._client.get_command(item.key)
        except RelayError:
            return False
        return isinstance(current, dict) and current.get("status") == item.body.get("status")
