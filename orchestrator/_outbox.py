"""The outbox: delivers settles and agent reports from the journal, in order.

An outcome is written to the journal first (``Journal.record_outcome``);
this task then delivers it until the relay accepts it. A relay that is down
delays a settle, never loses it. An agent's newer report replaces the older
one that has not gone out yet.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio

from ._backoff import Backoff
from ._errors import RelayAuthError, RelayConflict, RelayError, RelayNotFound
from ._journal import Journal, OutboxItem, OutboxKind
from ._relay_client import RelayClient

log = logging.getLogger("relay_orchestrator.outbox")


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
        self.delivered_count = 0

    def wake(self) -> None:
        self._wake.set()

    def report_agent(self, agent: dict[str, Any]) -> None:
        """actors.Reporter: journal the report, then deliver it."""
        agent_id = agent.get("agentId")
        if not isinstance(agent_id, str):
            return
        self._journal.enqueue_report(agent_id, agent)
        self._wake.set()

    agent_changed = report_agent

    async def run(self, *, task_status: trio.TaskStatus[Outbox] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started(self)
        while True:
            items = self._journal.outbox()
            if not items:
                self._idle.set()
                await self._wake.wait()
                self._wake = trio.Event()
                continue
            self._idle = trio.Event()
            for item in items:
                if not await self._deliver(item):
                    break

    async def flush(self, timeout: float) -> bool:
        """Wait until everything journaled has gone out, at most ``timeout`` s."""
        with trio.move_on_after(timeout):
            while self._journal.outbox_size():
                self._wake.set()
                await self._idle.wait()
            return True
        return False

    async def _deliver(self, item: OutboxItem) -> bool:
        """True when the item is done with (accepted or moot); False to back off."""
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
        except RelayAuthError as exc:
            log.error("%s", exc)
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
