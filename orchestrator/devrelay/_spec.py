"""What the dev relay's API accepts: request-body checks and the OpenAPI document.

The checks turn a wrong body into one 400 sentence naming the field
(``invalid agents[0].tags: expected a list of strings``); unknown fields are
never an error. The OpenAPI 3.1 document (``GET /api/spec``) is written by
hand beside the routes in ``_dev_relay.py``; a test checks that it describes
every route and nothing else.
"""

from __future__ import annotations

from typing import Any

JSON = dict[str, Any]


class RelayHTTPError(Exception):
    """A request the relay refuses: answered ``status`` with ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

# -- request-body checks ---------------------------------------------------------------


def bad(message: str) -> RelayHTTPError:
    return RelayHTTPError(400, message)


def check_type(body: JSON, name: str, kinds: tuple[type, ...], expected: str,
               *, where: str = "") -> None:
    if name not in body or body[name] is None:
        return
    value = body[name]
    ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
    if not ok:
        raise bad(f"invalid {where}{name}: expected {expected}")


def check_string_list(body: JSON, name: str, *, where: str = "") -> None:
    value = body.get(name)
    if value is None:
        return
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise bad(f"invalid {where}{name}: expected a list of strings")


def check_agents(agents: object) -> list[JSON]:
    if agents is None:
        return []
    if not isinstance(agents, list):
        raise bad("invalid agents: expected a list of ManagedAgent objects")
    for index, agent in enumerate(agents):
        if not isinstance(agent, dict):
            raise bad(f"invalid agents[{index}]: expected an object")
        agent_id = agent.get("agentId")
        if not isinstance(agent_id, str) or not agent_id:
            raise bad(f"invalid agents[{index}].agentId: expected a non-empty string")
    return agents


def check_agent(agent: JSON, *, where: str = "") -> None:
    for name in ("spawnRequestId", "policyName", "provider", "label", "status",
                 "tmuxSession", "sessionName", "cwd"):
        check_type(agent, name, (str,), "string", where=where)
    check_string_list(agent, "tags", where=where)
    for name in ("workspace", "meta", "exit"):
        check_type(agent, name, (dict,), "object", where=where)


# -- the OpenAPI document --------------------------------------------------------------


def _ref(name: str) -> JSON:
    return {"$ref": f"#/components/schemas/{name}"}


def _body(schema: JSON, description: str = "") -> JSON:
    out: JSON = {"required": True, "content": {"application/json": {"schema": schema}}}
    if description:
        out["description"] = description
    return out


def _answer(description: str, schema: JSON | None = None) -> JSON:
    out: JSON = {"description": description}
    if schema is not None:
        out["content"] = {"application/json": {"schema": schema}}
    return out


def _error(description: str) -> JSON:
    return _answer(description, _ref("Error"))


def _path_param(name: str, description: str) -> JSON:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string"}}


def _query_param(name: str, description: str, schema: JSON | None = None) -> JSON:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema or {"type": "string"}}


_STRING = {"type": "string"}
_INT = {"type": "integer"}
_STRINGS = {"type": "array", "items": _STRING}
_OBJECT = {"type": "object"}
_NULLABLE_STRING = {"type": ["string", "null"]}
_NULLABLE_INT = {"type": ["integer", "null"]}
_COMMAND_STATUS = {"type": "string",
                   "enum": ["pending", "running", "succeeded", "failed", "cancelled"]}

_SCHEMAS: JSON = {
    "Error": {"type": "object", "required": ["error"],
              "properties": {"error": {"type": "string", "description": "One clear sentence."}}},
    "Registration": {
        "type": "object", "required": ["id"],
        "description": "Sent on every (re-)registration. Unknown fields are kept.",
        "properties": {
            "id": _STRING, "hostname": _STRING, "version": _STRING, "pid": _INT,
            "startedAt": _INT, "providers": _STRINGS, "baseDir": _STRING,
            "capabilities": {"type": "object", "properties": {
                "relayCommandBus": {"type": "boolean"}, "selfUpgrade": {"type": "boolean"}}},
            "supervisor": {"type": "string", "enum": ["systemd", "launchd", "none"]},
            "selfUnit": _NULLABLE_STRING,
            "agents": {"type": "array", "items": _ref("ManagedAgent")},
        },
    },
    "Registered": {"type": "object", "properties": {
        "id": _STRING, "agentId": {"type": "string", "description": "orch:<id>"},
        "status": {"type": "string", "enum": ["online"]}}},
    "Heartbeat": {"type": "object", "properties": {
        "version": _STRING, "agents": {"type": "array", "items": _ref("ManagedAgent")},
        "load": {"type": "object", "properties": {
            "cpuPercent": {"type": "number"}, "memoryRss": _INT, "agentCount": _INT}}}},
    "ManagedAgent": {
        "type": "object", "required": ["agentId"],
        "properties": {
            "agentId": _STRING, "spawnRequestId": _STRING, "policyName": _STRING,
            "provider": _STRING, "label": _STRING, "tags": _STRINGS,
            "status": {"type": "string", "enum": ["starting", "running", "stopping", "stopped",
                                                  "exited", "failed"]},
            "pid": _NULLABLE_INT, "tmuxSession": _NULLABLE_STRING,
            "sessionName": _NULLABLE_STRING, "cwd": _STRING, "startedAt": _NULLABLE_INT,
            "lastSpawnAt": _NULLABLE_INT, "lastStopAt": _NULLABLE_INT,
            "restartCount": _INT, "exit": {"type": ["object", "null"]},
            "workspace": {"type": ["object", "null"], "description":
                          "A workspace status the relay moved past `active` is kept."},
            "meta": _OBJECT,
        },
    },
    "Orchestrator": {
        "type": "object",
        "description": "The registration fields plus the relay's view of the host.",
        "properties": {
            "id": _STRING, "agentId": _STRING,
            "status": {"type": "string", "enum": ["online", "offline"]},
            "version": _NULLABLE_STRING,
            "agents": {"type": "array", "items": _ref("ManagedAgent")},
            "load": {"type": ["object", "null"]},
            "upgrade": {"oneOf": [{"type": "null"}, _ref("UpgradeState")]},
            "registeredAt": _INT, "lastHeartbeatAt": _NULLABLE_INT,
            "lastSeenAt": _INT, "registrations": _INT, "heartbeats": _INT,
        },
    },
    "UpgradeState": {"type": "object", "properties": {
        "commandId": _STRING, "desiredVersion": _STRING, "fromVersion": _NULLABLE_STRING,
        "status": {"type": "string", "enum": ["pending", "succeeded", "failed"]},
        "requestedAt": _INT, "settledAt": _INT, "error": _STRING}},
    "Command": {
        "type": "object",
        "required": ["id", "type", "source", "target", "correlationId", "params", "status",
                     "result", "error", "createdAt", "updatedAt"],
        "properties": {
            "id": {"type": "string", "description": "cmd_<hex>"}, "type": _STRING,
            "source": _STRING, "target": {"type": "string", "description": "orch:<id>"},
            "correlationId": _NULLABLE_STRING, "params": {}, "status": _COMMAND_STATUS,
            "result": {}, "error": _NULLABLE_STRING, "createdAt": _INT, "updatedAt": _INT,
        },
    },
    "NewCommand": {"type": "object", "required": ["type", "target"], "properties": {
        "type": _STRING, "target": _STRING, "params": {}, "source": _STRING,
        "correlationId": _NULLABLE_STRING}},
    "CommandPatch": {
        "type": "object", "required": ["status"],
        "description": "`running` claims a pending command; `succeeded`/`failed` settle a "
                       "running one (the same outcome again answers 200); `cancelled` "
                       "withdraws a pending one.",
        "properties": {"status": {"type": "string",
                                  "enum": ["running", "succeeded", "failed", "cancelled"]},
                       "result": {"type": ["object", "null"]}, "error": _STRING},
    },
    "SpawnParams": {
        "type": "object",
        "properties": {
            "action": {"type": "string", "enum": ["spawn"]}, "provider": _STRING, "cwd": _STRING,
            "workspaceMode": {"type": "string", "enum": ["shared", "isolated", "inherit"]},
            "model": _STRING, "providerModel": _STRING, "effort": _STRING, "profile": _STRING,
            "agentProfile": _OBJECT, "label": _STRING, "tags": _STRINGS, "capabilities": _STRINGS,
            "approvalMode": _STRING, "permissionMode": _STRING, "providerArgs": _STRINGS,
            "prompt": _STRING, "headless": {"type": "boolean"}, "policyName": _STRING,
            "spawnRequestId": _STRING, "agentId": _STRING,
            "env": {"type": "object", "additionalProperties": _STRING},
            "requestedBy": _STRING, "requestedAt": _INT,
        },
    },
    "OrchestratorAction": {
        "type": "object", "required": ["action"],
        "properties": {"action": {"type": "string", "enum": ["restart", "shutdown", "upgrade"]},
                       "agentId": _STRING, "targetVersion": _STRING,
                       "providers": {"type": "array", "items": {"enum": ["orchestrator"]}},
                       "force": {"type": "boolean"}},
    },
    "AgentAction": {
        "type": "object", "required": ["action"],
        "description": "Other fields (graceful, timeoutMs, reason…) are passed on in params.",
        "properties": {"action": {"type": "string", "enum": ["stop", "restart", "compact"]}},
    },
    "Workspace": {"type": "object", "properties": {
        "id": _STRING, "repoRoot": _STRING, "worktreePath": _STRING, "branch": _NULLABLE_STRING,
        "status": _STRING, "ownerAgentId": _NULLABLE_STRING, "metadata": _OBJECT}},
}

_ORCH_ID = _path_param("id", "The orchestrator's id.")
_UNAUTHORIZED = _error("Missing or wrong bearer token.")


def _op(tag: str, summary: str, responses: JSON, *, params: list[JSON] | None = None,
        body: JSON | None = None, description: str = "") -> JSON:
    op: JSON = {"tags": [tag], "summary": summary,
                "responses": {**responses, "401": _UNAUTHORIZED}}
    if description:
        op["description"] = description
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = body
    return op


_PATHS: JSON = {
    "/api/orchestrators": {
        "post": _op("Orchestrators", "Register or re-register (upsert by id)", {
            "200": _answer("Re-registered.", _ref("Registered")),
            "201": _answer("Registered for the first time.", _ref("Registered")),
            "400": _error("Invalid body.")},
            body=_body(_ref("Registration")),
            description="Settles a pending upgrade whose desiredVersion is now reported."),
        "get": _op("Orchestrators", "List orchestrators", {
            "200": _answer("All known orchestrators.",
                           {"type": "array", "items": _ref("Orchestrator")})}),
    },
    "/api/orchestrators/{id}": {
        "get": _op("Orchestrators", "One orchestrator", {
            "200": _answer("The orchestrator.", _ref("Orchestrator")),
            "404": _error("Unknown orchestrator.")}, params=[_ORCH_ID]),
    },
    "/api/orchestrators/{id}/heartbeat": {
        "post": _op("Orchestrators", "Heartbeat", {
            "200": _answer("Accepted.", _ref("Registered")),
            "400": _error("Invalid body."),
            "404": _error("Unknown orchestrator: register again.")},
            params=[_ORCH_ID], body=_body(_ref("Heartbeat"))),
    },
    "/api/orchestrators/{id}/agents/{agentId}": {
        "put": _op("Orchestrators", "Report one managed agent (full upsert)", {
            "200": _answer("Stored.", _ref("ManagedAgent")),
            "400": _error("Invalid body."), "404": _error("Unknown orchestrator.")},
            params=[_ORCH_ID, _path_param("agentId", "The agent's id.")],
            body=_body(_ref("ManagedAgent"))),
    },
    "/api/orchestrators/{id}/action": {
        "post": _op("Orchestrators", "Restart, shut down or upgrade through the command bus", {
            "202": _answer("The orchestrator.* command created.", _ref("Command")),
            "400": _error("Invalid body."), "404": _error("Unknown orchestrator."),
            "409": _error("An upgrade safety rail refused it.")},
            params=[_ORCH_ID], body=_body(_ref("OrchestratorAction")),
            description="`upgrade` rails: online, capabilities.selfUpgrade, systemd or launchd "
                        "supervision with a known unit, semver targetVersion, no downgrade "
                        "unless force, one upgrade at a time. The command stays running until "
                        "the orchestrator re-registers with the target version, fails it, "
                        "or the deadline passes."),
    },
    "/api/orchestrators/{id}/spawn": {
        "post": _op("Orchestrators", "Spawn a managed agent", {
            "202": _answer("The agent.spawn command created.", _ref("Command")),
            "400": _error("Invalid body."), "404": _error("Unknown orchestrator.")},
            params=[_ORCH_ID], body=_body(_ref("SpawnParams"))),
    },
    "/api/agents/{agentId}/action": {
        "post": _op("Agents", "Stop, restart or compact a managed agent", {
            "202": _answer("The agent.* command created.", _ref("Command")),
            "400": _error("Invalid body."), "404": _error("Unknown agent.")},
            params=[_path_param("agentId", "The agent's id.")], body=_body(_ref("AgentAction")),
            description="`restart` carries restartSpawn: the agent's last SpawnParams with a new "
                        "spawnRequestId and the same agentId. `compact` carries "
                        "memory.alwaysReload from the agent's memory-reload:<path> tags."),
    },
    "/api/commands": {
        "get": _op("Commands", "List commands, oldest first", {
            "200": _answer("Matching commands.", {"type": "array", "items": _ref("Command")}),
            "400": _error("Unknown status.")},
            params=[_query_param("target", "Only commands for this bus address."),
                    _query_param("status", "Only commands in this status.", _COMMAND_STATUS)]),
        "post": _op("Commands", "Create a command", {
            "201": _answer("Created.", _ref("Command")), "400": _error("Invalid body.")},
            body=_body(_ref("NewCommand"))),
    },
    "/api/commands/stream": {
        "get": _op("Commands", "Server-Sent Events: commands for one target", {
            "200": {"description": "`event: command`, `id: <command id>`, `data: <Command>`; "
                                   "every pending command first, oldest first, then each new "
                                   "one; a `: keepalive` comment when idle.",
                    "content": {"text/event-stream": {"schema": _STRING}}},
            "400": _error("Missing target.")},
            params=[{**_query_param("target", "The bus address, orch:<id>."), "required": True}]),
    },
    "/api/commands/{id}": {
        "get": _op("Commands", "One command", {
            "200": _answer("The command.", _ref("Command")), "404": _error("Unknown command.")},
            params=[_path_param("id", "The command's id.")]),
        "patch": _op("Commands", "Claim or settle a command", {
            "200": _answer("The command as it is now.", _ref("Command")),
            "400": _error("Invalid body."), "404": _error("Unknown command."),
            "409": _error("Not in a state that allows it.")},
            params=[_path_param("id", "The command's id.")], body=_body(_ref("CommandPatch"))),
    },
    "/api/workspaces": {
        "get": _op("Workspaces", "List isolated workspaces", {
            "200": _answer("All known workspaces.",
                           {"type": "array", "items": _ref("Workspace")})}),
    },
    "/api/workspaces/{id}": {
        "patch": _op("Workspaces", "Move a workspace on (status, metadata)", {
            "200": _answer("The workspace.", _ref("Workspace")),
            "400": _error("Invalid body."), "404": _error("Unknown workspace.")},
            params=[_path_param("id", "The workspace's id.")],
            body=_body({"type": "object", "properties": {"status": _STRING,
                                                         "metadata": _OBJECT}})),
    },
    "/api/spec": {
        "get": _op("Meta", "This document", {"200": _answer("OpenAPI 3.1.", _OBJECT)}),
    },
}


def openapi_document(version: str) -> JSON:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "relay-orchestrator dev relay",
            "version": version,
            "description": "The relay command bus as the orchestrator speaks it (PROTOCOL.md), "
                           "served on loopback for development, tests and benchmarks.",
            "license": {"name": "MIT"},
        },
        "security": [{"bearer": []}],
        "paths": _PATHS,
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
