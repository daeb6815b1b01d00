"""The fleet: every managed agent's actor, and the commands for them.

``AgentFleet.execute`` validates a command's params (``_params.py``) before
anything runs, finds the agent it is about, and hands it to that agent's
actor; ``agent.spawn`` for a new agentId makes a new actor. The commands for
the host (``orchestrator.restart``, ``orchestrator.shutdown``) go to every
agent concerned at once. ``run`` first takes over the agents a previous
orchestrator process left (pid, start time and cmdline must match; zombies
are dead), then serves until cancelled, and leaves the agents running.

The agent a command is about: ``params.agentId``, else ``spawnRequestId``,
else ``policyName``, else ``tmuxSession`` (the first key present decides;
among several agents with that value, a live one, then the latest spawned).

Usage is sampled when the orchestrator is about to report (``refresh_usage``,
called by its presence before each heartbeat and registration), all agents
in one worker thread; that is also when a ``memory_max`` no kernel enforces
is enforced, and when limits nobody enforces are reported (``warnings``).
"""

from __future__ import annotations

import logging
import resource
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import trio

from supervisors import ProcessLauncher

from ._actor import AgentActor, new_agent_id
from ._agent import AgentStatus
from ._config import FleetConfig
from ._filewatch import FileWatch
from ._limits import memory_bytes, not_enforced_warning
from ._output import rotate_if_needed
from ._params import (
    CommandRejected,
    HostParams,
    RestartParams,
    Selector,
    StopParams,
    parse_compact,
    parse_host,
    parse_restart,
    parse_spawn,
    parse_stop,
)
from ._plain import end_orphans
from ._prepare import FleetContext, Launch
from ._providers import Provider
from ._resume import read_boot_id
from ._session import base_environment
from ._store import AgentStore, Reporter
from ._tmux import TmuxServer
from ._usage import sample_all

log = logging.getLogger("relay_orchestrator.actors")

# A provider's memory_max, it in bytes, and (key, value, kind) of cpu_quota, tasks_max.
_Rules = tuple[str | None, int | None, list[tuple[str, str, str]]]

AGENT_COMMANDS = ("agent.spawn", "agent.stop", "agent.restart", "agent.compact")
HOST_COMMANDS = ("orchestrator.restart", "orchestrator.shutdown")


def _raise_fd_limit() -> None:
    """Two descriptors per plain agent (FIFO, pidfd): lift the soft limit."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = hard if hard != resource.RLIM_INFINITY else 65536
        if soft != resource.RLIM_INFINITY and soft < min(wanted, 65536):
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, 65536), hard))
    except (ValueError, OSError):
        pass


class AgentFleet:
    def __init__(
        self,
        config: FleetConfig,
        *,
        store: AgentStore,
        reporter: Reporter,
        launcher: ProcessLauncher,
    ) -> None:
        env = base_environment(config.env)
        state_dir = config.state_dir
        self._config = config
        self._ctx = FleetContext(
            config=config,
            base_dir=config.base_dir.resolve(),
            store=store,
            reporter=reporter,
            launcher=launcher,
            tmux=TmuxServer(
                socket=config.tmux_socket, launcher=launcher, env=env, state_dir=state_dir
            ),
            base_env=env,
            tmux_available=shutil.which("tmux", path=env.get("PATH")) is not None,
            boot_id=read_boot_id(config.boot_id_file),
            files=FileWatch(),
        )
        self._ctx.launch_elsewhere = self._launch_elsewhere
        self._ctx.is_live = self._is_live
        self._ctx.session_ids = self._session_ids
        self._actors: dict[str, AgentActor] = {}
        self._nursery: trio.Nursery | None = None
        self._warnings: dict[tuple[str, str], str] = {}

    # -- what the orchestrator reports ---------------------------------------

    def offered_providers(self) -> list[str]:
        path = self._ctx.path
        names = self._config.provider_names()
        return [
            name
            for name in names
            if (config := self._config.provider(name)) and Provider(config).offered(path)
        ]

    def agents(self) -> list[dict[str, Any]]:
        """Every agent as a ManagedAgent, with its last usage sample (cheap)."""
        return [actor.state.to_wire() for actor in self._actors.values() if actor.state]

    def warnings(self) -> list[str]:
        """What the host does not do that the config asks (limits not enforced)."""
        return list(self._warnings.values())

    async def refresh_usage(self) -> bool:
        """Sample every running agent's usage, and act on the limits nobody else
        enforces; whether there was any agent to sample."""
        sampled = [(actor, probe) for actor in self._actors.values() if (probe := actor.probe)]
        if not sampled:
            return False
        usages = await trio.to_thread.run_sync(sample_all, [probe for _, probe in sampled])
        limits: dict[str, _Rules] = {}
        for (actor, probe), usage in zip(sampled, usages, strict=True):
            if usage is None:
                continue  # ended meanwhile: its watcher reports it
            actor.set_usage(probe, usage)
            provider = actor.state.provider if actor.state is not None else ""
            rules = limits.get(provider)
            if rules is None:
                rules = limits[provider] = self._limits_of(provider)
            memory_max, memory_limit, others = rules
            if memory_max is not None and "memory" not in probe.kernel_limits:
                if memory_limit is not None and usage.memory_rss > memory_limit:
                    actor.kill_for_memory(probe, memory_max)
            for key, value, kind in others:
                if kind not in probe.kernel_limits:
                    self._warn(provider, key, value)
        return True

    def _limits_of(self, provider: str) -> _Rules:
        """A provider's memory_max (and in bytes), and the limits only a unit can enforce."""
        config = self._config.provider(provider)
        if config is None:
            return None, None, []
        others = [
            (key, value, kind)
            for key, value, kind in (
                ("cpu_quota", config.cpu_quota, "cpu"),
                ("tasks_max", config.tasks_max, "tasks"),
            )
            if value is not None
        ]
        return config.memory_max, memory_bytes(config.memory_max), others

    def _warn(self, provider: str, key: str, value: str) -> None:
        if (provider, key) not in self._warnings:
            message = not_enforced_warning(provider, key, value)
            self._warnings[(provider, key)] = message
            log.warning("%s", message)

    def find(self, command_type: str, params: object) -> str | None:
        """The agentId a command is about, when there is one (never raises)."""
        try:
            if command_type == "agent.spawn":
                return parse_spawn(params).agent_id
            if command_type in AGENT_COMMANDS or command_type in HOST_COMMANDS:
                selector = parse_host(params).selector
                if selector.key is None:
                    return None
                return self._lookup(selector).agent_id
        except CommandRejected:
            return None
        return None

    # -- running -------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Adopt the stored agents, then serve commands until cancelled."""
        _raise_fd_limit()
        self._config.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        records = self._ctx.store.load_agents()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._ctx.nursery = nursery
                nursery.start_soon(self._ctx.files.run)
                async with trio.open_nursery() as adopting:
                    for record in records:
                        adopting.start_soon(self._adopt, record)
                await self._end_orphans()
                nursery.start_soon(self._rotate_logs)
                task_status.started()
        finally:
            self._nursery = None
            self._ctx.nursery = None

    async def _end_orphans(self) -> None:
        """End agents started but never recorded: a crash fell between the two."""
        live = [agent_id for agent_id, actor in self._actors.items() if actor.live]
        agents_dir = self._config.state_dir / "agents"
        for agent_id, pid in await trio.to_thread.run_sync(end_orphans, agents_dir, live):
            log.warning("agent %s: killed pid %d, started before a crash and never recorded",
                        agent_id, pid, extra={"agentId": agent_id, "pid": pid})

    async def _adopt(self, record: dict[str, Any]) -> None:
        assert self._nursery is not None
        try:
            agent_id = str(record["agent"]["agentId"])
        except (KeyError, TypeError):
            log.error("skipping a stored agent record without agentId")
            return
        actor = AgentActor(agent_id, self._ctx)
        self._actors[agent_id] = actor
        await self._nursery.start(actor.run, record)
        if actor.state is None:
            self._forget(actor)

    async def _rotate_logs(self) -> None:
        while True:
            await trio.sleep(self._config.log_check_interval)
            logs = [entry for actor in self._actors.values() if (entry := actor.log_rotation())]
            if logs:
                await trio.to_thread.run_sync(_rotate_all, logs)

    # -- commands ------------------------------------------------------------

    async def execute(self, command_type: str, params: object, command_id: str) -> dict[str, Any]:
        """Act on one command; its ``result``, or ``CommandRejected``."""
        if command_type == "agent.spawn":
            spawn = parse_spawn(params)
            if spawn.agent_id is None:
                spawn = attrs.evolve(spawn, agent_id=new_agent_id())
            assert spawn.agent_id is not None
            return await self._call_new(spawn.agent_id, "spawn", spawn)
        if command_type == "agent.stop":
            stop = parse_stop(params)
            return await self._lookup(stop.selector).call("stop", stop)
        if command_type == "agent.restart":
            restart = parse_restart(params)
            return await self._lookup(restart.selector).call("restart", restart)
        if command_type == "agent.compact":
            compact = parse_compact(params)
            return await self._lookup(compact.selector).call("compact", compact)
        if command_type == "orchestrator.restart":
            host = parse_host(params)
            return {"restarted": await self._for_each(host, "restart", self._restart_all)}
        if command_type == "orchestrator.shutdown":
            host = parse_host(params)
            return {"stopped": await self._for_each(host, "stop", self._stop_all)}
        raise CommandRejected(f"unsupported command type: {command_type}")

    def _actor_for(self, agent_id: str) -> AgentActor:
        actor = self._actors.get(agent_id)
        if actor is None:
            if self._nursery is None:
                raise CommandRejected("the agent fleet is not running")
            actor = AgentActor(agent_id, self._ctx)
            self._actors[agent_id] = actor
            self._nursery.start_soon(actor.run)
        return actor

    def _forget(self, actor: AgentActor) -> None:
        """Drop an actor that never got an agent (its spawn was refused)."""
        if actor.state is None and actor.pending == 0 and self._actors.get(actor.agent_id) is actor:
            del self._actors[actor.agent_id]
            actor.close_mailbox()

    async def _call_new(self, agent_id: str, kind: str, params: Any) -> dict[str, Any]:
        actor = self._actor_for(agent_id)
        try:
            return await actor.call(kind, params)
        finally:
            self._forget(actor)

    def _session_ids(self) -> set[str]:
        return {
            actor.state.provider_session_id
            for actor in self._actors.values()
            if actor.state is not None and actor.state.provider_session_id
        }

    def _is_live(self, agent_id: str) -> bool:
        actor = self._actors.get(agent_id)
        return actor is not None and actor.live

    async def _launch_elsewhere(self, launch: Launch, restart_count: int) -> dict[str, Any]:
        return await self._call_new(launch.agent_id, "launch", (launch, restart_count))

    def _lookup(self, selector: Selector) -> AgentActor:
        if selector.key is None or selector.value is None:
            raise CommandRejected("invalid params.agentId: expected string")
        if selector.key == "agentId":
            actor = self._actors.get(selector.value)
            found = [actor] if actor is not None and actor.state is not None else []
        else:
            field = {
                "spawnRequestId": "spawn_request_id",
                "policyName": "policy_name",
                "tmuxSession": "tmux_session",
            }[selector.key]
            found = [
                actor
                for actor in self._actors.values()
                if actor.state is not None and getattr(actor.state, field) == selector.value
            ]
        if not found:
            raise CommandRejected(f"no managed agent matches {selector.key}={selector.value[:200]}")
        return max(found, key=_recency)

    async def _for_each(
        self,
        host: HostParams,
        kind: str,
        everyone: Callable[[], list[AgentActor]],
    ) -> list[str]:
        """Send one command to one agent, or to each concerned at once."""
        actors = [self._lookup(host.selector)] if host.selector.key else everyone()
        params: StopParams | RestartParams
        if kind == "stop":
            params = StopParams(
                selector=host.selector, graceful=host.graceful, timeout_ms=host.timeout_ms
            )
        else:
            params = RestartParams(
                selector=host.selector, graceful=host.graceful, timeout_ms=host.timeout_ms
            )
        done: list[str] = []
        failed: list[str] = []

        async def one(actor: AgentActor) -> None:
            try:
                result = await actor.call(kind, params)
            except CommandRejected as exc:
                failed.append(f"{actor.agent_id}: {exc}")
            else:
                done.append(str(result["agentId"]))

        await _all(one(actor) for actor in actors)
        if failed:
            raise CommandRejected(
                f"{kind} failed for {len(failed)} of {len(actors)} agents: {'; '.join(failed)}"
            )
        return sorted(done)

    def _restart_all(self) -> list[AgentActor]:
        # Every agent but those asked to stop: crashed ones come back too.
        return [
            actor
            for actor in self._actors.values()
            if actor.state is not None
            and actor.params is not None
            and actor.state.status is not AgentStatus.STOPPED
        ]

    def _stop_all(self) -> list[AgentActor]:
        return [actor for actor in self._actors.values() if actor.live]


def _recency(actor: AgentActor) -> tuple[bool, int]:
    spawned = actor.state.last_spawn_at if actor.state is not None else None
    return actor.live, spawned or 0


async def _all(calls: Any) -> None:
    async with trio.open_nursery() as nursery:
        for call in calls:
            nursery.start_soon(_await, call)


async def _await(call: Awaitable[None]) -> None:
    await call


def _rotate_all(logs: list[tuple[str, int, int]]) -> None:
    for path, max_bytes, backups in logs:
        try:
            rotate_if_needed(Path(path), max_bytes, backups)
        except OSError as exc:
            log.warning("could not rotate %s: %s", path, exc)
