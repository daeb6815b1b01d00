"""The orchestrator process: one nursery tree (DESIGN.md).

    run_orchestrator()
     ├─ Journal       SQLite (WAL): claimed ids, outcomes, agents, pending upgrade
     ├─ AgentFleet    adopts the agents the journal knows, runs their actors
     ├─ Presence      register (after adoption), heartbeat, re-register on 404
     ├─ Outbox        settles and agent reports, in order, until accepted
     ├─ Dispatcher    claim → route → handler → outcome
     └─ CommandFeed   SSE stream (or polling) → Dispatcher.submit

Start: settings → journal → supervisor → adopt → recover unfinished commands
→ register → READY=1 → stream. Stop (SIGTERM/SIGINT or ``stop()``): stop
taking commands, let in-flight ones finish briefly, flush the outbox, close
the stream, STOPPING=1, return. Agents keep running.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

import actors
import supervisors

from .._daemon_log import LogPlace
from .._errors import RelayError, RelayNotFound
from .._settings import Settings
from .._version import current_version
from ..http._transport import PlainHTTPTransport
from ..relay._client import RelayClient, make_http_client, make_http_transport, plain_parts
from ..relay._wire import Command, CommandStatus, Outcome, WireError, structure_command
from ..upgrade._context import UpgradeContext
from ..upgrade._handler import settle_after_restart, upgrade_handler
from ._dispatcher import Dispatcher, Handler, Rejected
from ._feed import CommandFeed
from ._journal import CommandState, Journal
from ._outbox import Outbox
from ._presence import Identity, Presence
from ._status import StatusWriter

log = logging.getLogger("relay_orchestrator.daemon")

AGENT_COMMANDS = (
    "agent.spawn",
    "agent.stop",
    "agent.restart",
    "agent.compact",
    "orchestrator.restart",
    "orchestrator.shutdown",
)
STOP_GRACE = 2.0  # in-flight commands may finish within this
FLUSH_GRACE = 1.5  # then the outbox gets this long


def orchestrator_id(settings: Settings, journal: Journal) -> str:
    if settings.id:
        return settings.id
    known = journal.get_meta("orchestrator_id")
    if isinstance(known, str) and known:
        return known
    host = "".join(c if c.isalnum() or c in "-_." else "-" for c in socket.gethostname())
    generated = f"orch-{host[:40]}-{os.urandom(3).hex()}"
    journal.set_meta("orchestrator_id", generated)
    return generated


def fleet_config(settings: Settings) -> actors.FleetConfig:
    from .._errors import ConfigError

    providers = {}
    for name, table in settings.providers.items():
        try:
            providers[name] = actors.provider_config_from_table(name, dict(table))
        except ValueError as exc:
            raise ConfigError(f"[providers.{name}] {exc}") from exc
    return actors.FleetConfig(
        base_dir=settings.base_dir.resolve(),
        state_dir=settings.state_dir,
        providers=providers,
        tmux_socket=tmux_socket(settings),
    )


def tmux_socket(settings: Settings) -> str:
    """``relay-orchestrator`` for the host's orchestrator; one of its own for any other
    state dir (a ``dev`` run, a test), so that two never share agents' sessions."""
    from .._settings import default_state_dir

    if settings.state_dir.resolve() == default_state_dir().resolve():
        return "relay-orchestrator"
    import hashlib

    path = str(settings.state_dir.resolve()).encode()
    digest = hashlib.sha1(path, usedforsecurity=False).hexdigest()[:8]
    return f"relay-orchestrator-{digest}"


def as_reported(agent: dict[str, Any]) -> dict[str, Any]:
    """An agent as the relay is told of it: ``usage`` only once it has been
    measured. Before its first sample an agent's usage is all zeros, and a
    relay would show a running agent using "0 MB"."""
    usage = agent.get("usage")
    if isinstance(usage, dict) and not usage.get("memoryRss") and not usage.get("memoryPeak"):
        agent = {key: value for key, value in agent.items() if key != "usage"}
    return agent


@attrs.define(eq=False)
class Orchestrator:
    """Handle on a running orchestrator (tests and ``dev`` use it)."""

    settings: Settings
    journal: Journal
    host: Any  # supervisors.HostSupervisor
    client: RelayClient
    fleet: actors.AgentFleet
    presence: Presence
    outbox: Outbox
    dispatcher: Dispatcher
    feed: CommandFeed
    version: str
    status_writer: Any = None
    # Where ``run`` sends the log (None: only standard error, as under ``dev``).
    log_place: LogPlace | None = None
    started_at: int = attrs.field(factory=lambda: int(time.time() * 1000))
    _stop: trio.Event = attrs.field(factory=trio.Event)

    @property
    def id(self) -> str:
        return self.presence.identity.id

    @property
    def agent_id(self) -> str:
        return self.presence.agent_id

    def stop(self) -> None:
        self._stop.set()

    def upgrade_context(self) -> UpgradeContext:
        return UpgradeContext(journal=self.journal, settings=self.settings, version=self.version,
                              host=self.host, beat=self.presence.beat_now, stop=self.stop)

    def status(self) -> dict[str, Any]:
        place = self.log_place or LogPlace()
        if place.journal_unit is not None and self.host.self_unit:
            place = attrs.evolve(place, journal_unit=self.host.self_unit)
        return {
            "id": self.id,
            "agentId": self.agent_id,
            "version": self.version,
            "startedAt": self.started_at,
            "supervisor": self.host.name,
            "selfUnit": self.host.self_unit,
            "heartbeatInterval": self.settings.heartbeat_interval,
            "log": place.to_json(),
            "relay": {
                "url": self.client.base_url,
                "connected": self.presence.connected,
                "stream": self.feed.connected,
                "lastError": self.presence.last_error,
            },
            "outbox": self.journal.outbox_size(),
            "agents": [as_reported(agent) for agent in self.fleet.agents()],
            "warnings": self.fleet.warnings(),
        }


async def run_orchestrator(
    settings: Settings,
    *,
    relay_verify: str | bool = True,
    extra_handlers: dict[str, Callable[[Orchestrator], Handler]] | None = None,
    log_place: LogPlace | None = None,
    task_status: trio.TaskStatus[Orchestrator] = trio.TASK_STATUS_IGNORED,
) -> None:
    if not settings.relay_url:
        from .._errors import ConfigError

        raise ConfigError("--relay-url is required (or RELAY_ORCHESTRATOR_RELAY_URL)")
    version = current_version()
    journal = Journal.open(settings.state_dir)
    try:
        orch_id = orchestrator_id(settings, journal)
        host = supervisors.detect(settings.supervisor, settings.self_unit)
        verify = str(settings.ca_file) if settings.ca_file is not None else relay_verify
        transport = make_http_transport(settings.relay_url, verify=verify)
        # An http:// relay: our own transport alone, httpx never loaded; an
        # https:// one: an httpx client that owns its transport.
        plain = isinstance(transport, PlainHTTPTransport) and plain_parts(settings.relay_url)
        http = None if plain else make_http_client(settings.relay_url, transport=transport)
        async with http or transport:  # closes its connections on the way out
            client = RelayClient(settings.relay_url, settings.read_token, http=http,
                                 transport=transport)
            changes = _Changes(host=host)
            fleet = actors.AgentFleet(
                fleet_config(settings),
                store=journal,
                reporter=changes,
                launcher=host.launcher,
            )
            identity = Identity(
                id=orch_id,
                version=version,
                base_dir=str(settings.base_dir.resolve()),
                supervisor=host.name,
                self_unit=host.self_unit,
                self_upgrade=bool(host.can_self_upgrade),
                providers=fleet.offered_providers(),
            )
            presence = Presence(
                identity,
                client,
                lambda: [as_reported(agent) for agent in fleet.agents()],
                heartbeat_interval=settings.heartbeat_interval,
                on_status=changes.status_line,
                before_report=lambda: _durable_then(journal, fleet.refresh_usage,
                                                    changes.sampled),
            )
            outbox = Outbox(journal, client, orch_id, on_forgotten=presence.request_register)
            changes.outbox = outbox
            handlers: dict[str, Handler] = {}
            dispatcher = Dispatcher(journal, client, handlers, on_outcome=outbox.wake)
            feed = CommandFeed(client, lambda: presence.agent_id, dispatcher.submit)
            orch = Orchestrator(
                settings=settings, journal=journal, host=host, client=client, fleet=fleet,
                presence=presence, outbox=outbox, dispatcher=dispatcher, feed=feed,
                version=version, log_place=log_place,
            )
            changes.status = orch.status_writer = StatusWriter(settings.state_dir, orch.status)
            for ctype in AGENT_COMMANDS:
                handlers[ctype] = _fleet_handler(fleet)
            for ctype, make in (extra_handlers or {}).items():
                handlers[ctype] = make(orch)
            if "orchestrator.upgrade" not in handlers:
                handlers["orchestrator.upgrade"] = upgrade_handler(orch.upgrade_context())
            await _serve(orch, task_status)
    finally:
        journal.close()


async def _serve(orch: Orchestrator, task_status: trio.TaskStatus[Orchestrator]) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(orch.fleet.run)  # adoption happens before registration
        await nursery.start(orch.dispatcher.run)
        unfinished = orch.journal.unfinished()
        await nursery.start(orch.presence.run)
        orch.host.notify_ready(orch.presence.status_line())
        await nursery.start(orch.outbox.run)
        nursery.start_soon(_recover, orch, unfinished)
        await nursery.start(orch.feed.run)
        await nursery.start(orch.status_writer.run)
        if orch.host.watchdog:
            nursery.start_soon(_watchdog, orch)
        log.info("orchestrator %s %s up (supervisor %s); %d agents", orch.id, orch.version,
                 orch.host.name, len(orch.fleet.agents()))
        task_status.started(orch)
        await orch._stop.wait()
        await _shutdown(orch, nursery)


async def _shutdown(orch: Orchestrator, nursery: trio.Nursery) -> None:
    orch.host.notify_stopping("stopping")
    orch.dispatcher.stop_accepting()
    with trio.move_on_after(STOP_GRACE):
        await orch.dispatcher.wait_idle()
    if orch.settings.stop_agents_on_exit:
        with trio.move_on_after(STOP_GRACE):
            try:
                await orch.fleet.execute("orchestrator.shutdown", {}, "shutdown")
            except actors.CommandRejected:
                pass
            await _end_idle_tmux_server(tmux_socket(orch.settings))
    with trio.move_on_after(FLUSH_GRACE):
        await orch.outbox.flush()
    nursery.cancel_scope.cancel()
    log.info("orchestrator %s stopped; %s", orch.id,
             "its agents stopped" if orch.settings.stop_agents_on_exit else "agents left running")


async def _end_idle_tmux_server(socket: str) -> None:
    """With every agent stopped, the tmux server we started has nothing left to hold."""
    import shutil

    if shutil.which("tmux") is None:
        return
    argv = ["tmux", "-N", "-L", socket]
    listed = await trio.run_process([*argv, "list-sessions"], capture_stdout=True,
                                    capture_stderr=True, check=False)
    if listed.returncode == 0 and listed.stdout.strip():
        return  # something still runs there: leave it
    await trio.run_process([*argv, "kill-server"], capture_stdout=True, capture_stderr=True,
                           check=False)


async def _watchdog(orch: Orchestrator) -> None:
    interval = orch.host.watchdog
    while True:
        orch.host.notify_watchdog()
        await trio.sleep(interval / 2)


@attrs.define(eq=False)
class _Changes:
    """Where the fleet's agent reports and the presence's status lines go. The
    fleet and the presence exist before the outbox and the status writer
    (which need them): those two are filled in once made, before anything runs."""

    host: Any  # supervisors.HostSupervisor
    outbox: Outbox | None = None
    status: StatusWriter | None = None

    def agent_changed(self, agent: dict[str, Any]) -> None:  # actors' reporter
        assert self.outbox is not None and self.status is not None
        self.outbox.report_agent(as_reported(agent))
        self.status.changed()

    def status_line(self, line: str) -> None:
        self.host.notify_status(line)
        if self.status is not None:
            self.status.changed()

    def sampled(self) -> None:
        """The agents' usage was sampled: the status file shows it too."""
        if self.status is not None:
            self.status.changed()


def _fleet_handler(fleet: actors.AgentFleet) -> Handler:
    async def handle(command: Command) -> Outcome:
        try:
            result = await fleet.execute(command.type, command.params, command.id)
        except actors.CommandRejected as exc:
            raise Rejected(str(exc)) from exc
        return Outcome.succeeded(result)

    return handle


async def _recover(orch: Orchestrator, unfinished: list[Any]) -> None:
    """Settle commands a crash left claimed without an outcome (none stays running)."""
    for entry in unfinished:
        command = Command(id=entry.id, type=entry.type, params=entry.params,
                          status=CommandStatus.RUNNING)
        if entry.state is CommandState.CLAIMING:
            current = await _read_command(orch, entry.id)
            if current is None:
                orch.journal.set_state(entry.id, CommandState.DROPPED)
                continue
            if current.status is CommandStatus.PENDING:
                orch.dispatcher.resume(current, claimed=False)
                continue
            if current.status is not CommandStatus.RUNNING:
                orch.journal.set_state(entry.id, CommandState.DROPPED)
                continue
        if entry.type == "orchestrator.upgrade":
            upgrade_outcome = settle_after_restart(orch.upgrade_context(), command)
            if upgrade_outcome is None:  # it took effect: the relay settles it
                orch.journal.set_state(entry.id, CommandState.SETTLED)
                continue
            orch.journal.record_outcome(entry.id, upgrade_outcome.body())
            orch.outbox.wake()
            continue
        outcome = _visible_outcome(orch, command)
        log.warning("command %s (%s) was in flight when the orchestrator stopped: %s",
                    entry.id, entry.type, outcome.status.value, extra={"commandId": entry.id})
        orch.journal.record_outcome(entry.id, outcome.body())
        orch.outbox.wake()


async def _read_command(orch: Orchestrator, command_id: str) -> Command | None:
    from ..relay._backoff import Backoff

    backoff = Backoff()
    while True:
        try:
            raw = await orch.client.get_command(command_id)
            return structure_command(raw)
        except (RelayNotFound, WireError):
            return None
        except RelayError:
            await backoff.sleep()


def _visible_outcome(orch: Orchestrator, command: Command) -> Outcome:
    """What a command in flight at a crash visibly did. A spawn took effect when
    an agent started by it runs: the same ``spawnRequestId`` (a command without
    one matches nothing), and the same ``agentId`` where the command names one."""
    params = command.params if isinstance(command.params, dict) else {}
    request_id = params.get("spawnRequestId")
    agent_id = params.get("agentId")
    if command.type == "agent.spawn" and isinstance(request_id, str) and request_id:
        for agent in orch.fleet.agents():
            if (
                agent.get("spawnRequestId") == request_id
                and (agent_id is None or agent.get("agentId") == agent_id)
                and agent.get("status") == "running"
            ):
                return Outcome.succeeded({
                    "agentId": agent.get("agentId"),
                    "spawnRequestId": agent.get("spawnRequestId"),
                    "pid": agent.get("pid"),
                    "tmuxSession": agent.get("tmuxSession"),
                    "workspace": agent.get("workspace"),
                })
    return Outcome.failed(f"orchestrator restarted before completing {command.type}")


async def _durable_then(journal: Journal, refresh: Callable[[], Awaitable[bool]],
                        then: Callable[[], None]) -> None:
    """Before a registration or heartbeat lists the agents: what it tells is durable,
    and their usage sampled afresh (``then``, when there was any to sample)."""
    journal.make_durable()
    if await refresh():
        then()
