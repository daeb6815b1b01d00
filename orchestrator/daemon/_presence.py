"""Presence on the bus: register (after adoption), heartbeat, re-register on 404.

``run`` reports started once registered, or after ``ready_timeout`` seconds
of failed attempts (so that a relay outage never fails a unit's start); it
keeps trying to register in the background either way.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import psutil
import trio

from .._errors import RelayAuthError, RelayError, RelayNotFound
from ..relay._backoff import Backoff
from ..relay._client import RelayClient
from ..relay._wire import Capabilities, Heartbeat, Load, Registration

log = logging.getLogger("relay_orchestrator.daemon")

READY_TIMEOUT = 10.0


@attrs.frozen(kw_only=True)
class Identity:
    id: str
    version: str
    base_dir: str
    supervisor: str
    self_unit: str | None
    self_upgrade: bool
    providers: list[str]
    started_at: int = attrs.field(factory=lambda: int(time.time() * 1000))
    hostname: str = attrs.field(factory=socket.gethostname)
    pid: int = attrs.field(factory=os.getpid)


class Presence:
    def __init__(
        self,
        identity: Identity,
        client: RelayClient,
        agents: Callable[[], list[dict[str, Any]]],
        *,
        heartbeat_interval: float,
        ready_timeout: float = READY_TIMEOUT,
        on_status: Callable[[str], None] = lambda status: None,
        on_registered: Callable[[], None] = lambda: None,
        before_report: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.identity = identity
        self._client = client
        self._agents = agents
        self.heartbeat_interval = heartbeat_interval
        self.ready_timeout = ready_timeout
        self._on_status = on_status
        self._on_registered = on_registered
        self._before_report = before_report  # e.g. sample the agents' usage
        self.agent_id = f"orch:{identity.id}"
        self.registered = trio.Event()
        self.connected = False
        self.last_error: str | None = None
        self.registrations = 0
        self.heartbeats = 0
        self._need_register = True
        self._wake = trio.Event()
        self._process = psutil.Process()
        self._process.cpu_percent(None)

    def request_register(self) -> None:
        self._need_register = True
        self._wake.set()

    def registration(self) -> Registration:
        ident = self.identity
        return Registration(
            id=ident.id,
            hostname=ident.hostname,
            version=ident.version,
            pid=ident.pid,
            started_at=ident.started_at,
            providers=ident.providers,
            base_dir=ident.base_dir,
            capabilities=Capabilities(relay_command_bus=True, self_upgrade=ident.self_upgrade),
            supervisor=ident.supervisor,
            self_unit=ident.self_unit,
            agents=self._agents(),
        )

    def _heartbeat(self) -> Heartbeat:
        agents = self._agents()
        with self._process.oneshot():
            load = Load(
                cpu_percent=self._process.cpu_percent(None),
                memory_rss=self._process.memory_info().rss,
                agent_count=len(agents),
            )
        return Heartbeat(version=self.identity.version, agents=agents, load=load)

    async def run(
        self, *, task_status: trio.TaskStatus[Presence] = trio.TASK_STATUS_IGNORED
    ) -> None:
        started = False
        deadline = trio.current_time() + self.ready_timeout
        backoff = Backoff()
        while True:
            if self._need_register:
                if await self._register():
                    backoff.success()
                    self._need_register = False
                else:
                    if not started and trio.current_time() >= deadline:
                        started = True
                        task_status.started(self)
                    await backoff.sleep()
                    continue
            if not started:
                started = True
                task_status.started(self)
            with trio.move_on_after(self.heartbeat_interval):
                await self._wake.wait()
            self._wake = trio.Event()
            if not self._need_register:
                await self._beat()

    async def _refresh(self) -> None:
        if self._before_report is not None:
            try:
                await self._before_report()
            except Exception:
                log.exception("could not refresh the agents before reporting them")

    async def _register(self) -> bool:
        await self._refresh()
        try:
            answer = await self._client.register(self.registration())
        except RelayError as exc:
            self._failed(exc)
            return False
        self.agent_id = answer.agent_id or self.agent_id
        self.registrations += 1
        self.connected = True
        self.last_error = None
        log.info("registered with relay %s as %s (version %s)", self._client.base_url,
                 self.agent_id, self.identity.version)
        self.registered.set()
        self._on_status(self.status_line())
        self._on_registered()
        return True

    async def beat_now(self) -> None:
        """One heartbeat at once (the last one before a decoupled restart)."""
        await self._beat()

    async def _beat(self) -> None:
        await self._refresh()
        try:
            await self._client.heartbeat(self.identity.id, self._heartbeat())
        except RelayNotFound:
            log.warning("relay %s forgot this orchestrator; registering again",
                        self._client.base_url)
            self._need_register = True
            self._wake.set()
            return
        except RelayError as exc:
            self._failed(exc)
            return
        self.heartbeats += 1
        if not self.connected:
            self.connected = True
            self.last_error = None
            self._on_status(self.status_line())

    def _failed(self, exc: RelayError) -> None:
        was = self.connected
        self.connected = False
        self.last_error = str(exc)
        if isinstance(exc, RelayAuthError):
            pass  # the client logs it, once
        elif was or self.registrations == 0:
            log.warning("relay unreachable: %s", exc)
        self._on_status(self.status_line())

    def status_line(self) -> str:
        count = len(self._agents())
        if self.connected:
            return f"connected to {self._client.base_url}; {count} agents"
        return f"relay {self._client.base_url} unreachable ({self.last_error}); {count} agents"
