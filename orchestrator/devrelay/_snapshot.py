"""The dev relay's state as JSON (the state file's format), and back into a store.

A snapshot holds what a restarted dev relay needs: the orchestrators (their
agents and upgrades), the commands, the workspaces and the spawn params it
learnt. Restoring re-bases times on the wall clock: an orchestrator last
seen a minute before the snapshot was taken counts as seen a minute before
the snapshot's stamp, and a pending upgrade keeps what was left of its
deadline. ``_relay.py`` writes and reads the file.
"""

from __future__ import annotations

import trio

from ._records import DevRelayStateError, OrchestratorRecord, StoredCommand, now_ms
from ._spec import JSON
from ._store import RelayStore

FORMAT = 1


def snapshot(store: RelayStore) -> JSON:
    return {
        "format": FORMAT,
        "savedAt": now_ms(),
        "orchestrators": [
            {
                "id": orch.id,
                "info": orch.info,
                "agents": list(orch.agents.values()),
                "registeredAt": orch.registered_at,
                "lastSeenAt": orch.last_seen_ms,
                "lastHeartbeatAt": orch.last_heartbeat_at,
                "load": orch.load,
                "registrations": orch.registrations,
                "heartbeats": orch.heartbeats,
                "upgrade": orch.upgrade,
            }
            for orch in store.orchestrators.values()
        ],
        "commands": [command.to_json() for command in store.commands.values()],
        "workspaces": list(store.workspaces.values()),
        "spawnParams": store.spawn_params,
        "spawnRequests": store.spawn_requests,
    }


def restore(store: RelayStore, data: object) -> None:
    """Load a snapshot into ``store`` (an empty one); ``DevRelayStateError`` if it is not one."""
    try:
        _restore(store, data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DevRelayStateError(f"not a dev relay state file: {exc!r}") from exc


def _restore(store: RelayStore, data: object) -> None:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError("unknown format")
    now_t, stamp = trio.current_time(), now_ms()
    for raw in data["orchestrators"]:
        age = max(0.0, (stamp - int(raw["lastSeenAt"])) / 1000)
        orch = OrchestratorRecord(
            id=str(raw["id"]), info=dict(raw["info"]), agents={},
            registered_at=int(raw["registeredAt"]), last_seen_ms=int(raw["lastSeenAt"]),
            last_seen_t=now_t - age, last_heartbeat_at=raw.get("lastHeartbeatAt"),
            load=raw.get("load"), registrations=int(raw.get("registrations", 0)),
            heartbeats=int(raw.get("heartbeats", 0)), upgrade=raw.get("upgrade"),
        )
        orch.flagged_online = store.is_online(orch, now_t)
        for agent in raw["agents"]:
            orch.agents[agent["agentId"]] = agent
        upgrade_due = None
        up = orch.upgrade
        if up is not None and up.get("status") == "pending":
            left = store.upgrade_deadline - max(0, stamp - int(up["requestedAt"])) / 1000
            upgrade_due = now_t + max(0.0, left)
        store.add_restored_orchestrator(orch, upgrade_due=upgrade_due)
    for raw in data["commands"]:
        store.add_restored_command(StoredCommand(
            id=raw["id"], type=raw["type"], source=raw["source"], target=raw["target"],
            correlation_id=raw.get("correlationId"), params=raw.get("params"),
            status=raw["status"], result=raw.get("result"), error=raw.get("error"),
            created_at=int(raw["createdAt"]), updated_at=int(raw["updatedAt"]),
            seq=0,  # given by the store
        ))
    store.workspaces = {ws["id"]: ws for ws in data.get("workspaces", [])}
    store.spawn_params = dict(data.get("spawnParams", {}))
    store.spawn_requests = dict(data.get("spawnRequests", {}))
