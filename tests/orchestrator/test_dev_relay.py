"""The dev relay over real HTTP on loopback: every route, the stream, faults, state file."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

import attrs
import httpx
import pytest
import trio
import trio.testing

from orchestrator.devrelay._records import SUBSCRIPTION_BUFFER
from orchestrator.devrelay._relay import DevRelay, Faults, serve_dev_relay
from orchestrator.devrelay._routes import build_app
from orchestrator.devrelay._spec import openapi_document
from orchestrator.devrelay._store import RelayStore

TOKEN = "dev-relay-test-token"
WAIT = 5
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def relay(nursery: trio.Nursery) -> DevRelay:
    relay: DevRelay = await nursery.start(partial(serve_dev_relay, token=TOKEN,
                                                  keepalive_interval=0.1))
    return relay


@pytest.fixture
async def client(relay: DevRelay) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=relay.url, headers=AUTH, timeout=WAIT) as client:
        yield client


def registration(orch_id: str = "o1", **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": orch_id, "hostname": "host-1", "version": "0.4.2", "pid": 4242,
        "startedAt": 1763940000000, "providers": ["command"], "baseDir": "/srv/base",
        "capabilities": {"relayCommandBus": True, "selfUpgrade": True},
        "supervisor": "systemd", "selfUnit": "relay-orchestrator.service", "agents": [],
    }
    body.update(fields)
    return body


def agent_report(agent_id: str = "ag_1", **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "agentId": agent_id, "spawnRequestId": "sp_old", "provider": "command",
        "label": "worker", "tags": [], "status": "running", "pid": 5151,
        "tmuxSession": None, "cwd": "/srv/base/app", "restartCount": 0,
    }
    body.update(fields)
    return body


async def register(client: httpx.AsyncClient, orch_id: str = "o1", **fields: Any) -> None:
    answer = await client.post("/api/orchestrators", json=registration(orch_id, **fields))
    assert answer.status_code in (200, 201), answer.text


async def claim(client: httpx.AsyncClient, command_id: str) -> None:
    answer = await client.patch(f"/api/commands/{command_id}", json={"status": "running"})
    assert answer.status_code == 200, answer.text


# -- a tiny SSE client (HTTP/1.0: the body ends with the connection, no chunking) ----------


@attrs.define
class SSE:
    stream: trio.SocketStream
    buffer: bytes = b""

    async def block(self) -> str:
        while b"\n\n" not in self.buffer:
            data = await self.stream.receive_some()
            assert data, "stream closed"
            self.buffer += data
        block, self.buffer = self.buffer.split(b"\n\n", 1)
        return block.decode()

    async def command(self) -> dict[str, Any]:
        """The next command event, skipping keepalives."""
        while True:
            block = await self.block()
            if block.startswith(":"):
                continue
            lines = dict(line.split(": ", 1) for line in block.split("\n"))
            assert lines["event"] == "command"
            data: dict[str, Any] = json.loads(lines["data"])
            assert lines["id"] == data["id"]
            return data


async def _http10(relay: DevRelay, path: str) -> tuple[trio.SocketStream, str, bytes]:
    port = int(relay.url.rsplit(":", 1)[1])
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(f"GET {path} HTTP/1.0\r\nHost: relay\r\n"
                          f"Authorization: Bearer {TOKEN}\r\n\r\n".encode())
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        data = await stream.receive_some()
        assert data, "closed before the headers"
        buffer += data
    head, rest = buffer.split(b"\r\n\r\n", 1)
    return stream, head.decode("latin-1"), rest


@asynccontextmanager
async def open_sse(relay: DevRelay, target: str) -> AsyncIterator[SSE]:
    with trio.fail_after(WAIT):
        stream, head, rest = await _http10(relay,
                                           f"/api/commands/stream?target={quote(target)}")
    async with stream:
        assert head.startswith("HTTP/1.1 200"), head
        assert "content-type: text/event-stream" in head.lower()
        yield SSE(stream, rest)


# -- auth, faults, spec, shutdown ----------------------------------------------------------

ROUTES = [
    ("POST", "/api/orchestrators"), ("GET", "/api/orchestrators"),
    ("GET", "/api/orchestrators/o1"), ("POST", "/api/orchestrators/o1/heartbeat"),
    ("PUT", "/api/orchestrators/o1/agents/ag_1"), ("POST", "/api/orchestrators/o1/action"),
    ("POST", "/api/orchestrators/o1/spawn"), ("POST", "/api/agents/ag_1/action"),
    ("GET", "/api/commands"), ("POST", "/api/commands"), ("GET", "/api/commands/stream"),
    ("GET", "/api/commands/cmd_1"), ("PATCH", "/api/commands/cmd_1"),
    ("GET", "/api/workspaces"), ("PATCH", "/api/workspaces/ws_1"), ("GET", "/api/spec"),
]


async def test_every_route_needs_the_bearer_token(relay: DevRelay) -> None:
    async with httpx.AsyncClient(base_url=relay.url, timeout=WAIT) as anonymous:
        for method, path in ROUTES:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
                answer = await anonymous.request(method, path, headers=headers, json={})
                assert answer.status_code == 401, (method, path, headers)
                assert answer.json()["error"] == "missing or wrong bearer token"


async def test_spec_describes_exactly_the_routes(client: httpx.AsyncClient) -> None:
    answer = await client.get("/api/spec")
    assert answer.status_code == 200
    spec = answer.json()
    assert spec["openapi"].startswith("3.1")
    described = {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}
    templated = {(method, path.replace("/o1", "/{id}").replace("ag_1", "{agentId}")
                  .replace("cmd_1", "{id}").replace("ws_1", "{id}")) for method, path in ROUTES}
    assert described == templated
    app = build_app(RelayStore(), Faults(), TOKEN)
    served = {(method, route.path) for route in app.app.routes  # type: ignore[attr-defined]
              for method in route.methods - {"HEAD"}}
    assert served == described
    json.dumps(openapi_document("1.2.3"))  # serialisable as is


async def test_unknown_route_and_bad_json_answer_json_errors(client: httpx.AsyncClient) -> None:
    missing = await client.get("/api/nothing-here")
    assert missing.status_code == 404 and "error" in missing.json()
    wrong_method = await client.delete("/api/orchestrators")
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()
    garbled = await client.post("/api/orchestrators", content=b"{not json")
    assert garbled.status_code == 400
    assert garbled.json() == {"error": "request body is not valid JSON"}
    listed = await client.post("/api/orchestrators", json=[1, 2])
    assert listed.json() == {"error": "request body must be a JSON object"}


async def test_fault_status_answers_every_api_request(relay: DevRelay,
                                                      client: httpx.AsyncClient) -> None:
    relay.faults.status = 500
    for method, path in ROUTES:
        answer = await client.request(method, path, json={})
        assert answer.status_code == 500, (method, path)
    relay.faults.status = None
    assert (await client.get("/api/orchestrators")).status_code == 200


async def test_fault_hang_holds_requests_and_streams_until_cleared(
        relay: DevRelay, client: httpx.AsyncClient) -> None:
    async with open_sse(relay, "orch:o1") as sse:
        relay.faults.hang = True
        answers: list[int] = []

        async def ask() -> None:
            answers.append((await client.get("/api/orchestrators")).status_code)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask)
            cid = relay.create_command("orch:o1", "agent.stop", {"agentId": "a"})["id"]
            with trio.move_on_after(0.3) as quiet:  # nothing comes while hung, not even keepalive
                await sse.block()
            assert quiet.cancelled_caught and answers == []
            relay.faults.hang = False
        assert answers == [200]
        with trio.fail_after(WAIT):
            assert (await sse.command())["id"] == cid


async def test_cancelling_the_caller_stops_the_server_promptly(tmp_path: Path) -> None:
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            relay: DevRelay = await nursery.start(partial(serve_dev_relay, token=TOKEN))
            async with httpx.AsyncClient(base_url=relay.url, headers=AUTH) as client:
                async with open_sse(relay, "orch:o1"):
                    relay.faults.hang = True
                    nursery.start_soon(client.get, "/api/orchestrators")  # never answered
                    await trio.testing.wait_all_tasks_blocked()
                    nursery.cancel_scope.cancel()
    async with httpx.AsyncClient(timeout=WAIT) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(relay.url + "/api/spec")


# -- registration, heartbeat, agents -----------------------------------------------------


async def test_register_is_an_upsert_that_keeps_unknown_fields(
        relay: DevRelay, client: httpx.AsyncClient) -> None:
    first = await client.post("/api/orchestrators",
                              json=registration(agents=[agent_report()], futureField={"x": 1}))
    assert first.status_code == 201
    assert first.json() == {"id": "o1", "agentId": "orch:o1", "status": "online"}
    again = await client.post("/api/orchestrators", json=registration(version="0.4.3"))
    assert again.status_code == 200 and again.json()["agentId"] == "orch:o1"
    orch = (await client.get("/api/orchestrators/o1")).json()
    assert orch["status"] == "online" and orch["version"] == "0.4.3"
    assert orch["registrations"] == 2 and orch["heartbeats"] == 0
    assert orch["agents"] == [] and orch["upgrade"] is None
    assert orch["supervisor"] == "systemd" and orch["baseDir"] == "/srv/base"
    assert "futureField" not in orch  # the second registration replaced the first
    assert orch == relay.orchestrator("o1")
    assert [o["id"] for o in (await client.get("/api/orchestrators")).json()] == ["o1"]
    missing = await client.get("/api/orchestrators/nope")
    assert missing.status_code == 404 and missing.json()["error"] == "orchestrator not found: nope"
    assert relay.orchestrator("nope") is None


@pytest.mark.parametrize(("fields", "error"), [
    ({"id": ""}, "invalid id: expected a non-empty string"),
    ({"version": 4}, "invalid version: expected string"),
    ({"pid": "42"}, "invalid pid: expected integer"),
    ({"pid": True}, "invalid pid: expected integer"),
    ({"providers": "claude"}, "invalid providers: expected a list of strings"),
    ({"capabilities": []}, "invalid capabilities: expected object"),
    ({"agents": {}}, "invalid agents: expected a list of ManagedAgent objects"),
    ({"agents": [{"agentId": 3}]}, "invalid agents[0].agentId: expected a non-empty string"),
    ({"agents": [{"agentId": "a", "tags": "x"}]},
     "invalid agents[0].tags: expected a list of strings"),
])
async def test_register_rejects_wrong_types(client: httpx.AsyncClient, fields: dict[str, Any],
                                            error: str) -> None:
    answer = await client.post("/api/orchestrators", json=registration(**fields))
    assert answer.status_code == 400
    assert answer.json() == {"error": error}


async def test_heartbeat_stores_agents_and_load(relay: DevRelay,
                                                client: httpx.AsyncClient) -> None:
    unknown = await client.post("/api/orchestrators/o1/heartbeat", json={})
    assert unknown.status_code == 404
    await register(client, agents=[agent_report("ag_1")])
    load = {"cpuPercent": 3.1, "memoryRss": 52000000, "agentCount": 1}
    beat = await client.post("/api/orchestrators/o1/heartbeat", json={
        "version": "0.4.2", "agents": [agent_report("ag_2", extra="kept")], "load": load})
    assert beat.status_code == 200 and beat.json()["status"] == "online"
    orch = relay.orchestrator("o1")
    assert orch is not None
    assert orch["heartbeats"] == 1 and orch["load"] == load
    assert [a["agentId"] for a in orch["agents"]] == ["ag_2"]
    assert orch["agents"][0]["extra"] == "kept"
    # an agent no longer reported is no longer addressable
    gone = await client.post("/api/agents/ag_1/action", json={"action": "stop"})
    assert gone.status_code == 404


async def test_offline_after_silence_wakes_waiters(nursery: trio.Nursery) -> None:
    relay: DevRelay = await nursery.start(partial(serve_dev_relay, token=TOKEN,
                                                  offline_after=0.2))
    async with httpx.AsyncClient(base_url=relay.url, headers=AUTH, timeout=WAIT) as client:
        await register(client)

        def status() -> str:
            orch = relay.orchestrator("o1")
            assert orch is not None
            return str(orch["status"])

        assert status() == "online"
        with trio.fail_after(WAIT):
            await relay.wait_for(lambda: status() == "offline")
        assert (await client.get("/api/orchestrators/o1")).json()["status"] == "offline"
        await client.post("/api/orchestrators/o1/heartbeat", json={})
        assert status() == "online"
        with trio.fail_after(WAIT):
            await relay.wait_for(lambda: status() == "offline")


async def test_put_agent_is_a_full_upsert(relay: DevRelay, client: httpx.AsyncClient) -> None:
    unknown = await client.put("/api/orchestrators/o1/agents/ag_1", json=agent_report())
    assert unknown.status_code == 404
    await register(client, agents=[agent_report("ag_1", label="old")])
    answer = await client.put("/api/orchestrators/o1/agents/ag_1",
                              json={"status": "exited", "exit": {"exitCode": 1}})
    assert answer.status_code == 200
    assert answer.json() == {"status": "exited", "exit": {"exitCode": 1}, "agentId": "ag_1"}
    orch = relay.orchestrator("o1")
    assert orch is not None and orch["agents"] == [answer.json()]
    mismatch = await client.put("/api/orchestrators/o1/agents/ag_1", json={"agentId": "ag_9"})
    assert mismatch.status_code == 400
    bad_type = await client.put("/api/orchestrators/o1/agents/ag_1", json={"exit": "boom"})
    assert bad_type.json() == {"error": "invalid exit: expected object"}


async def test_workspace_progress_is_never_moved_back_to_active(
        relay: DevRelay, client: httpx.AsyncClient) -> None:
    workspace = {"mode": "isolated", "requestedMode": "isolated", "id": "ws_1",
                 "repoRoot": "/srv/base/app", "worktreePath": "/srv/wt/ag_1",
                 "branch": "relay/ag_1", "baseSha": "abc", "status": "active"}
    await register(client, agents=[agent_report("ag_1", workspace=workspace)])
    listed = (await client.get("/api/workspaces")).json()
    assert [(w["id"], w["status"], w["ownerAgentId"]) for w in listed] == [
        ("ws_1", "active", "ag_1")]
    moved = await client.patch("/api/workspaces/ws_1",
                               json={"status": "merged", "metadata": {"prUrl": "https://x/pull/1"}})
    assert moved.status_code == 200 and moved.json()["status"] == "merged"
    await client.put("/api/orchestrators/o1/agents/ag_1",
                     json=agent_report("ag_1", workspace=workspace, label="renamed"))
    await client.post("/api/orchestrators/o1/heartbeat",
                      json={"agents": [agent_report("ag_1", workspace=workspace)]})
    (record,) = (await client.get("/api/workspaces")).json()
    assert record["status"] == "merged"
    assert record["metadata"]["prUrl"] == "https://x/pull/1"  # merged, not replaced
    orch = relay.orchestrator("o1")
    assert orch is not None and orch["agents"][0]["workspace"]["status"] == "merged"
    assert (await client.patch("/api/workspaces/ws_9", json={})).status_code == 404


# -- commands ------------------------------------------------------------------------


async def test_command_object_and_listing(relay: DevRelay, client: httpx.AsyncClient) -> None:
    made = await client.post("/api/commands", json={
        "type": "agent.stop", "target": "orch:o1", "params": {"agentId": "a"},
        "correlationId": "sp_1"})
    assert made.status_code == 201
    command = made.json()
    assert list(command) == ["id", "type", "source", "target", "correlationId", "params",
                             "status", "result", "error", "createdAt", "updatedAt"]
    assert command["id"].startswith("cmd_") and len(command["id"]) == 36
    assert command["status"] == "pending" and command["source"] == "dashboard"
    assert isinstance(command["createdAt"], int) and command["createdAt"] == command["updatedAt"]
    other = relay.create_command("orch:o2", "agent.spawn", {"spawnRequestId": "sp_2"})
    assert other["source"] == "system" and other["correlationId"] == "sp_2"
    assert (await client.get(f"/api/commands/{command['id']}")).json() == command
    assert relay.get_command(command["id"]) == command
    everything = (await client.get("/api/commands")).json()
    assert [c["id"] for c in everything] == [command["id"], other["id"]]
    mine = await client.get("/api/commands", params={"target": "orch:o1", "status": "pending"})
    assert [c["id"] for c in mine.json()] == [command["id"]]
    assert relay.commands(target="orch:o2") == [other]
    assert relay.commands(status="running") == []
    bad_status = await client.get("/api/commands", params={"status": "done"})
    assert bad_status.status_code == 400
    missing = await client.get("/api/commands/cmd_nope")
    assert missing.status_code == 404
    no_type = await client.post("/api/commands", json={"target": "orch:o1"})
    assert no_type.json() == {"error": "invalid type: expected a non-empty string"}


async def test_claim_once_then_settle_idempotently(relay: DevRelay,
                                                   client: httpx.AsyncClient) -> None:
    cid = relay.create_command("orch:o1", "agent.stop", {"agentId": "a"})["id"]
    url = f"/api/commands/{cid}"
    early = await client.patch(url, json={"status": "succeeded", "result": {}})
    assert early.status_code == 409 and "not running" in early.json()["error"]
    claimed = await client.patch(url, json={"status": "running"})
    assert claimed.status_code == 200 and claimed.json()["status"] == "running"
    again = await client.patch(url, json={"status": "running"})
    assert again.status_code == 409
    assert again.json()["error"] == f"command {cid} is running, not pending"
    outcome = {"status": "succeeded", "result": {"agentId": "a", "exitCode": 0}}
    settled = await client.patch(url, json=outcome)
    assert settled.status_code == 200
    assert settled.json()["result"] == outcome["result"] and settled.json()["error"] is None
    replay = await client.patch(url, json=outcome)
    assert replay.status_code == 200 and replay.json() == settled.json()
    different = await client.patch(url, json={"status": "failed", "error": "boom"})
    assert different.status_code == 409
    other_result = await client.patch(url, json={"status": "succeeded", "result": {}})
    assert other_result.status_code == 409
    failing = relay.create_command("orch:o1", "agent.stop", {})["id"]
    await claim(client, failing)
    failure = {"status": "failed", "error": "no managed agent matches agentId=a"}
    assert (await client.patch(f"/api/commands/{failing}", json=failure)).status_code == 200
    assert (await client.patch(f"/api/commands/{failing}", json=failure)).status_code == 200
    assert relay.get_command(failing)["error"] == failure["error"]  # type: ignore[index]


@pytest.mark.parametrize(("body", "error"), [
    ({}, "invalid status: required"),
    ({"status": 1}, "invalid status: expected string"),
    ({"status": "done"}, "invalid status: expected one of running, succeeded, failed, cancelled"),
    ({"status": "failed"}, "invalid error: expected a non-empty string"),
    ({"status": "failed", "error": 3}, "invalid error: expected a non-empty string"),
    ({"status": "succeeded", "result": [1]}, "invalid result: expected an object or null"),
])
async def test_patch_validates_the_body(relay: DevRelay, client: httpx.AsyncClient,
                                        body: dict[str, Any], error: str) -> None:
    cid = relay.create_command("orch:o1", "agent.stop", {})["id"]
    await claim(client, cid)
    answer = await client.patch(f"/api/commands/{cid}", json=body)
    assert answer.status_code == 400 and answer.json() == {"error": error}


async def test_cancel_only_while_pending(relay: DevRelay, client: httpx.AsyncClient) -> None:
    cid = relay.create_command("orch:o1", "agent.stop", {})["id"]
    url = f"/api/commands/{cid}"
    assert (await client.patch(url, json={"status": "cancelled"})).status_code == 200
    assert (await client.patch(url, json={"status": "cancelled"})).status_code == 200
    assert (await client.patch(url, json={"status": "running"})).status_code == 409
    assert relay.commands(status="cancelled")[0]["id"] == cid


async def test_wait_for_wakes_on_every_kind_of_change(relay: DevRelay,
                                                      client: httpx.AsyncClient) -> None:
    seen: list[str] = []

    async def watch(name: str, predicate: Any) -> None:
        with trio.fail_after(WAIT):
            await relay.wait_for(predicate)
        seen.append(name)

    def orch() -> dict[str, Any]:
        found = relay.orchestrator("o1")
        return found if found is not None else {}

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch, "registered", lambda: orch().get("registrations") == 1)
        nursery.start_soon(watch, "heartbeat", lambda: orch().get("heartbeats") == 1)
        nursery.start_soon(watch, "agent", lambda: len(orch().get("agents", [])) == 1)
        nursery.start_soon(watch, "command", lambda: len(relay.commands(status="running")) == 1)
        await trio.testing.wait_all_tasks_blocked()
        await register(client)
        await client.post("/api/orchestrators/o1/heartbeat", json={})
        await client.put("/api/orchestrators/o1/agents/ag_1", json=agent_report())
        await claim(client, relay.create_command("orch:o1", "agent.stop", {})["id"])
    assert sorted(seen) == ["agent", "command", "heartbeat", "registered"]


# -- the stream ------------------------------------------------------------------------


async def test_stream_replays_pending_then_delivers_live_then_keeps_alive(
        relay: DevRelay, client: httpx.AsyncClient) -> None:
    first = relay.create_command("orch:o1", "agent.stop", {"n": 1})["id"]
    claimed = relay.create_command("orch:o1", "agent.stop", {"n": 2})["id"]
    second = relay.create_command("orch:o1", "agent.stop", {"n": 3})["id"]
    relay.create_command("orch:other", "agent.stop", {"n": 4})
    await claim(client, claimed)
    async with open_sse(relay, "orch:o1") as sse:
        with trio.fail_after(WAIT):
            assert [(await sse.command())["id"] for _ in range(2)] == [first, second]
            live = relay.create_command("orch:o1", "agent.spawn", {"provider": "command"})
            assert await sse.command() == live
            assert await sse.block() == ": keepalive"
            assert await sse.block() == ": keepalive"


async def test_stream_needs_a_target(relay: DevRelay) -> None:
    with trio.fail_after(WAIT):
        stream, head, _ = await _http10(relay, "/api/commands/stream")
    await stream.aclose()
    assert head.startswith("HTTP/1.1 400")


async def test_two_streams_and_a_burst_past_the_buffer(relay: DevRelay) -> None:
    count = SUBSCRIPTION_BUFFER * 2 + 7
    async with open_sse(relay, "orch:o1") as one, open_sse(relay, "orch:o1") as two:
        # created without a checkpoint: both mailboxes overflow and re-read pending
        ids = [relay.create_command("orch:o1", "agent.stop", {"i": i})["id"] for i in range(count)]
        with trio.fail_after(WAIT):
            for sse in (one, two):
                assert [(await sse.command())["id"] for _ in range(count)] == ids
            late = relay.create_command("orch:o1", "agent.stop", {})["id"]
            assert (await one.command())["id"] == late
            assert (await two.command())["id"] == late


async def test_a_stream_skips_commands_claimed_before_it_sends_them(
        relay: DevRelay, client: httpx.AsyncClient) -> None:
    async with open_sse(relay, "orch:o1") as sse:
        taken = relay.create_command("orch:o1", "agent.stop", {})["id"]
        await claim(client, taken)  # the stream may or may not have sent it already
        kept = relay.create_command("orch:o1", "agent.stop", {})["id"]
        with trio.fail_after(WAIT):
            got = await sse.command()
            if got["id"] == taken:
                got = await sse.command()
        assert got["id"] == kept


# -- actions -------------------------------------------------------------------------


async def test_orchestrator_restart_and_shutdown(relay: DevRelay,
                                                 client: httpx.AsyncClient) -> None:
    assert (await client.post("/api/orchestrators/o1/action",
                              json={"action": "restart"})).status_code == 404
    await register(client)
    restart = await client.post("/api/orchestrators/o1/action",
                                json={"action": "restart", "agentId": "ag_1"})
    assert restart.status_code == 202
    command = restart.json()
    assert command["type"] == "orchestrator.restart" and command["target"] == "orch:o1"
    assert command["params"]["agentId"] == "ag_1" and command["params"]["orchestratorId"] == "o1"
    shutdown = (await client.post("/api/orchestrators/o1/action",
                                  json={"action": "shutdown"})).json()
    assert shutdown["type"] == "orchestrator.shutdown" and "agentId" not in shutdown["params"]
    bad = await client.post("/api/orchestrators/o1/action", json={"action": "reboot"})
    assert bad.status_code == 400
    assert relay.commands(target="orch:o1", status="pending") == [command, shutdown]


async def test_spawn_fills_the_request_fields(relay: DevRelay, client: httpx.AsyncClient) -> None:
    assert (await client.post("/api/orchestrators/o1/spawn", json={})).status_code == 404
    await register(client)
    answer = await client.post("/api/orchestrators/o1/spawn",
                               json={"provider": "command", "cwd": "/srv/base/app", "x": 1})
    assert answer.status_code == 202
    command = answer.json()
    params = command["params"]
    assert command["type"] == "agent.spawn" and command["target"] == "orch:o1"
    assert params["action"] == "spawn" and params["spawnRequestId"].startswith("sp_")
    assert command["correlationId"] == params["spawnRequestId"]
    assert params["requestedBy"] == "dashboard" and isinstance(params["requestedAt"], int)
    assert params["x"] == 1
    given = (await client.post("/api/orchestrators/o1/spawn",
                               json={"provider": "command", "spawnRequestId": "sp_mine"})).json()
    assert given["params"]["spawnRequestId"] == "sp_mine"


SPAWN = {
    "provider": "claude", "cwd": "/srv/base/app", "workspaceMode": "shared", "model": "sonnet",
    "label": "reviewer", "tags": ["memory-reload:NOTES.md", "team", "memory-reload: docs/a.md "],
    "providerArgs": ["--verbose"], "prompt": "Review open PRs", "headless": True,
    "policyName": "reviewer-policy", "env": {"AGENT_RELAY_TOKEN": "secret"},
}


async def spawned_agent(relay: DevRelay, client: httpx.AsyncClient) -> dict[str, Any]:
    """Spawn through the relay and settle it as an orchestrator would."""
    await register(client)
    command = (await client.post("/api/orchestrators/o1/spawn", json=SPAWN)).json()
    await claim(client, command["id"])
    rid = command["params"]["spawnRequestId"]
    await client.patch(f"/api/commands/{command['id']}", json={
        "status": "succeeded", "result": {"agentId": "ag_1", "spawnRequestId": rid, "pid": 9}})
    await client.put("/api/orchestrators/o1/agents/ag_1", json=agent_report(
        "ag_1", spawnRequestId=rid, tags=SPAWN["tags"], policyName="reviewer-policy"))
    return dict(command["params"])


async def test_agent_restart_rebuilds_the_last_spawn_params(
        relay: DevRelay, client: httpx.AsyncClient) -> None:
    spawned = await spawned_agent(relay, client)
    answer = await client.post("/api/agents/ag_1/action",
                               json={"action": "restart", "timeoutMs": 3000})
    assert answer.status_code == 202
    command = answer.json()
    params = command["params"]
    assert command["type"] == "agent.restart" and command["target"] == "orch:o1"
    assert params["agentId"] == "ag_1" and params["timeoutMs"] == 3000
    assert params["spawnRequestId"] == spawned["spawnRequestId"]
    assert command["correlationId"] == spawned["spawnRequestId"]
    restart = params["restartSpawn"]
    assert restart["spawnRequestId"].startswith("sp_")
    assert restart["spawnRequestId"] != spawned["spawnRequestId"]
    assert restart["agentId"] == "ag_1" and restart["action"] == "spawn"
    unchanged = {k: v for k, v in restart.items()
                 if k not in ("spawnRequestId", "agentId", "requestedAt")}
    assert unchanged == {k: v for k, v in spawned.items()
                         if k not in ("spawnRequestId", "requestedAt")}
    # once that restart succeeds, the next restart starts from its params
    await claim(client, command["id"])
    await client.patch(f"/api/commands/{command['id']}", json={
        "status": "succeeded", "result": {"agentId": "ag_1", "pid": 10, "previousPid": 9}})
    again = (await client.post("/api/agents/ag_1/action", json={"action": "restart"})).json()
    assert again["params"]["restartSpawn"]["spawnRequestId"] not in (
        restart["spawnRequestId"], spawned["spawnRequestId"])
    assert again["params"]["restartSpawn"]["env"] == SPAWN["env"]


async def test_agent_restart_without_known_params_uses_the_report(
        relay: DevRelay, client: httpx.AsyncClient) -> None:
    meta = {"model": "sonnet", "effort": "high", "approvalMode": "guarded",
            "providerArgs": ["--fast"], "profile": "reviewer", "workspaceMode": "isolated"}
    await register(client, agents=[agent_report("ag_7", meta=meta, policyName="p1",
                                                tags=["a"], spawnRequestId="sp_unknown")])
    restart = (await client.post("/api/agents/ag_7/action",
                                 json={"action": "restart"})).json()["params"]["restartSpawn"]
    assert {k: v for k, v in restart.items() if k not in ("spawnRequestId", "requestedAt")} == {
        "action": "spawn", "provider": "command", "model": "sonnet", "effort": "high",
        "cwd": "/srv/base/app", "workspaceMode": "isolated", "profile": "reviewer",
        "label": "worker", "agentId": "ag_7", "tags": ["a"], "approvalMode": "guarded",
        "permissionMode": "guarded", "providerArgs": ["--fast"], "policyName": "p1",
        "headless": True, "requestedBy": "dashboard"}


async def test_agent_compact_and_stop(relay: DevRelay, client: httpx.AsyncClient) -> None:
    await spawned_agent(relay, client)
    compact = (await client.post("/api/agents/ag_1/action", json={"action": "compact"})).json()
    assert compact["type"] == "agent.compact"
    assert compact["params"]["memory"] == {"alwaysReload": ["NOTES.md", "docs/a.md"]}
    stop = (await client.post("/api/agents/ag_1/action",
                              json={"action": "stop", "timeoutMs": 500})).json()
    assert stop["type"] == "agent.stop" and stop["params"]["timeoutMs"] == 500
    assert stop["params"]["policyName"] == "reviewer-policy"
    assert "restartSpawn" not in stop["params"]
    await client.put("/api/orchestrators/o1/agents/ag_2", json=agent_report("ag_2", tags=["x"]))
    plain = (await client.post("/api/agents/ag_2/action", json={"action": "compact"})).json()
    assert "memory" not in plain["params"]
    assert (await client.post("/api/agents/nobody/action",
                              json={"action": "stop"})).status_code == 404
    assert (await client.post("/api/agents/ag_1/action",
                              json={"action": "explode"})).status_code == 400


# -- upgrades ------------------------------------------------------------------------


async def upgrade(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post("/api/orchestrators/o1/action", json={"action": "upgrade", **body})


@pytest.mark.parametrize(("fields", "body", "status", "error"), [
    ({"capabilities": {"relayCommandBus": True}}, {"targetVersion": "0.5.0"}, 409,
     "orchestrator o1 v0.4.2 does not advertise self-upgrade support; upgrade it manually"),
    ({"capabilities": {"relayCommandBus": False, "selfUpgrade": True}}, {"targetVersion": "0.5.0"},
     409, "orchestrator o1 does not support relay command bus upgrades; upgrade it manually first"),
    ({"supervisor": "none"}, {"targetVersion": "0.5.0"}, 409,
     "orchestrator o1 cannot self-upgrade under supervisor none; upgrade it manually"),
    ({"selfUnit": None}, {"targetVersion": "0.5.0"}, 409,
     "orchestrator o1 cannot self-upgrade under supervisor systemd; upgrade it manually"),
    ({}, {"targetVersion": "0.4.1"}, 409,
     "refusing downgrade 0.4.2 -> 0.4.1; pass force to override"),
    ({"version": "0.5.0.dev3"}, {"targetVersion": "0.4.9"}, 409,
     "refusing downgrade 0.5.0.dev3 -> 0.4.9; pass force to override"),
    ({}, {"targetVersion": "latest"}, 400, "targetVersion must be a semver version: latest"),
    ({}, {"targetVersion": "0.5"}, 400, "targetVersion must be a semver version: 0.5"),
    ({}, {"targetVersion": "0.5.0", "providers": ["orchestrator", "claude"]}, 400,
     "providers must be any of: orchestrator (unknown: claude)"),
    ({}, {"targetVersion": "0.5.0", "providers": []}, 400,
     "providers must be any of: orchestrator"),
    ({}, {"targetVersion": "0.5.0", "force": "yes"}, 400, "invalid force: expected boolean"),
])
async def test_upgrade_safety_rails(client: httpx.AsyncClient, fields: dict[str, Any],
                                    body: dict[str, Any], status: int, error: str) -> None:
    await register(client, **fields)
    answer = await upgrade(client, **body)
    assert (answer.status_code, answer.json()) == (status, {"error": error})


async def test_upgrade_refused_while_offline(nursery: trio.Nursery) -> None:
    relay: DevRelay = await nursery.start(partial(serve_dev_relay, token=TOKEN, offline_after=0.1))
    async with httpx.AsyncClient(base_url=relay.url, headers=AUTH, timeout=WAIT) as client:
        await register(client)
        with trio.fail_after(WAIT):
            await relay.wait_for(lambda: (relay.orchestrator("o1") or {})["status"] == "offline")
        answer = await upgrade(client, targetVersion="0.5.0")
        assert (answer.status_code, answer.json()) == (409, {"error": "orchestrator is offline"})


async def test_upgrade_settles_when_the_new_version_registers(
        relay: DevRelay, client: httpx.AsyncClient) -> None:
    await register(client)
    answer = await upgrade(client, targetVersion="0.5.0")
    assert answer.status_code == 202
    command = answer.json()
    assert command["type"] == "orchestrator.upgrade" and command["target"] == "orch:o1"
    params = command["params"]
    assert params["requestedBy"] == "dashboard" and isinstance(params["requestedAt"], int)
    assert {k: v for k, v in params.items() if k not in ("requestedAt", "requestedBy")} == {
        "action": "upgrade", "orchestratorId": "o1", "targetVersion": "0.5.0",
        "fromVersion": "0.4.2", "providers": ["orchestrator"], "force": False}
    state = (relay.orchestrator("o1") or {})["upgrade"]
    assert state == {"commandId": command["id"], "desiredVersion": "0.5.0", "fromVersion": "0.4.2",
                     "status": "pending", "requestedAt": command["createdAt"]}
    second = await upgrade(client, targetVersion="0.6.0")
    assert second.status_code == 409 and "already pending" in second.json()["error"]
    await claim(client, command["id"])
    await register(client, version="0.4.2")  # an unrelated restart: still pending
    assert (relay.get_command(command["id"]) or {})["status"] == "running"
    await register(client, version="0.5.0")
    settled = relay.get_command(command["id"]) or {}
    assert settled["status"] == "succeeded"
    assert settled["result"] == {"version": "0.5.0", "fromVersion": "0.4.2"}
    state = (relay.orchestrator("o1") or {})["upgrade"]
    assert state["status"] == "succeeded" and isinstance(state["settledAt"], int)
    # an equal version is a reinstall; force allows a downgrade
    assert (await upgrade(client, targetVersion="0.5.0")).status_code == 202


async def test_a_failed_upgrade_command_fails_the_upgrade_state(
        relay: DevRelay, client: httpx.AsyncClient) -> None:
    await register(client)
    command = (await upgrade(client, targetVersion="0.3.0", force=True)).json()
    assert command["params"]["force"] is True
    await claim(client, command["id"])
    error = "upgrade did not take effect: running 0.4.2, wanted 0.3.0"
    answer = await client.patch(f"/api/commands/{command['id']}",
                                json={"status": "failed", "error": error})
    assert answer.status_code == 200
    state = (relay.orchestrator("o1") or {})["upgrade"]
    assert state["status"] == "failed" and state["error"] == error
    # the seed's reconcile: the wanted version showing up later still wins
    await register(client, version="0.3.0")
    assert (relay.get_command(command["id"]) or {})["status"] == "succeeded"
    assert "error" not in (relay.orchestrator("o1") or {})["upgrade"]


async def test_an_upgrade_command_made_in_process_is_tracked_too(
        relay: DevRelay, client: httpx.AsyncClient) -> None:
    await register(client, supervisor="none")  # no rails in process: tests reach the orchestrator
    command = relay.create_command("orch:o1", "orchestrator.upgrade",
                                   {"action": "upgrade", "targetVersion": "0.5.0"})
    state = (relay.orchestrator("o1") or {})["upgrade"]
    assert state["commandId"] == command["id"] and state["fromVersion"] == "0.4.2"
    await claim(client, command["id"])
    await register(client, version="0.5.0", supervisor="none")
    assert (relay.get_command(command["id"]) or {})["result"] == {
        "version": "0.5.0", "fromVersion": "0.4.2"}
    failing = relay.create_command("orch:o1", "orchestrator.upgrade", {"targetVersion": "0.6.0"})
    await claim(client, failing["id"])
    error = "self-upgrade needs systemd or launchd supervision and a known unit"
    await client.patch(f"/api/commands/{failing['id']}", json={"status": "failed", "error": error})
    state = (relay.orchestrator("o1") or {})["upgrade"]
    assert (state["commandId"], state["status"], state["error"]) == (failing["id"], "failed", error)
    cancelled = relay.create_command("orch:o1", "orchestrator.upgrade", {"targetVersion": "0.7.0"})
    await client.patch(f"/api/commands/{cancelled['id']}", json={"status": "cancelled"})
    state = (relay.orchestrator("o1") or {})["upgrade"]
    assert (state["commandId"], state["status"], state["error"]) == (
        cancelled["id"], "failed", "orchestrator upgrade cancelled")


async def test_upgrade_deadline_fails_the_command(nursery: trio.Nursery) -> None:
    relay: DevRelay = await nursery.start(partial(serve_dev_relay, token=TOKEN,
                                                  upgrade_deadline=0.2))
    async with httpx.AsyncClient(base_url=relay.url, headers=AUTH, timeout=WAIT) as client:
        await register(client)
        command = (await upgrade(client, targetVersion="0.5.0")).json()
        await claim(client, command["id"])
        with trio.fail_after(WAIT):
            await relay.wait_for(
                lambda: (relay.get_command(command["id"]) or {})["status"] == "failed")
        assert (relay.get_command(command["id"]) or {})["error"] == (
            "upgrade timed out; orchestrator still reports 0.4.2 (wanted 0.5.0)")
        assert (relay.orchestrator("o1") or {})["upgrade"]["status"] == "failed"


# -- state file ----------------------------------------------------------------------


async def test_state_file_round_trip(tmp_path: Path) -> None:
    state_file = tmp_path / "relay.json"
    async with trio.open_nursery() as nursery:
        relay: DevRelay = await nursery.start(partial(serve_dev_relay, token=TOKEN,
                                                      state_file=state_file))
        async with httpx.AsyncClient(base_url=relay.url, headers=AUTH, timeout=WAIT) as client:
            spawned = await spawned_agent(relay, client)
            upgrade_command = (await upgrade(client, targetVersion="0.5.0")).json()
            pending = relay.create_command("orch:o1", "agent.stop", {"agentId": "ag_1"})
            before = relay.orchestrator("o1")
            commands_before = relay.commands()
        nursery.cancel_scope.cancel()
    assert stat.S_IMODE(os.stat(state_file).st_mode) == 0o600
    assert not (tmp_path / "relay.json.tmp").exists()

    async with trio.open_nursery() as nursery:
        relay2: DevRelay = await nursery.start(partial(serve_dev_relay, token=TOKEN,
                                                       state_file=state_file))
        assert relay2.commands() == commands_before
        after = relay2.orchestrator("o1")
        assert after is not None and before is not None
        assert after == before
        assert after["upgrade"]["status"] == "pending"
        async with httpx.AsyncClient(base_url=relay2.url, headers=AUTH, timeout=WAIT) as client:
            async with open_sse(relay2, "orch:o1") as sse:
                with trio.fail_after(WAIT):
                    assert (await sse.command())["id"] == upgrade_command["id"]
                    assert (await sse.command())["id"] == pending["id"]
            restart = (await client.post("/api/agents/ag_1/action",
                                         json={"action": "restart"})).json()
            assert restart["params"]["restartSpawn"]["env"] == spawned["env"]
            assert restart["params"]["restartSpawn"]["prompt"] == spawned["prompt"]
            await register(client, version="0.5.0")
            assert (relay2.get_command(upgrade_command["id"]) or {})["status"] == "succeeded"
        nursery.cancel_scope.cancel()


async def test_state_writes_are_coalesced_in_the_background(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import orchestrator.devrelay._relay as module

    original = module._write_state
    writes: list[dict[str, Any]] = []
    wrote = [trio.Event()]

    def recording(path: Path, data: bytes) -> None:
        original(path, data)
        writes.append(json.loads(data))
        with contextlib.suppress(RuntimeError):  # the final flush runs on the trio thread
            trio.from_thread.run_sync(wrote[0].set)

    monkeypatch.setattr(module, "_write_state", recording)
    state_file = tmp_path / "relay.json"
    async with trio.open_nursery() as nursery:
        relay: DevRelay = await nursery.start(partial(serve_dev_relay, token=TOKEN,
                                                      state_file=state_file))
        assert [w["commands"] for w in writes] == [[]]  # the start-up write
        writes.clear()
        wrote[0] = trio.Event()
        ids = [relay.create_command("orch:o1", "agent.stop", {"i": i})["id"] for i in range(200)]
        with trio.fail_after(WAIT):
            await wrote[0].wait()
        assert len(writes) == 1  # 200 changes, one write
        on_disk = json.loads(state_file.read_bytes())
        assert [c["id"] for c in on_disk["commands"]] == ids
        wrote[0] = trio.Event()
        relay.create_command("orch:o1", "agent.stop", {})
        with trio.fail_after(WAIT):
            await wrote[0].wait()
        assert len(writes[-1]["commands"]) == 201
        nursery.cancel_scope.cancel()
    assert len(writes[-1]["commands"]) == 201  # flushed once more on the way out


async def test_a_taken_port_is_one_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"dev relay cannot listen on 127.0.0.1:{port}"):
            await serve_dev_relay(token=TOKEN, port=port)


async def test_a_corrupt_state_file_fails_start_up(tmp_path: Path) -> None:
    from orchestrator.devrelay._relay import DevRelayStateError

    state_file = tmp_path / "relay.json"
    state_file.write_text("{truncated")
    async with trio.open_nursery() as nursery:
        with pytest.raises(DevRelayStateError, match="not JSON"):
            await nursery.start(partial(serve_dev_relay, token=TOKEN, state_file=state_file))
    state_file.write_text('{"format": 99}')
    async with trio.open_nursery() as nursery:
        with pytest.raises(DevRelayStateError, match="not a dev relay state file"):
            await nursery.start(partial(serve_dev_relay, token=TOKEN, state_file=state_file))
    with pytest.raises(DevRelayStateError, match="cannot write dev relay state file"):
        await serve_dev_relay(token=TOKEN, state_file=tmp_path / "missing-dir" / "relay.json")
