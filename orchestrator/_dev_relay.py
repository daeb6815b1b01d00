"""The dev relay: the relay command bus (PROTOCOL.md §1–3, 5, 6) on loopback.

An ASGI app (starlette) served by ``_asgi_server.py`` (HTTP/1.1 on trio) inside
the caller's nursery::

    relay = await nursery.start(partial(serve_dev_relay, token="t"))
    relay.url                                   # http://127.0.0.1:<port>
    cmd = relay.create_command("orch:o1", "agent.stop", {"agentId": "a"})
    with trio.fail_after(5):
        await relay.wait_for(lambda: relay.get_command(cmd["id"])["status"] == "failed")

State lives in ``RelayStore`` (``_dev_relay_store.py``); this module is the
HTTP face: bearer auth and the test faults (one ASGI gate in front of every
``/api`` route), the JSON routes, the SSE command stream, the actions a
person asks for (upgrade with the seed's safety rails, spawn, agent
stop/restart/compact), and the state file (a JSON snapshot written off the
request path, coalesced, atomically, and once more on shutdown).

``relay-orchestrator run`` never imports this module: starlette costs
memory the orchestrator itself does not need.
"""

from __future__ import annotations

import copy
import hmac
import json
import logging
import os
import re
import socket
import ssl
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import attrs
import trio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ._asgi_server import serve_asgi
from ._dev_relay_spec import JSON, RelayHTTPError, bad, check_type, openapi_document
from ._dev_relay_store import (
    Command,
    DevRelayStateError,
    Orchestrator,
    RelayStore,
    Subscription,
    bus_address,
    new_spawn_request_id,
    now_ms,
)
from ._version import current_version, is_semver, version_core

__all__ = ["DevRelay", "DevRelayStateError", "Faults", "serve_dev_relay"]

log = logging.getLogger("relay_orchestrator.dev_relay")

KEEPALIVE_INTERVAL = 15.0  # seconds between `: keepalive` comments on an idle stream
STATE_WRITE_INTERVAL = 0.05  # at most one state-file write per this many seconds
UPGRADE_PROVIDERS = ("orchestrator",)  # runtime packages an upgrade may name
REQUESTED_BY = "dashboard"  # requestedBy / source of commands made by the action routes


# -- public handle ---------------------------------------------------------------------


def _faults_hang_changed(faults: Faults, _attribute: object, value: bool) -> bool:
    if value:
        if faults._unhung.is_set():
            faults._unhung = trio.Event()
    else:
        faults._unhung.set()
    return value


@attrs.define(eq=False)
class Faults:
    """Test hooks. ``status``: answer every /api request with it; ``hang``: never answer."""

    status: int | None = None
    hang: bool = attrs.field(default=False, on_setattr=_faults_hang_changed)
    _unhung: trio.Event = attrs.field(factory=trio.Event, init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if not self.hang:
            self._unhung.set()

    async def wait_unhung(self) -> None:
        while self.hang:
            await self._unhung.wait()


@attrs.define(eq=False)
class DevRelay:
    """A running dev relay. Returned dicts are the relay's own: read, don't mutate."""

    url: str
    token: str
    faults: Faults
    _store: RelayStore = attrs.field(alias="store", repr=False)

    def create_command(self, target: str, type: str, params: object, source: str = "system",
                       *, correlation_id: str | None = None) -> dict[str, Any]:
        """A new pending command, delivered at once to the target's open streams."""
        params = json.loads(_dumps(params))  # the relay's own copy; not JSON → TypeError now
        return self._store.create_command(target, type, params, source, correlation_id).to_json()

    def get_command(self, command_id: str) -> dict[str, Any] | None:
        command = self._store.commands.get(command_id)
        return None if command is None else command.to_json()

    def commands(self, target: str | None = None,
                 status: str | None = None) -> list[dict[str, Any]]:
        try:
            found = self._store.list_commands(target, status)
        except RelayHTTPError as exc:
            raise ValueError(exc.message) from None
        return [command.to_json() for command in found]

    def orchestrator(self, orch_id: str) -> dict[str, Any] | None:
        orch = self._store.orchestrators.get(orch_id)
        return None if orch is None else self._store.orchestrator_json(orch)

    def orchestrators(self) -> list[dict[str, Any]]:
        return [self._store.orchestrator_json(o) for o in self._store.orchestrators.values()]

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` is true; re-checked on every state change."""
        await self._store.wait_for(predicate)


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


def orchestrator_action(store: RelayStore, orch_id: str, body: JSON) -> Command:
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


def spawn(store: RelayStore, orch_id: str, body: JSON) -> Command:
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


def spawn_params_from_report(agent: JSON, orch: Orchestrator) -> JSON:
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


def agent_action(store: RelayStore, agent_id: str, body: JSON) -> Command:
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


# -- HTTP ------------------------------------------------------------------------------


def _dumps(payload: object) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def _json(status: int, payload: object) -> Response:
    return Response(_dumps(payload), status, media_type="application/json")


async def _send_json(send: Send, status: int, payload: object,
                     headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    body = _dumps(payload)
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        *headers]})
    await send({"type": "http.response.body", "body": body})


async def _body(request: Request) -> JSON:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise bad("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise bad("request body must be a JSON object")
    return body


Handler = Callable[[Request], Awaitable[tuple[int, Any]]]


def _endpoint(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            status, payload = await handler(request)
        except RelayHTTPError as exc:
            return _json(exc.status, {"error": exc.message})
        return _json(status, payload)

    return endpoint


# The bus's own requests, many per command: routed here, straight to their
# handler, without starlette's middleware and route scan (a third of the
# relay's time per command). Every other route goes through starlette.
_HOT_ROUTES: tuple[tuple[str, re.Pattern[str], str, tuple[str, ...]], ...] = (
    ("PATCH", re.compile(r"/api/commands/([^/]+)"), "patch_command", ("id",)),
    ("PUT", re.compile(r"/api/orchestrators/([^/]+)/agents/([^/]+)"), "put_agent",
     ("id", "agentId")),
    ("POST", re.compile(r"/api/orchestrators/([^/]+)/heartbeat"), "heartbeat", ("id",)),
)


@attrs.define(eq=False)
class _Gate:
    """In front of everything: the test faults, then bearer auth, on /api."""

    app: ASGIApp
    faults: Faults
    token: str
    api: _Api | None = None
    _expected: bytes = attrs.field(init=False)
    _hot: list[tuple[str, re.Pattern[str], Handler, tuple[str, ...]]] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._expected = f"Bearer {self.token}".encode()
        self._hot = [(method, pattern, getattr(self.api, name), names)
                     for method, pattern, name, names in _HOT_ROUTES] if self.api else []

    async def _hot_route(self, scope: Scope, receive: Receive, send: Send) -> bool:
        method, path = scope["method"], scope["path"]
        for route_method, pattern, handler, names in self._hot:
            if method == route_method and (match := pattern.fullmatch(path)):
                request = Request({**scope, "path_params": dict(zip(names, match.groups(),
                                                                     strict=True))}, receive)
                try:
                    status, payload = await handler(request)
                except RelayHTTPError as exc:
                    status, payload = exc.status, {"error": exc.message}
                await _send_json(send, status, payload)
                return True
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # nothing to start or stop: answer it here
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] == "http" and scope["path"].startswith("/api"):
            if self.faults.hang:
                await self.faults.wait_unhung()
            if self.faults.status is not None:
                status = self.faults.status
                await _send_json(send, status, {"error": f"injected fault: HTTP {status}"})
                return
            authorization = b""
            for name, value in scope["headers"]:
                if name == b"authorization":
                    authorization = value
                    break
            if not hmac.compare_digest(authorization, self._expected):
                await _send_json(send, 401, {"error": "missing or wrong bearer token"},
                                 ((b"www-authenticate", b"Bearer"),))
                return
            if await self._hot_route(scope, receive, send):
                return
        await self.app(scope, receive, send)


def _sse(commands: list[Command]) -> bytes:
    return b"".join(b"event: command\nid: %s\ndata: %s\n\n" % (c.id.encode(), _dumps(c.to_json()))
                    for c in commands)


@attrs.define(eq=False)
class _CommandStream:
    """``GET /api/commands/stream?target=``: pending first, then each new command."""

    store: RelayStore
    faults: Faults
    keepalive_interval: float

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        target = (query.get("target") or [""])[0]
        if not target:
            await _send_json(send, 400, {"error": "invalid target: required (orch:<id>)"})
            return
        subscription = self.store.subscribe(target)
        try:
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"text/event-stream; charset=utf-8"),
                (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]})
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_disconnect, receive, nursery.cancel_scope)
                await self._pump(subscription, send)
        finally:
            self.store.unsubscribe(subscription)

    @staticmethod
    async def _watch_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        scope.cancel()

    async def _pump(self, subscription: Subscription, send: Send) -> None:
        while True:
            if self.faults.hang:
                await self.faults.wait_unhung()
            batch = self.store.take(subscription)
            if batch:
                await send({"type": "http.response.body", "body": _sse(batch),
                            "more_body": True})
                continue
            with trio.move_on_after(self.keepalive_interval) as idle:
                await subscription.wake.wait()
            if idle.cancelled_caught and not self.faults.hang:
                await send({"type": "http.response.body", "body": b": keepalive\n\n",
                            "more_body": True})


@attrs.define(eq=False)
class _Api:
    store: RelayStore

    async def register(self, request: Request) -> tuple[int, Any]:
        answer, created = self.store.register(await _body(request))
        return (201 if created else 200), answer

    async def list_orchestrators(self, request: Request) -> tuple[int, Any]:
        store = self.store
        return 200, [store.orchestrator_json(o) for o in store.orchestrators.values()]

    async def get_orchestrator(self, request: Request) -> tuple[int, Any]:
        orch = self.store.get_orchestrator(request.path_params["id"])
        return 200, self.store.orchestrator_json(orch)

    async def heartbeat(self, request: Request) -> tuple[int, Any]:
        return 200, self.store.heartbeat(request.path_params["id"], await _body(request))

    async def put_agent(self, request: Request) -> tuple[int, Any]:
        params = request.path_params
        return 200, self.store.put_agent(params["id"], params["agentId"], await _body(request))

    async def orchestrator_action(self, request: Request) -> tuple[int, Any]:
        body = await _body(request)
        return 202, orchestrator_action(self.store, request.path_params["id"], body).to_json()

    async def spawn(self, request: Request) -> tuple[int, Any]:
        body = await _body(request)
        return 202, spawn(self.store, request.path_params["id"], body).to_json()

    async def agent_action(self, request: Request) -> tuple[int, Any]:
        body = await _body(request)
        return 202, agent_action(self.store, request.path_params["agentId"], body).to_json()

    async def list_commands(self, request: Request) -> tuple[int, Any]:
        query = request.query_params
        found = self.store.list_commands(query.get("target") or None,
                                         query.get("status") or None)
        return 200, [command.to_json() for command in found]

    async def create_command(self, request: Request) -> tuple[int, Any]:
        body = await _body(request)
        for name in ("type", "target"):
            if not isinstance(body.get(name), str) or not body[name]:
                raise bad(f"invalid {name}: expected a non-empty string")
        check_type(body, "source", (str,), "string")
        check_type(body, "correlationId", (str,), "string")
        command = self.store.create_command(
            body["target"], body["type"], body.get("params", {}),
            body.get("source") or REQUESTED_BY, body.get("correlationId"))
        return 201, command.to_json()

    async def get_command(self, request: Request) -> tuple[int, Any]:
        return 200, self.store.get_command(request.path_params["id"]).to_json()

    async def patch_command(self, request: Request) -> tuple[int, Any]:
        body = await _body(request)
        return 200, self.store.patch_command(request.path_params["id"], body).to_json()

    async def list_workspaces(self, request: Request) -> tuple[int, Any]:
        return 200, list(self.store.workspaces.values())

    async def patch_workspace(self, request: Request) -> tuple[int, Any]:
        return 200, self.store.set_workspace(request.path_params["id"], await _body(request))

    async def spec(self, request: Request) -> tuple[int, Any]:
        return 200, openapi_document(current_version())


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _json(exc.status_code, {"error": f"{exc.detail}: {request.method} {request.url.path}"})


def build_app(store: RelayStore, faults: Faults, token: str,
              keepalive_interval: float = KEEPALIVE_INTERVAL) -> ASGIApp:
    api = _Api(store)

    def route(path: str, handler: Handler, method: str) -> Route:
        return Route(path, _endpoint(handler), methods=[method])

    routes = [
        route("/api/orchestrators", api.register, "POST"),
        route("/api/orchestrators", api.list_orchestrators, "GET"),
        route("/api/orchestrators/{id}", api.get_orchestrator, "GET"),
        route("/api/orchestrators/{id}/heartbeat", api.heartbeat, "POST"),
        route("/api/orchestrators/{id}/agents/{agentId}", api.put_agent, "PUT"),
        route("/api/orchestrators/{id}/action", api.orchestrator_action, "POST"),
        route("/api/orchestrators/{id}/spawn", api.spawn, "POST"),
        route("/api/agents/{agentId}/action", api.agent_action, "POST"),
        Route("/api/commands/stream", _CommandStream(store, faults, keepalive_interval),
              methods=["GET"]),
        route("/api/commands", api.list_commands, "GET"),
        route("/api/commands", api.create_command, "POST"),
        route("/api/commands/{id}", api.get_command, "GET"),
        route("/api/commands/{id}", api.patch_command, "PATCH"),
        route("/api/workspaces", api.list_workspaces, "GET"),
        route("/api/workspaces/{id}", api.patch_workspace, "PATCH"),
        route("/api/spec", api.spec, "GET"),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    return _Gate(app, faults, token, api)


# -- state file ------------------------------------------------------------------------


def _read_state(path: Path) -> object | None:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DevRelayStateError(f"cannot read dev relay state file {path}: {exc}") from exc
    try:
        data: object = json.loads(raw)
    except ValueError as exc:
        raise DevRelayStateError(f"dev relay state file {path} is not JSON: {exc}") from exc
    return data


def _write_state(path: Path, data: bytes) -> None:
    """Atomically: a 0600 temporary beside it, fsync'd, renamed over it."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _save(store: RelayStore, path: Path) -> None:
    try:
        _write_state(path, _dumps(store.snapshot()))
    except OSError as exc:
        log.error("dev relay cannot write its state file %s: %s", path, exc)


async def _run_state_writer(store: RelayStore, path: Path) -> None:
    while True:
        await store.dirty.wait()
        store.dirty = trio.Event()
        started = trio.current_time()
        data = _dumps(store.snapshot())  # on the trio thread: the store cannot change meanwhile
        busy = trio.current_time() - started
        try:
            await trio.to_thread.run_sync(_write_state, path, data)
        except OSError as exc:  # a full disk: say so, keep serving, retry on the next change
            log.error("dev relay cannot write its state file %s: %s", path, exc)
        # a big state is snapshotted less often: at most a fifth of the loop's time
        await trio.sleep(max(STATE_WRITE_INTERVAL, 4 * busy))


# -- serving ---------------------------------------------------------------------------


def _listen(host: str, port: int) -> socket.socket:
    """Bind here, so that a taken port is one clear ``OSError`` (not nested groups)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"dev relay cannot listen on {host}:{port}: {exc.strerror}"
                      ) from exc
    return sock


def _tls(certfile: Path, keyfile: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(certfile), str(keyfile))
    return context


async def serve_dev_relay(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str,
    state_file: Path | None = None,
    offline_after: float = 30.0,
    upgrade_deadline: float = 600.0,
    keepalive_interval: float = KEEPALIVE_INTERVAL,
    certfile: Path | None = None,
    keyfile: Path | None = None,
    task_status: trio.TaskStatus[DevRelay] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Bind, hand back the ``DevRelay`` through ``task_status``, serve until cancelled.

    With ``certfile`` and ``keyfile`` (PEM) it serves https (its ``url`` says so)."""
    store = RelayStore(offline_after=offline_after, upgrade_deadline=upgrade_deadline)
    if state_file is not None:
        state_file = Path(state_file)
        data = await trio.to_thread.run_sync(_read_state, state_file)
        if data is not None:
            store.restore(data)
        try:  # a state file that cannot be written fails the start, not a later change
            await trio.to_thread.run_sync(_write_state, state_file, _dumps(store.snapshot()))
        except OSError as exc:
            raise DevRelayStateError(f"cannot write dev relay state file {state_file}: "
                                     f"{exc.strerror or exc}") from exc
    faults = Faults()
    app = build_app(store, faults, token, keepalive_interval)
    tls = _tls(certfile, keyfile) if certfile is not None and keyfile is not None else None
    sock = _listen(host, port)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.run_timers)
            if state_file is not None:
                nursery.start_soon(_run_state_writer, store, state_file)
            url = await nursery.start(partial(serve_asgi, app, sock, ssl_context=tls))
            task_status.started(DevRelay(url=url, token=token, faults=faults, store=store))
    finally:
        sock.close()  # closed already, unless the server never started
        if state_file is not None:
            _save(store, state_file)  # the last changes, synchronously, even when cancelled
