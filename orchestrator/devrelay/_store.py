"""The dev relay's state: orchestrators, their agents, commands, upgrades.

Everything here is synchronous and runs on the trio thread: a handler reads
or changes the store without a checkpoint in between, so no locks are
needed. Each change wakes ``wait_for`` waiters and marks the store dirty for
the state-file writer; each new command is pushed to the streams of its
target (``Subscription``). Time comes from ``trio.current_time()`` (offline,
upgrade deadline); the wall clock is only stamped on records (``createdAt``…).

The rules come from the relay server (PROTOCOL.md, seed
``000_86b4778568b24b95``): ``reconcile_upgrade`` is its
``reconcileOrchestratorUpgrade``, ``_settle_failed_upgrade`` its
``settleFailedOrchestratorUpgrade``, ``_upsert_workspace`` its
``upsertWorkspaceFromManagedAgent``. The actions a person asks for over HTTP
(upgrade rails, spawn, agent restart/compact) are built in ``_actions.py``;
the store as the state file's JSON, and back, is ``_snapshot.py``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import attrs
import trio

from ._records import (
    COMMAND_STATUSES,
    MAX_SETTLED_COMMANDS,
    MAX_SPAWN_REQUESTS,
    TERMINAL,
    OrchestratorRecord,
    StoredCommand,
    Subscription,
    bus_address,
    new_command_id,
    now_ms,
)
from ._spec import (
    JSON,
    RelayHTTPError,
    bad,
    check_agent,
    check_agents,
    check_string_list,
    check_type,
)

# -- the store -------------------------------------------------------------------------


@attrs.define(eq=False)
class RelayStore:
    offline_after: float = 30.0
    upgrade_deadline: float = 600.0
    orchestrators: dict[str, OrchestratorRecord] = attrs.field(factory=dict)
    commands: dict[str, StoredCommand] = attrs.field(factory=dict)
    workspaces: dict[str, JSON] = attrs.field(factory=dict)
    spawn_params: dict[str, JSON] = attrs.field(factory=dict)  # agentId → last SpawnParams
    spawn_requests: dict[str, JSON] = attrs.field(factory=dict)  # spawnRequestId → SpawnParams
    agent_owner: dict[str, str] = attrs.field(factory=dict)  # agentId → orchestrator id
    _pending: dict[str, dict[str, StoredCommand]] = attrs.field(factory=dict)  # target → pending
    _settled: deque[str] = attrs.field(factory=deque)
    _subscriptions: dict[str, set[Subscription]] = attrs.field(factory=dict)
    _upgrade_due: dict[str, float] = attrs.field(factory=dict)  # orch id → trio time
    _seq: int = 0
    _changed: trio.Event = attrs.field(factory=trio.Event)
    dirty: trio.Event = attrs.field(factory=trio.Event)
    _timer_wake: trio.Event = attrs.field(factory=trio.Event)
    _timer_target: float = math.inf

    # -- notification ------------------------------------------------------------------

    def touch(self) -> None:
        """A change happened: wake ``wait_for`` waiters and the state-file writer."""
        self._changed.set()
        self._changed = trio.Event()
        self.dirty.set()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        while True:
            changed = self._changed
            if predicate():
                return
            await changed.wait()

    def _schedule(self, when: float) -> None:
        if when < self._timer_target:
            self._timer_wake.set()

    async def run_timers(self) -> None:
        """Marks orchestrators offline and fails overdue upgrades, at their moment."""
        while True:
            self._timer_wake = trio.Event()
            self._timer_target = self.process_timers()
            with trio.move_on_at(self._timer_target):
                await self._timer_wake.wait()

    def process_timers(self) -> float:
        now = trio.current_time()
        changed = False
        next_due = math.inf
        for orch in self.orchestrators.values():
            online = self.is_online(orch, now)
            if online != orch.flagged_online:
                orch.flagged_online = online
                changed = True
            if online:
                next_due = min(next_due, orch.last_seen_t + self.offline_after)
        for orch_id, due in list(self._upgrade_due.items()):
            if due <= now:
                self._time_out_upgrade(self.orchestrators[orch_id])
                changed = True
            else:
                next_due = min(next_due, due)
        if changed:
            self.touch()
        return next_due

    # -- orchestrators -----------------------------------------------------------------

    def is_online(self, orch: OrchestratorRecord, now: float | None = None) -> bool:
        if now is None:
            now = trio.current_time()
        return now - orch.last_seen_t < self.offline_after

    def orchestrator_json(self, orch: OrchestratorRecord) -> JSON:
        out = dict(orch.info)
        out.update(
            id=orch.id,
            agentId=bus_address(orch.id),
            status="online" if self.is_online(orch) else "offline",
            version=orch.version,
            agents=list(orch.agents.values()),
            load=orch.load,
            upgrade=orch.upgrade,
            registeredAt=orch.registered_at,
            lastHeartbeatAt=orch.last_heartbeat_at,
            lastSeenAt=orch.last_seen_ms,
            registrations=orch.registrations,
            heartbeats=orch.heartbeats,
        )
        return out

    def get_orchestrator(self, orch_id: str) -> OrchestratorRecord:
        orch = self.orchestrators.get(orch_id)
        if orch is None:
            raise RelayHTTPError(404, f"orchestrator not found: {orch_id}")
        return orch

    def register(self, body: JSON) -> tuple[JSON, bool]:
        orch_id = body.get("id")
        if not isinstance(orch_id, str) or not orch_id:
            raise bad("invalid id: expected a non-empty string")
        for name in ("hostname", "version", "baseDir", "supervisor", "selfUnit"):
            check_type(body, name, (str,), "string")
        for name in ("pid", "startedAt"):
            check_type(body, name, (int,), "integer")
        check_string_list(body, "providers")
        check_type(body, "capabilities", (dict,), "object")
        agents = check_agents(body.get("agents"))
        for index, agent in enumerate(agents):
            check_agent(agent, where=f"agents[{index}].")
        info = {key: value for key, value in body.items() if key != "agents"}
        now_t, stamp = trio.current_time(), now_ms()
        orch = self.orchestrators.get(orch_id)
        created = orch is None
        if orch is None:
            orch = OrchestratorRecord(id=orch_id, info=info, agents={}, registered_at=stamp,
                                last_seen_ms=stamp, last_seen_t=now_t)
            self.orchestrators[orch_id] = orch
        else:
            orch.info = info
        orch.registered_at = stamp
        orch.registrations += 1
        self._seen(orch, now_t, stamp)
        self._replace_agents(orch, agents)
        self.reconcile_upgrade(orch)
        self.touch()
        return {"id": orch_id, "agentId": bus_address(orch_id), "status": "online"}, created

    def heartbeat(self, orch_id: str, body: JSON) -> JSON:
        orch = self.get_orchestrator(orch_id)
        check_type(body, "version", (str,), "string")
        agents = body.get("agents")
        if agents is not None:
            agents = check_agents(agents)
            for index, agent in enumerate(agents):
                check_agent(agent, where=f"agents[{index}].")
        orch.heartbeats += 1
        self._seen(orch, trio.current_time(), now_ms())
        if "load" in body:
            orch.load = body["load"]
        version = body.get("version")
        if isinstance(version, str) and version != orch.version:
            orch.info["version"] = version
        if agents is not None:
            self._replace_agents(orch, agents)
        # A heartbeat only times an upgrade out: it is settled by the version the
        # orchestrator registers with after its restart (a reinstall reports the
        # same version before it has restarted).
        self.reconcile_upgrade(orch, registration=False)
        self.touch()
        return {"id": orch.id, "agentId": bus_address(orch.id), "status": "online"}

    def put_agent(self, orch_id: str, agent_id: str, body: JSON) -> JSON:
        orch = self.get_orchestrator(orch_id)
        reported = body.get("agentId")
        if reported is not None and reported != agent_id:
            raise bad(f"invalid agentId: the body says {reported!r}, the path {agent_id!r}")
        check_agent(body)
        agent = self._store_agent(orch, {**body, "agentId": agent_id})
        self.touch()
        return agent

    def _seen(self, orch: OrchestratorRecord, now_t: float, stamp: int) -> None:
        orch.last_seen_t = now_t
        orch.last_seen_ms = stamp
        orch.last_heartbeat_at = stamp
        orch.flagged_online = True
        self._schedule(now_t + self.offline_after)

    def _replace_agents(self, orch: OrchestratorRecord, agents: Iterable[JSON]) -> None:
        for agent_id in orch.agents:
            if self.agent_owner.get(agent_id) == orch.id:
                del self.agent_owner[agent_id]
        orch.agents = {}
        for agent in agents:
            self._store_agent(orch, agent)

    def _store_agent(self, orch: OrchestratorRecord, agent: JSON) -> JSON:
        agent = dict(agent)
        agent_id = agent["agentId"]
        workspace = agent.get("workspace")
        if isinstance(workspace, dict):
            record = self._upsert_workspace(agent, workspace)
            if record is not None and record["status"] != workspace.get("status"):
                agent["workspace"] = {**workspace, "status": record["status"]}
        spawn_request_id = agent.get("spawnRequestId")
        if isinstance(spawn_request_id, str):
            params = self.spawn_requests.get(spawn_request_id)
            if params is not None:
                self.spawn_params[agent_id] = params
        orch.agents[agent_id] = agent
        self.agent_owner[agent_id] = orch.id
        return agent

    def _upsert_workspace(self, agent: JSON, workspace: JSON) -> JSON | None:
        """Only "active" is refreshed from a report; later progress is kept."""
        ws_id = workspace.get("id")
        if not (workspace.get("mode") == "isolated" and isinstance(ws_id, str) and ws_id
                and workspace.get("repoRoot") and workspace.get("worktreePath")):
            return None
        existing = self.workspaces.get(ws_id)
        preserve = existing is not None and existing.get("status") != "active"
        reported_status = workspace.get("status")
        status = (existing or {}).get("status") if preserve else (reported_status or "active")
        metadata = dict((existing or {}).get("metadata") or {})
        metadata.update({key: agent.get(key) for key in
                         ("provider", "label", "sessionName", "tmuxSession")})
        record = {
            "id": ws_id,
            "repoRoot": workspace.get("repoRoot"),
            "worktreePath": workspace.get("worktreePath"),
            "branch": workspace.get("branch"),
            "baseSha": workspace.get("baseSha"),
            "mode": workspace.get("mode"),
            "requestedMode": workspace.get("requestedMode"),
            "status": status,
            "ownerAgentId": agent.get("agentId"),
            "ownerPolicyName": agent.get("policyName"),
            "metadata": metadata,
            "createdAt": (existing or {}).get("createdAt", now_ms()),
            "updatedAt": (existing or {}).get("updatedAt", now_ms()),
        }
        if record != existing:
            record["updatedAt"] = now_ms()
            self.workspaces[ws_id] = record
        return record

    def set_workspace(self, ws_id: str, body: JSON) -> JSON:
        """A person moves a workspace on (merge, review, conflict…)."""
        record = self.workspaces.get(ws_id)
        if record is None:
            raise RelayHTTPError(404, f"workspace not found: {ws_id}")
        check_type(body, "status", (str,), "string")
        check_type(body, "metadata", (dict,), "object")
        if isinstance(body.get("status"), str):
            record["status"] = body["status"]
        if isinstance(body.get("metadata"), dict):
            record["metadata"] = {**(record.get("metadata") or {}), **body["metadata"]}
        record["updatedAt"] = now_ms()
        owner = record.get("ownerAgentId")
        orch = self.orchestrators.get(self.agent_owner.get(owner, "")) if owner else None
        if orch is not None and owner in orch.agents:
            agent = orch.agents[owner]
            if isinstance(agent.get("workspace"), dict):
                workspace = {**agent["workspace"], "status": record["status"]}
                orch.agents[owner] = {**agent, "workspace": workspace}
        self.touch()
        return record

    # -- upgrades ----------------------------------------------------------------------

    def _upgraded(self, command: StoredCommand) -> OrchestratorRecord | None:
        """The orchestrator an upgrade command is about: params, else its bus address."""
        params = command.params if isinstance(command.params, dict) else {}
        orch_id = params.get("orchestratorId")
        if not isinstance(orch_id, str) and command.target.startswith("orch:"):
            orch_id = command.target[len("orch:"):]
        return self.orchestrators.get(orch_id) if isinstance(orch_id, str) else None

    def _start_upgrade(self, command: StoredCommand) -> None:
        """Any new ``orchestrator.upgrade`` (the action route's, or a test's) is tracked."""
        params = command.params if isinstance(command.params, dict) else {}
        target = params.get("targetVersion")
        orch = self._upgraded(command)
        if orch is None or not isinstance(target, str):
            return
        from_version = params.get("fromVersion", orch.version)
        orch.upgrade = {
            "commandId": command.id,
            "desiredVersion": target,
            "fromVersion": from_version if isinstance(from_version, str) else orch.version,
            "status": "pending",
            "requestedAt": command.created_at,
        }
        due = trio.current_time() + self.upgrade_deadline
        self._upgrade_due[orch.id] = due
        self._schedule(due)

    def reconcile_upgrade(self, orch: OrchestratorRecord, *, registration: bool = True) -> None:
        up = orch.upgrade
        if up is None:
            return
        if not registration:
            if (up.get("status") == "pending"
                    and self._upgrade_due.get(orch.id, math.inf) <= trio.current_time()):
                self._time_out_upgrade(orch)
            return
        reported = orch.version
        wanted = up.get("desiredVersion")
        if reported and reported == wanted and up.get("status") == "succeeded" and up.get("error"):
            orch.upgrade = {k: v for k, v in up.items() if k != "error"}
            return
        if reported and reported == wanted and up.get("status") in ("pending", "failed"):
            command = self.commands.get(str(up.get("commandId")))
            if command is not None:
                result: JSON = {"version": reported}
                if up.get("fromVersion"):
                    result["fromVersion"] = up["fromVersion"]
                self._set_status(command, "succeeded", result=result, error=None)
            orch.upgrade = {**{k: v for k, v in up.items() if k != "error"},
                            "status": "succeeded", "settledAt": now_ms()}
            self._upgrade_due.pop(orch.id, None)
        elif (up.get("status") == "pending"
              and self._upgrade_due.get(orch.id, math.inf) <= trio.current_time()):
            self._time_out_upgrade(orch)

    def _time_out_upgrade(self, orch: OrchestratorRecord) -> None:
        self._upgrade_due.pop(orch.id, None)
        up = orch.upgrade
        if up is None or up.get("status") != "pending":
            return
        message = (f"upgrade timed out; orchestrator still reports {orch.version or 'unknown'} "
                   f"(wanted {up.get('desiredVersion')})")
        command = self.commands.get(str(up.get("commandId")))
        if command is not None and command.status in ("pending", "running"):
            self._set_status(command, "failed", result=None, error=message)
        orch.upgrade = {**up, "status": "failed", "settledAt": now_ms(), "error": message}

    def _settle_failed_upgrade(self, command: StoredCommand) -> None:
        if command.type != "orchestrator.upgrade" or command.status not in ("failed", "cancelled"):
            return
        orch = self._upgraded(command)
        up = orch.upgrade if orch is not None else None
        if orch is None or up is None or up.get("status") != "pending":
            return
        if up.get("commandId") != command.id:
            return
        self._upgrade_due.pop(orch.id, None)
        error = command.error or f"orchestrator upgrade {command.status}"
        orch.upgrade = {**up, "status": "failed", "settledAt": now_ms(), "error": error}

    # -- commands ----------------------------------------------------------------------

    def create_command(self, target: str, type: str, params: object, source: str = "system",
                       correlation_id: str | None = None) -> StoredCommand:
        stamp = now_ms()
        if correlation_id is None and isinstance(params, dict):
            rid = params.get("spawnRequestId")
            correlation_id = rid if isinstance(rid, str) else None
        command = StoredCommand(id=new_command_id(), type=type, source=source, target=target,
                          correlation_id=correlation_id, params=params, status="pending",
                          result=None, error=None, created_at=stamp, updated_at=stamp,
                          seq=self._seq)
        self._seq += 1
        self._add(command)
        self._learn_spawn(command)
        if type == "orchestrator.upgrade":
            self._start_upgrade(command)
        for subscription in self._subscriptions.get(target, ()):
            subscription.push(command)
        self.touch()
        return command

    def _add(self, command: StoredCommand) -> None:
        self.commands[command.id] = command
        if command.status == "pending":
            self._pending.setdefault(command.target, {})[command.id] = command
        elif command.status in TERMINAL:
            self._remember_settled(command.id)

    def _remember_settled(self, command_id: str) -> None:
        self._settled.append(command_id)
        while len(self._settled) > MAX_SETTLED_COMMANDS:
            old = self.commands.get(self._settled.popleft())
            if old is not None and old.status in TERMINAL:
                del self.commands[old.id]

    def _set_status(
        self, command: StoredCommand, status: str, *, result: Any, error: str | None
    ) -> None:
        if command.status == "pending":
            pending = self._pending.get(command.target)
            if pending is not None:
                pending.pop(command.id, None)
                if not pending:
                    del self._pending[command.target]
        command.status = status
        command.result = result
        command.error = error
        command.updated_at = now_ms()
        if status in TERMINAL:
            self._remember_settled(command.id)

    def get_command(self, command_id: str) -> StoredCommand:
        command = self.commands.get(command_id)
        if command is None:
            raise RelayHTTPError(404, f"command not found: {command_id}")
        return command

    def list_commands(
        self, target: str | None = None, status: str | None = None
    ) -> list[StoredCommand]:
        if status is not None and status not in COMMAND_STATUSES:
            raise bad(f"invalid status: expected one of {', '.join(COMMAND_STATUSES)}")
        if status == "pending" and target is not None:
            return list(self._pending.get(target, {}).values())
        return [c for c in self.commands.values()
                if (target is None or c.target == target)
                and (status is None or c.status == status)]

    def patch_command(self, command_id: str, body: JSON) -> StoredCommand:
        command = self.get_command(command_id)
        status = body.get("status")
        if status is None:
            raise bad("invalid status: required")
        if not isinstance(status, str):
            raise bad("invalid status: expected string")
        if status not in ("running", "succeeded", "failed", "cancelled"):
            raise bad("invalid status: expected one of running, succeeded, failed, cancelled")
        result = body.get("result")
        error = body.get("error")
        if status == "succeeded" and result is not None and not isinstance(result, dict):
            raise bad("invalid result: expected an object or null")
        if status == "failed" and (not isinstance(error, str) or not error):
            raise bad("invalid error: expected a non-empty string")
        if status == "running" or status == "cancelled":
            if command.status != "pending":
                if status == "cancelled" and command.status == "cancelled":
                    return command
                raise RelayHTTPError(409, f"command {command.id} is {command.status}, not pending")
            self._set_status(command, status, result=None, error=None)
            self._settle_failed_upgrade(command)  # a cancelled upgrade will not happen
        else:
            outcome = (result, None) if status == "succeeded" else (None, error)
            if command.status == status and (command.result, command.error) == outcome:
                return command  # the same outcome again: a replay, answered 200
            if command.status != "running":
                raise RelayHTTPError(409, f"command {command.id} is {command.status}, not running")
            self._set_status(command, status, result=outcome[0], error=outcome[1])
            if status == "succeeded":
                self._learn_spawned_agent(command)
            else:
                self._settle_failed_upgrade(command)
        self.touch()
        return command

    # -- streams -----------------------------------------------------------------------

    def subscribe(self, target: str) -> Subscription:
        """A new stream: its queue starts with the target's pending commands, oldest first."""
        subscription = Subscription(target=target)
        subscription.queue.extend(self._pending.get(target, {}).values())
        self._subscriptions.setdefault(target, set()).add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        subs = self._subscriptions.get(subscription.target)
        if subs is not None:
            subs.discard(subscription)
            if not subs:
                del self._subscriptions[subscription.target]

    def take(self, subscription: Subscription) -> list[StoredCommand]:
        """Everything new for one stream, still pending, in creation order."""
        batch = [c for c in subscription.queue if c.status == "pending"]
        subscription.queue.clear()
        if subscription.overflowed:
            subscription.overflowed = False
            last = batch[-1].seq if batch else subscription.last_seq
            batch.extend(c for c in self._pending.get(subscription.target, {}).values()
                         if c.seq > last)
        if batch:
            subscription.last_seq = batch[-1].seq
        subscription.wake = trio.Event()
        return batch

    # -- spawn params ------------------------------------------------------------------

    def _learn_spawn(self, command: StoredCommand) -> None:
        params = command.params
        if not isinstance(params, dict):
            return
        if command.type == "agent.restart":
            params = params.get("restartSpawn")
            if not isinstance(params, dict):
                return
        elif command.type != "agent.spawn":
            return
        rid = params.get("spawnRequestId")
        if isinstance(rid, str):
            self.spawn_requests[rid] = params
            while len(self.spawn_requests) > MAX_SPAWN_REQUESTS:
                del self.spawn_requests[next(iter(self.spawn_requests))]
        agent_id = params.get("agentId")
        if isinstance(agent_id, str):
            self.spawn_params[agent_id] = params

    def _learn_spawned_agent(self, command: StoredCommand) -> None:
        if command.type not in ("agent.spawn", "agent.restart"):
            return
        params = command.params if isinstance(command.params, dict) else {}
        if command.type == "agent.restart":
            restart = params.get("restartSpawn")
            params = restart if isinstance(restart, dict) else {}
        result = command.result if isinstance(command.result, dict) else {}
        agent_id = result.get("agentId")
        if isinstance(agent_id, str) and params:
            self.spawn_params[agent_id] = params

    # -- restored records (``_snapshot.py``) ------------------------------------------

    def add_restored_orchestrator(
        self, orch: OrchestratorRecord, *, upgrade_due: float | None
    ) -> None:
        """An orchestrator read back from the state file joins the store."""
        self.orchestrators[orch.id] = orch
        for agent_id in orch.agents:
            self.agent_owner[agent_id] = orch.id
        if upgrade_due is not None:
            self._upgrade_due[orch.id] = upgrade_due

    def add_restored_command(self, command: StoredCommand) -> None:
        """A command read back from the state file joins the store, after the others."""
        command.seq = self._seq
        self._seq += 1
        self._add(command)
