"""The dispatcher: claim → route by type → handler → outcome in the journal.

``submit`` is called synchronously by the feed for every command it reads.
It drops what the journal has seen (at most once), writes the claim intent,
and queues the command on its *lane*: commands about one agent (same
``agentId``/``spawnRequestId``/``policyName``/``tmuxSession``) are claimed
and acted on in arrival order; different lanes run concurrently, so a slow
agent never blocks the bus.

A claim that fails (5xx, refused, timeout) is retried with backoff, never
dropped. 409 means not ours — unless an earlier attempt's answer was lost,
in which case the command is read back: ``running`` means our claim took
effect.

Claims run ahead of acting: while a lane acts on its first command, the
claims of the next ``CLAIM_AHEAD`` are already on their way (a claim has no
effect here but the journal's, and the intents are made durable before any
claim leaves). Acting stays one at a time, in arrival order; a command may
show ``running`` at the relay while it waits for its turn in its lane.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from .._errors import RelayAuthError, RelayConflict, RelayError, RelayNotFound, RelayUnavailable
from ..relay._backoff import Backoff
from ..relay._client import RelayClient
from ..relay._wire import Command, CommandStatus, Outcome
from ._journal import CommandState, Journal

log = logging.getLogger("relay_orchestrator.daemon")

Handler = Callable[[Command], Awaitable[Outcome | None]]
LANE_KEYS = ("agentId", "spawnRequestId", "policyName", "tmuxSession")
CLAIM_AHEAD = 8  # claims a lane sends before its turn to act


class Rejected(Exception):
    """Raised by a handler: the command fails with this one sentence."""


def lane_key(command: Command) -> str:
    params = command.params
    if isinstance(params, dict):
        for key in LANE_KEYS:
            value = params.get(key)
            if isinstance(value, str) and value:
                return f"{key}={value}"
    return "*" if command.type.startswith("orchestrator.") else f"cmd={command.id}"


def settle_order(lane: str, body: dict[str, Any]) -> tuple[str, ...]:
    """The outbox order keys of a settle: its lane, and every agent it names."""
    keys = [f"lane:{lane}"]
    if lane.startswith("agentId="):
        keys.append(f"agent:{lane[len('agentId='):]}")
    result = body.get("result")
    if isinstance(result, dict):
        named = [result.get("agentId")]
        for field in ("stopped", "restarted"):
            value = result.get(field)
            if isinstance(value, list):
                named.extend(value)
        keys.extend(f"agent:{agent_id}" for agent_id in named if isinstance(agent_id, str))
    return tuple(dict.fromkeys(keys))


@attrs.define(eq=False)
class _Entry:
    command: Command
    claim: bool  # False: claimed by an earlier process already (recovery)
    claimed: trio.Event | None = None  # set once the claim has an answer
    ours: bool = False  # the relay gave it to us


@attrs.define(eq=False)
class _Lane:
    queue: deque[_Entry] = attrs.field(factory=deque)


class Dispatcher:
    def __init__(
        self,
        journal: Journal,
        client: RelayClient,
        handlers: dict[str, Handler],
        *,
        on_outcome: Callable[[], None],
        backoff_factory: Callable[[], Backoff] = Backoff,
    ) -> None:
        self._journal = journal
        self._client = client
        self._handlers = handlers
        self._on_outcome = on_outcome
        self._backoff_factory = backoff_factory
        self._lanes: dict[str, _Lane] = {}
        self._nursery: trio.Nursery | None = None
        self._accepting = True
        self.acted = 0
        self.in_flight = 0
        self._idle = trio.Event()
        self._idle.set()

    # -- intake -------------------------------------------------------------
    def submit(self, command: Command) -> None:
        if not self._accepting or command.status is not CommandStatus.PENDING:
            return
        if not self._journal.record_intent(command.id, command.type, command.params):
            return  # seen before: acted on at most once
        self._enqueue(command, claim=True)

    def resume(self, command: Command, *, claimed: bool) -> None:
        """Re-enter a command the journal holds (crash recovery)."""
        self._enqueue(command, claim=not claimed)

    def _enqueue(self, command: Command, *, claim: bool) -> None:
        assert self._nursery is not None, "dispatcher not running"
        key = lane_key(command)
        lane = self._lanes.get(key)
        self.in_flight += 1
        self._idle = trio.Event() if self._idle.is_set() else self._idle
        if lane is None:
            lane = self._lanes[key] = _Lane()
            lane.queue.append(_Entry(command, claim))
            self._nursery.start_soon(self._run_lane, key, lane)
        else:
            lane.queue.append(_Entry(command, claim))

    # -- lanes ----------------------------------------------------------------
    async def run(
        self, *, task_status: trio.TaskStatus[Dispatcher] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started(self)
            await trio.sleep_forever()

    def stop_accepting(self) -> None:
        self._accepting = False

    async def wait_idle(self) -> None:
        await self._idle.wait()

    async def _run_lane(self, key: str, lane: _Lane) -> None:
        try:
            while lane.queue:
                self._claim_ahead(lane)
                try:
                    await self._process(key, lane.queue[0])
                finally:
                    lane.queue.popleft()
                    self.in_flight -= 1
                    if self.in_flight == 0:
                        self._idle.set()
        finally:
            if self._lanes.get(key) is lane:
                del self._lanes[key]

    def _claim_ahead(self, lane: _Lane) -> None:
        assert self._nursery is not None
        for index, entry in enumerate(lane.queue):
            if index > CLAIM_AHEAD:
                break
            if entry.claim and entry.claimed is None:
                entry.claimed = trio.Event()
                self._nursery.start_soon(self._claim_entry, entry)

    async def _claim_entry(self, entry: _Entry) -> None:
        assert entry.claimed is not None
        try:
            self._journal.make_durable()  # the intent is durable before the claim leaves
            entry.ours = await self._claim(entry.command)
            # Lazily: lost in a crash, recovery asks the relay what became of it.
            state = CommandState.CLAIMED if entry.ours else CommandState.DROPPED
            self._journal.set_state(entry.command.id, state, lazy=True)
        finally:
            entry.claimed.set()

    async def _process(self, lane: str, entry: _Entry) -> None:
        command = entry.command
        if entry.claim:
            assert entry.claimed is not None
            await entry.claimed.wait()
            if not entry.ours:
                return
        outcome = await self._act(command)
        if outcome is None:
            return  # left running on purpose (orchestrator.upgrade)
        self.acted += 1
        body = outcome.body()
        self._journal.record_outcome(command.id, body, order=settle_order(lane, body))
        self._on_outcome()

    async def _claim(self, command: Command) -> bool:
        backoff = self._backoff_factory()
        answer_lost = False
        while True:
            try:
                await self._client.patch_command(command.id, {"status": "running"})
                return True
            except RelayConflict:
                if not answer_lost:
                    return False
                return await self._claimed_by_lost_answer(command)
            except RelayNotFound:
                log.warning("relay does not know command %s; not acting on it", command.id,
                            extra={"commandId": command.id})
                return False
            except RelayUnavailable as exc:
                answer_lost = answer_lost or exc.status is None
                log.warning("claim of %s deferred: %s", command.id, exc,
                            extra={"commandId": command.id})
            except RelayAuthError:
                pass  # the client logs it, once
            except RelayError as exc:
                log.warning("claim of %s deferred: %s", command.id, exc,
                            extra={"commandId": command.id})
            await backoff.sleep()

    async def _claimed_by_lost_answer(self, command: Command) -> bool:
        backoff = self._backoff_factory()
        while True:
            try:
                current = await self._client.get_command(command.id)
            except RelayNotFound:
                return False
            except RelayError:
                await backoff.sleep()
                continue
            return isinstance(current, dict) and current.get("status") == "running"

    async def _act(self, command: Command) -> Outcome | None:
        handler = self._handlers.get(command.type)
        if handler is None:
            return Outcome.failed(f"unsupported command type: {command.type}")
        try:
            return await handler(command)
        except Rejected as exc:
            return Outcome.failed(str(exc))
        except Exception:  # a handler bug must not take the bus down
            # Its text may quote the command's env values or paths: it goes to
            # the log only, and the settle names the log line by an error id.
            error_id = f"err_{os.urandom(6).hex()}"
            log.exception("command %s (%s) crashed its handler (error %s)", command.id,
                          command.type, error_id, extra={"commandId": command.id})
            return Outcome.failed(
                f"internal error while handling {command.type} (error {error_id}; "
                f"the orchestrator's log has the details)"
            )
