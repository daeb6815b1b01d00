"""The actions a person asks for over HTTP: an upgrade with the seed's safety
rails, a spawn, an agent's stop/restart/compact, each made into a command."""

from __future__ import annotations

import copy

from .._version import current_version, is_semver, version_core
from ._records import OrchestratorRecord, StoredCommand, bus_address, new_spawn_request_id, now_ms
from ._spec import JSON, RelayHTTPError, bad, check_type
from ._store import RelayStore

UPGRADE_PROVIDERS = ("orchestrator",)  # runtime packages an upgrade may name
REQUESTED_BY = "dashboard"  # requestedBy / source of commands made by the action routes


# -- actions a person asks for ---------------------------------------------------------


def self_upgrade_refusal(store: RelayStore, orch_id: str) -> str | None:
    """The seed's ``orchestratorSelfUpgradeError``: why this host cannot self-upgrade."""
    orch = store.orchestrators[orch_id]
    if not store.is_online(orch):
        return "orchestrator is offline"
    capabilities = orch.info.get("capabilities")
    capabilities = capabilities if isinstance(capabilities, dict) else {}
    if capabilities.get("relayCommandBus") is False:
        return (f"orchestrator {orch.id} does not support relay command bus upgrades; "
                "upgrade it manually first")
    if capabilities.get("selfUpgrade") is not True:
        version = f" v{orch.version}" if orch.version else ""
        return (f"orchestrator {orch.id}{version} does not advertise self-upgrade support; "
                "upgrade it manually")
    supervisor = orch.info.get("supervisor")
    if supervisor not in ("systemd", "launchd") or not orch.info.get("selfUnit"):
        return (f"orchestrator {orch.id} cannot self-upgrade under supervisor "
                f"{supervisor or 'unknown'}; upgrade it manually")
    return None


def orchestrator_action(store: RelayStore, orch_id: str, body: JSON) -> StoredCommand:
    orch = store.get_orchestrator(orch_id)
    action = body.get("action")
    if action not in ("restart", "shutdown", "upgrade"):
        raise bad("invalid action: expected one of restart, shutdown, upgrade")
    stamp = now_ms()
    if action != "upgrade":
        check_type(body, "agentId", (str,), "string")
        params: JSON = {"action": action, "orchestratorId": orch.id}
        if body.get("agentId"):
            params["agentId"] = body["agentId"]
        params.update(requestedBy=REQUESTED_BY, requestedAt=stamp)
        return store.create_command(bus_address(orch.id), f"orchestrator.{action}", params,
                                    REQUESTED_BY)
    target = body.get("targetVersion")
    if target is None:
        target = current_version()
    if not is_semver(target):
        raise bad(f"targetVersion must be a semver version: {target}")
    providers = body.get("providers")
    if providers is None:
        providers = list(UPGRADE_PROVIDERS)
    if not isinstance(providers, list) or not all(isinstance(p, str) for p in providers):
        raise bad("invalid providers: expected a list of strings")
    unknown = [p for p in providers if p not in UPGRADE_PROVIDERS]
    if unknown or not providers:
        raise bad(f"providers must be any of: {', '.join(UPGRADE_PROVIDERS)}"
                  + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
    force = body.get("force", False)
    if not isinstance(force, bool):
        raise bad("invalid force: expected boolean")
    refusal = self_upgrade_refusal(store, orch.id)
    if refusal:
        raise RelayHTTPError(409, refusal)
    running = orch.version
    if not force and running and version_core(target) < version_core(running):
        raise RelayHTTPError(409, f"refusing downgrade {running} -> {target}; "
                                  "pass force to override")
    up = orch.upgrade
    if up is not None and up.get("status") == "pending":
        raise RelayHTTPError(409, f"an upgrade of orchestrator {orch.id} to "
                                  f"{up.get('desiredVersion')} is already pending "
                                  f"(command {up.get('commandId')})")
    params = {"action": "upgrade", "orchestratorId": orch.id, "targetVersion": target,
              "fromVersion": running, "providers": providers, "force": force,
              "requestedBy": REQUESTED_BY, "requestedAt": stamp}
    return store.create_command(bus_address(orch.id), "orchestrator.upgrade", params,
                                REQUESTED_BY)


def spawn(store: RelayStore, orch_id: str, body: JSON) -> StoredCommand:
    orch = store.get_orchestrator(orch_id)
    params = dict(body)
    params["action"] = "spawn"
    if params.get("spawnRequestId") is None:
        params["spawnRequestId"] = new_spawn_request_id()
    params.setdefault("requestedBy", REQUESTED_BY)
    params.setdefault("requestedAt", now_ms())
    return store.create_command(bus_address(orch.id), "agent.spawn", params, REQUESTED_BY)


def memory_reload_paths(tags: object) -> list[str]:
    """The seed's ``compactMemoryParams``: paths from ``memory-reload:<path>`` tags."""
    if not isinstance(tags, list):
        return []
    prefix = "memory-reload:"
    paths = (tag[len(prefix):].strip() for tag in tags
             if isinstance(tag, str) and tag.startswith(prefix))
    return [path for path in paths if path]


def _meta_string(meta: object, name: str) -> str | None:
    value = meta.get(name) if isinstance(meta, dict) else None
    return value if isinstance(value, str) and value else None


def spawn_params_from_report(agent: JSON, orch: OrchestratorRecord) -> JSON:
    """SpawnParams rebuilt from a ManagedAgent report (seed ``restartSpawnParamsForAgent``)."""
    meta = agent.get("meta")
    params: JSON = {"action": "spawn", "provider": agent.get("provider")}
    for name in ("model", "providerModel", "effort"):
        value = _meta_string(meta, name)
        if value:
            params[name] = value
    cwd = agent.get("cwd") if isinstance(agent.get("cwd"), str) else orch.info.get("baseDir")
    if isinstance(cwd, str):
        params["cwd"] = cwd
    params["workspaceMode"] = _meta_string(meta, "workspaceMode") or "inherit"
    profile = _meta_string(meta, "profile")
    if profile:
        params["profile"] = profile
    label = _meta_string(meta, "label") or agent.get("label")
    if isinstance(label, str):
        params["label"] = label
    params["agentId"] = agent["agentId"]
    tags = agent.get("tags")
    params["tags"] = [t for t in tags if isinstance(t, str)] if isinstance(tags, list) else []
    approval = _meta_string(meta, "approvalMode")
    if approval:
        params["approvalMode"] = approval
    params["permissionMode"] = approval or "guarded"
    provider_args = meta.get("providerArgs") if isinstance(meta, dict) else None
    if isinstance(provider_args, list) and provider_args and all(
            isinstance(a, str) for a in provider_args):
        params["providerArgs"] = list(provider_args)
    policy = _meta_string(meta, "policyName") or agent.get("policyName")
    if isinstance(policy, str) and policy:
        params["policyName"] = policy
    params["headless"] = True
    return params


def restart_spawn(store: RelayStore, agent_id: str) -> JSON:
    """The agent's last SpawnParams, as a new request for the same agentId."""
    known = store.spawn_params.get(agent_id)
    if known is not None:
        params = copy.deepcopy(known)
    else:
        orch = store.orchestrators[store.agent_owner[agent_id]]
        params = spawn_params_from_report(orch.agents[agent_id], orch)
    params.update(action="spawn", agentId=agent_id, spawnRequestId=new_spawn_request_id(),
                  requestedBy=REQUESTED_BY, requestedAt=now_ms())
    return params


def agent_action(store: RelayStore, agent_id: str, body: JSON) -> StoredCommand:
    action = body.get("action")
    if action not in ("stop", "restart", "compact"):
        raise bad("invalid action: expected one of stop, restart, compact")
    orch_id = store.agent_owner.get(agent_id)
    if orch_id is None:
        raise RelayHTTPError(404, f"agent not found: {agent_id}")
    orch = store.orchestrators[orch_id]
    agent = orch.agents[agent_id]
    params = dict(body)  # graceful, timeoutMs, reason… are passed on
    params.update(action=action, agentId=agent_id, orchestratorId=orch.id)
    for name in ("policyName", "spawnRequestId", "tmuxSession"):
        if isinstance(agent.get(name), str) and agent[name]:
            params[name] = agent[name]
    if action == "restart":
        params["restartSpawn"] = restart_spawn(store, agent_id)
    elif action == "compact":
        tags = agent.get("tags")
        if not isinstance(tags, list):
            tags = store.spawn_params.get(agent_id, {}).get("tags")
        paths = memory_reload_paths(tags)
        if paths:
            memory = body.get("memory")
            params["memory"] = {**(memory if isinstance(memory, dict) else {}),
                                "alwaysReload": paths}
    params["requestedBy"] = REQUESTED_BY
    params["requestedAt"] = now_ms()
    correlation = agent.get("spawnRequestId")
    return store.create_command(bus_address(orch.id), f"agent.{action}", params, REQUESTED_BY,
                                correlation if isinstance(correlation, str) else None)
