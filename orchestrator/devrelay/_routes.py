"""The dev relay's HTTP face: bearer auth and the test faults (one ASGI gate
in front of every ``/api`` route), the JSON routes and the SSE command stream."""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable
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

from .._version import current_version
from ._actions import REQUESTED_BY, agent_action, orchestrator_action, spawn
from ._records import StoredCommand, Subscription
from ._spec import JSON, RelayHTTPError, bad, check_type, openapi_document
from ._store import RelayStore

log = logging.getLogger("relay_orchestrator.devrelay")

KEEPALIVE_INTERVAL = 15.0  # seconds between `: keepalive` comments on an idle stream


# -- faults --------------------------------------------------------------------------


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



# -- HTTP ------------------------------------------------------------------------------


def dumps_json(payload: object) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def _json(status: int, payload: object) -> Response:
    return Response(dumps_json(payload), status, media_type="application/json")


async def _send_json(send: Send, status: int, payload: object,
                     headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    body = dumps_json(payload)
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


def _sse(commands: list[StoredCommand]) -> bytes:
    return b"".join(
        b"event: command\nid: %s\ndata: %s\n\n" % (c.id.encode(), dumps_json(c.to_json()))
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
