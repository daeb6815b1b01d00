"""One actor per managed agent: a task and a bounded mailbox.

Commands for one agent are handled one at a time, in arrival order, by its
actor; different agents' actors run concurrently. ``call`` puts a request in
the mailbox and waits for its outcome. An actor is its agent
(``ManagedAgent``, ``_managed.py``: state, process, session, how they start
and end) with a mailbox and the commands: spawn, stop, restart, compact.

When the fleet is cancelled the actors let go of their handles (FIFOs,
pidfds) and leave their agents running; a later fleet adopts them: an agent
found alive is followed again, one found dead is recorded as ended and, if
its provider's ``resume_dead_agents`` says so, started again on its session.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from ._agent import AgentState, AgentStatus, ExitInfo, now_ms
from ._managed import ManagedAgent, Running
from ._params import (
    CommandRejected,
    CompactParams,
    RestartParams,
    SpawnParams,
    StopParams,
    parse_spawn,
)
from ._plain import PlainSession
from ._prepare import FleetContext, Launch
from ._process import ExitStatus, Liveness, ProcessIdentity, ProcessWatch, liveness, reap
from ._providers import reload_input
from ._resume import (
    HOST_REBOOTED,
    START_INTERRUPTED,
    host_rebooted,
    resumed_from,
    wants_resume,
)
from ._session import Session
from ._tmux import TmuxSession
from ._usage import UsageProbe

log = logging.getLogger("relay_orchestrator.actors")

MAILBOX_SIZE = 16


@attrs.define(eq=False)
class _Request:
    kind: str  # "spawn" | "launch" | "stop" | "restart" | "compact"
    params: Any
    done: trio.Event = attrs.field(factory=trio.Event)
    result: dict[str, Any] | None = None
    error: CommandRejected | None = None



class AgentActor(ManagedAgent):
    def __init__(self, agent_id: str, ctx: FleetContext) -> None:
        super().__init__(agent_id, ctx)
        self.pending = 0
        self._send, self._receive = trio.open_memory_channel[_Request](MAILBOX_SIZE)

    # -- the mailbox ---------------------------------------------------------

    async def call(self, kind: str, params: Any) -> dict[str, Any]:
        request = _Request(kind, params)
        self.pending += 1
        try:
            try:
                await self._send.send(request)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise CommandRejected("the agent fleet is not running") from None
            await request.done.wait()
        finally:
            self.pending -= 1
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def close_mailbox(self) -> None:
        self._send.close()

    async def run(
        self,
        record: dict[str, Any] | None = None,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if record is not None:
                    try:
                        await self._adopt(record)
                    except Exception:
                        log.exception("could not take over agent %s", self.agent_id)
                task_status.started()
                async for request in self._receive:
                    await self._serve(request)
        finally:
            if self._running is not None:
                self._running.watch.close()
                self._running.session.close()
            while True:
                try:
                    request = self._receive.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                request.error = CommandRejected("the agent fleet stopped before the command ran")
                request.done.set()
            self._receive.close()

    async def _serve(self, request: _Request) -> None:
        handlers: dict[str, Callable[[Any], Awaitable[dict[str, Any]]]] = {
            "spawn": self._spawn,
            "launch": self._launch_request,
            "stop": self._stop,
            "restart": self._restart,
            "compact": self._compact,
        }
        try:
            request.result = await handlers[request.kind](request.params)
        except CommandRejected as exc:
            request.error = exc
        except Exception as exc:
            log.exception("agent %s: %s failed", self.agent_id, request.kind)
            # The message stays in the log: it might quote anything.
            request.error = CommandRejected(
                f"internal error ({type(exc).__name__}); the orchestrator's log has the details"
            )
        finally:
            if not request.done.is_set():
                if request.result is None and request.error is None:
                    request.error = CommandRejected("the command was interrupted")
                request.done.set()

    # -- spawn ---------------------------------------------------------------

    async def _spawn(self, params: SpawnParams) -> dict[str, Any]:
        if self.live:
            raise CommandRejected(f"agent already running: {self.agent_id}")
        launch = await self._ctx.prepare(params, agent_id=self.agent_id)
        restarts = self.state.restart_count if self.state is not None else 0
        return await self._start(launch, restarts)

    async def _launch_request(self, params: tuple[Launch, int]) -> dict[str, Any]:
        if self.live:
            raise CommandRejected(f"agent already running: {self.agent_id}")
        return await self._start(*params)


    # -- stop ----------------------------------------------------------------

    async def _stop(self, params: StopParams) -> dict[str, Any]:
        await self._stop_running(params.graceful, params.timeout_ms)
        return self._stop_result()

    def _stop_result(self) -> dict[str, Any]:
        assert self.state is not None
        exit = self.state.exit
        return {
            "agentId": self.agent_id,
            "exitCode": exit.exit_code if exit else None,
            "signal": exit.signal if exit else None,
        }


    # -- restart -------------------------------------------------------------

    async def _restart(self, params: RestartParams) -> dict[str, Any]:
        assert self.state is not None and self.params is not None
        spawn = params.restart_spawn
        if spawn is None:  # orchestrator.restart: the last SpawnParams again
            spawn = attrs.evolve(self.params, agent_id=self.agent_id)
        new_id = spawn.agent_id or new_agent_id()
        if new_id != self.agent_id and self._ctx.is_live(new_id):
            raise CommandRejected(f"agent already running: {new_id}")
        launch = await self._ctx.prepare(
            spawn, agent_id=new_id, prefix="params.restartSpawn"
        )  # checked completely before the agent is stopped
        previous_pid = self.state.pid
        await self._stop_running(params.graceful, params.timeout_ms)
        restarts = self.state.restart_count + 1
        if new_id == self.agent_id:
            result = await self._start(launch, restarts)
        else:
            assert self._ctx.launch_elsewhere is not None
            result = await self._ctx.launch_elsewhere(launch, restarts)
        return {
            "agentId": result["agentId"],
            "spawnRequestId": result["spawnRequestId"],
            "pid": result["pid"],
            "previousPid": previous_pid,
        }

    # -- compact -------------------------------------------------------------

    async def _compact(self, params: CompactParams) -> dict[str, Any]:
        assert self.state is not None
        running = self._running
        if running is None or self.state.status is not AgentStatus.RUNNING:
            raise CommandRejected(
                f"agent is not running: {self.agent_id} ({self.state.status.value})"
            )
        files, missing = self._ctx.memory_files(self.state, params.always_reload)
        config = self._ctx.config.provider(self.state.provider)
        assert config is not None
        typist = self._typist(running)
        compacted: bool | None = None
        await typist.type(config.compact_input)
        if typist.tracker is not None:
            compacted = await typist.compaction(config.compact_timeout)
        for path, content in files:
            await typist.type(reload_input(path, content))
        result: dict[str, Any] = {
            "agentId": self.agent_id,
            "compacted": compacted,
            "reloaded": [path for path, _ in files],
        }
        if missing:
            result["missing"] = missing
        return result

    # -- adoption ------------------------------------------------------------

    async def _adopt(self, record: dict[str, Any]) -> None:
        """Take over the agent a stored record describes, alive or not."""
        self.state = state = AgentState.from_wire(record["agent"])
        self.params = parse_spawn(record["params"])
        process = record.get("process")
        self._identity = ProcessIdentity.from_json(process) if process else None
        self._session_json = record.get("session")
        if not state.status.live:
            return
        if state.status is AgentStatus.STARTING and self._identity is None:
            # Stored as starting, never started: a resume (or a start) the
            # previous orchestrator did not finish. Never done twice.
            state.status = AgentStatus.FAILED
            state.exit = ExitInfo(
                exit_code=None, signal=None, last_output="", at=now_ms(), reason=START_INTERRUPTED
            )
            self._commit()
            return
        session = self._reopen_session()
        watch = ProcessWatch.open(self._identity) if self._identity else None
        if watch is not None and session is not None:
            assert self._nursery is not None and self._identity is not None
            probe = UsageProbe(
                self._identity.pid,
                create_time=self._identity.create_time,
                unit=self._session_json_unit(session),
            )
            running = Running(watch, session, probe)
            self._running = running
            self._track(running)
            if state.status is not AgentStatus.RUNNING:
                state.status = AgentStatus.RUNNING
                self._commit()
            self._nursery.start_soon(self._watch, running)
            log.info("agent %s adopted (pid %s)", self.agent_id, state.pid)
            return
        if watch is not None:
            watch.close()
        status = ExitStatus()
        if self._identity is not None and liveness(self._identity) is Liveness.ZOMBIE:
            status = reap(self._identity.pid) or status  # our own child, still unreaped
        output = ""
        if session is not None:
            status, output = await session.finish(status)
        was_stopping = state.status is AgentStatus.STOPPING
        rebooted = host_rebooted(record.get("bootId"), self._ctx.boot_id)
        self._ended(
            None, was_stopping, status, output, reason=HOST_REBOOTED if rebooted else None
        )
        if not was_stopping:
            await self._resume_if_wanted(rebooted)

    def _reopen_session(self) -> Session | None:
        data = self._session_json
        if not data:
            return None
        if data.get("kind") == "tmux":
            return TmuxSession.reopen(self._ctx.tmux, data)
        return PlainSession.reopen(data)

    async def _resume_if_wanted(self, rebooted: bool | None) -> None:
        """``resume_dead_agents``: start an agent found dead again, resuming its session."""
        assert self.state is not None and self.params is not None
        config = self._ctx.config.provider(self.state.provider)
        policy = config.resume_dead_agents if config is not None else "never"
        if not wants_resume(policy, rebooted):
            return
        if config is not None and config.resume_args and not self.state.provider_session_id:
            log.warning("agent %s: not resumed: its CLI's session id was never learnt",
                        self.agent_id)
            return
        try:
            launch = await self._ctx.prepare(
                attrs.evolve(self.params, agent_id=self.agent_id),
                agent_id=self.agent_id,
                resume_session=self.state.provider_session_id,
            )
            await self._start(
                launch, self.state.restart_count + 1, resumed=resumed_from(self.state)
            )
        except CommandRejected as exc:
            log.warning("could not resume agent %s: %s", self.agent_id, exc)
        else:
            log.info("agent %s resumed (provider session %s)", self.agent_id,
                     self.state.provider_session_id)


def new_agent_id() -> str:
    return f"ag_{os.urandom(8).hex()}"
