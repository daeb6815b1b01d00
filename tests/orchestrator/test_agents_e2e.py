"""Every agent command through the real dev relay, with real agent processes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import trio

from ..conftest import TOKEN
from .e2e import alive, settle, spawn_params, wait_lines

WAIT = 20


def relay_agent(relay: Any, orch: Any, agent_id: str) -> dict[str, Any]:
    agents = relay.orchestrator(orch.id)["agents"]
    return next(a for a in agents if a["agentId"] == agent_id)


async def api(relay: Any, method: str, path: str, body: Any = None) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=relay.url, trust_env=False,
                                 headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        r = await http.request(method, path, json=body)
        assert r.status_code < 300, r.text
        return r.json()


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return (tmp_path / "base").resolve()


async def test_spawn_compact_restart_stop_through_the_relay(
    relay: Any, start_orchestrator: Any, base: Path,
) -> None:
    orch = await start_orchestrator()
    base.mkdir(exist_ok=True)
    (base / "NOTES.md").write_text("remember the milk\nand the eggs\n")
    record = base / "a1.rec"
    spawned = await settle(relay, await api(
        relay, "POST", f"/api/orchestrators/{orch.id}/spawn",
        spawn_params(base, "ag_1", record, "--term", "exit", tags=["memory-reload:NOTES.md"])))
    assert spawned["status"] == "succeeded", spawned["error"]
    result = spawned["result"]
    assert result["agentId"] == "ag_1" and result["spawnRequestId"].startswith("sp_")
    assert alive(result["pid"])
    await wait_lines(record, "started")
    with trio.fail_after(WAIT):
        await relay.wait_for(lambda: relay_agent(relay, orch, "ag_1")["status"] == "running")
    assert relay_agent(relay, orch, "ag_1")["pid"] == result["pid"]

    compacted = await settle(relay, await api(relay, "POST", "/api/agents/ag_1/action",
                                              {"action": "compact"}))
    assert compacted["status"] == "succeeded", compacted["error"]
    assert compacted["result"] == {"agentId": "ag_1", "compacted": None, "reloaded": ["NOTES.md"]}
    lines = await wait_lines(record, "and the eggs")
    i = lines.index("/compact")
    assert lines[i + 1:i + 4] == ["@NOTES.md", "remember the milk", "and the eggs"]

    restarted = await settle(relay, await api(relay, "POST", "/api/agents/ag_1/action",
                                              {"action": "restart"}))
    assert restarted["status"] == "succeeded", restarted["error"]
    r = restarted["result"]
    assert r["previousPid"] == result["pid"] and r["pid"] != result["pid"]
    assert r["spawnRequestId"] != result["spawnRequestId"]
    restart_spawn = relay.get_command(restarted["id"])["params"]["restartSpawn"]
    assert r["spawnRequestId"] == restart_spawn["spawnRequestId"]
    assert not alive(result["pid"])
    assert alive(r["pid"])
    with trio.fail_after(WAIT):
        await relay.wait_for(lambda: relay_agent(relay, orch, "ag_1")["pid"] == r["pid"])
    assert relay_agent(relay, orch, "ag_1")["restartCount"] == 1
    await wait_lines(record, f"started {r['pid']}")  # its SIGTERM handler is in place

    stopped = await settle(relay, await api(relay, "POST", "/api/agents/ag_1/action",
                                            {"action": "stop"}))
    assert stopped["status"] == "succeeded", stopped["error"]
    assert stopped["result"]["agentId"] == "ag_1"
    assert stopped["result"]["exitCode"] == 0  # --term exit: a graceful exit
    assert not alive(r["pid"])
    with trio.fail_after(WAIT):
        await relay.wait_for(lambda: relay_agent(relay, orch, "ag_1")["status"] == "stopped")


async def test_agent_ignoring_sigterm_is_killed_after_timeout(
    relay: Any, start_orchestrator: Any, base: Path,
) -> None:
    orch = await start_orchestrator()
    record = base / "stubborn.rec"
    spawned = await settle(relay, relay.create_command(
        orch.agent_id, "agent.spawn", spawn_params(base, "ag_stub", record, "--term", "ignore")))
    pid = spawned["result"]["pid"]
    await wait_lines(record, "started")
    start = trio.current_time()
    stopped = await settle(relay, relay.create_command(
        orch.agent_id, "agent.stop", {"agentId": "ag_stub", "timeoutMs": 300}))
    assert stopped["status"] == "succeeded"
    assert stopped["result"]["signal"] == "SIGKILL"
    assert trio.current_time() - start >= 0.3
    assert "term" in (await wait_lines(record, "term"))
    assert not alive(pid)


async def test_crash_is_reported_exited_with_last_output(
    relay: Any, start_orchestrator: Any, base: Path,
) -> None:
    orch = await start_orchestrator()
    record = base / "crash.rec"
    spawned = await settle(relay, relay.create_command(
        orch.agent_id, "agent.spawn",
        spawn_params(base, "ag_crash", record, "--print", "about to fall over")))
    await wait_lines(record, "started")
    os.kill(spawned["result"]["pid"], 9)
    with trio.fail_after(WAIT):
        await relay.wait_for(lambda: relay_agent(relay, orch, "ag_crash")["status"] == "exited")
    agent = relay_agent(relay, orch, "ag_crash")
    assert agent["exit"]["signal"] == "SIGKILL"
    assert "about to fall over" in agent["exit"]["lastOutput"]


async def test_orchestrator_restart_and_shutdown_all(
    relay: Any, start_orchestrator: Any, base: Path,
) -> None:
    orch = await start_orchestrator()
    pids = {}
    for n in range(3):
        done = await settle(relay, relay.create_command(
            orch.agent_id, "agent.spawn",
            spawn_params(base, f"ag_{n}", base / f"{n}.rec", "--term", "exit")))
        pids[f"ag_{n}"] = done["result"]["pid"]
    one = await settle(relay, await api(relay, "POST", f"/api/orchestrators/{orch.id}/action",
                                        {"action": "restart", "agentId": "ag_1"}))
    assert one["status"] == "succeeded" and one["result"] == {"restarted": ["ag_1"]}
    assert not alive(pids["ag_1"]) and alive(pids["ag_0"])
    every = await settle(relay, await api(relay, "POST", f"/api/orchestrators/{orch.id}/action",
                                          {"action": "restart"}))
    assert sorted(every["result"]["restarted"]) == ["ag_0", "ag_1", "ag_2"]
    down = await settle(relay, await api(relay, "POST", f"/api/orchestrators/{orch.id}/action",
                                         {"action": "shutdown"}))
    assert sorted(down["result"]["stopped"]) == ["ag_0", "ag_1", "ag_2"]
    assert all(a["status"] == "stopped" for a in orch.fleet.agents())


async def test_fifty_agents_at_once_all_reach_running(
    relay: Any, start_orchestrator: Any, base: Path,
) -> None:
    orch = await start_orchestrator()
    commands = [relay.create_command(orch.agent_id, "agent.spawn",
                                     spawn_params(base, f"ag_m{n}", base / f"m{n}.rec"))
                for n in range(50)]
    results = [await settle(relay, c) for c in commands]
    assert all(r["status"] == "succeeded" for r in results), [r["error"] for r in results]
    with trio.fail_after(WAIT):
        await relay.wait_for(lambda: sum(a["status"] == "running"
                                         for a in relay.orchestrator(orch.id)["agents"]) == 50)
    assert len({r["result"]["pid"] for r in results}) == 50


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ("not an object", "invalid params"),
        (
            {"provider": "nope", "providerArgs": ["true"]},
            "provider not available on this orchestrator: nope",
        ),
        ({"provider": "command", "providerArgs": "sleep 5"}, "invalid params.providerArgs"),
        ({"provider": "command", "providerArgs": ["true"], "cwd": "/"},
         "cwd must be within orchestrator base directory"),
        ({"provider": "command", "providerArgs": ["true"], "cwd": "../../"},
         "cwd must be within orchestrator base directory"),
        ({"provider": "command", "providerArgs": ["true"], "requestedAt": "yesterday"},
         "invalid params.requestedAt"),
        ({"provider": "command", "providerArgs": ["true"], "workspaceMode": "sideways"},
         "invalid params.workspaceMode"),
        (
            {"provider": "command", "providerArgs": ["true"], "env": {"A=B": "x"}},
            "invalid params.env",
        ),
    ],
)
async def test_bad_spawn_fails_clearly_and_starts_nothing(
    relay: Any, start_orchestrator: Any, base: Path, params: Any, error: str
) -> None:
    orch = await start_orchestrator()
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    done = await settle(relay, relay.create_command(orch.agent_id, "agent.spawn", params))
    assert done["status"] == "failed"
    assert error in done["error"]
    assert orch.fleet.agents() == []
    after = {p.pid for p in psutil.Process().children(recursive=True)}
    assert after <= before


async def test_invalid_restart_spawn_keeps_the_agent_running(
    relay: Any, start_orchestrator: Any, base: Path,
) -> None:
    orch = await start_orchestrator()
    done = await settle(relay, relay.create_command(
        orch.agent_id, "agent.spawn", spawn_params(base, "ag_keep", base / "k.rec")))
    pid = done["result"]["pid"]
    bad = await settle(relay, relay.create_command(
        orch.agent_id, "agent.restart",
        {"agentId": "ag_keep", "restartSpawn": {"provider": "command", "providerArgs": [1, 2]}}))
    assert bad["status"] == "failed" and "restartSpawn" in bad["error"]
    assert alive(pid)
    assert relay_agent(relay, orch, "ag_keep")["status"] == "running"


async def test_unknown_agent_fails_naming_the_key(relay: Any, start_orchestrator: Any) -> None:
    orch = await start_orchestrator()
    done = await settle(relay, relay.create_command(orch.agent_id, "agent.stop",
                                                    {"spawnRequestId": "sp_nobody"}))
    assert done["error"] == "no managed agent matches spawnRequestId=sp_nobody"


async def test_secret_env_reaches_only_the_agent(relay: Any, start_orchestrator: Any, base: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    import logging

    logging.getLogger("relay_orchestrator").propagate = True
    caplog.set_level(logging.DEBUG)
    secret = "s3cr3t-value-that-must-not-leak"
    orch = await start_orchestrator()
    record = base / "env.rec"
    done = await settle(relay, relay.create_command(
        orch.agent_id, "agent.spawn",
        spawn_params(base, "ag_env", record, "--env", "API_KEY", env={"API_KEY": secret})))
    assert done["status"] == "succeeded"
    lines = await wait_lines(record, "env API_KEY")
    assert f"env API_KEY={secret}" in lines
    assert secret not in str(done["result"])
    assert secret not in str(relay.orchestrator(orch.id))
    assert secret not in caplog.text
    for proc in psutil.process_iter(["cmdline"]):
        assert secret not in " ".join(proc.info["cmdline"] or [])
    # on disk only in 0600 files
    for path in (orch.settings.state_dir).rglob("*"):
        if path.is_file() and secret.encode() in path.read_bytes():
            assert path.stat().st_mode & 0o077 == 0, path
