"""Usage, limits and resumed conversations through the real orchestrator and dev relay."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from orchestrator.cli._status import local_status, render_status
from orchestrator.daemon._app import run_orchestrator

from ..actors.conftest import wait_dead
from ..conftest import FAKE_AGENT, TOKEN, cli_env, kill_agents, make_settings
from .e2e import settle, spawn_params, wait_lines

WAIT = 20
MB = 1024 * 1024

HOG = (
    "import os, sys, time\n"
    "b = bytearray(int(sys.argv[2]) * 1048576)\n"
    "for i in range(0, len(b), 4096): b[i] = 1\n"
    "os.write(os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT), b'started\\n')\n"
    "time.sleep(600)\n"
)


def fake_provider(policy: str) -> dict[str, Any]:
    """A provider of its own around the fake agent, with provider sessions."""
    return {
        "command": [sys.executable, FAKE_AGENT],
        "session": "plain",
        "session_id_args": ["--print", "session={session_id}"],
        "resume_args": ["--print", "resume={session_id}"],
        "resume_dead_agents": policy,
    }


async def wait_agent(relay: Any, orch_id: str, agent_id: str, check: Any) -> dict[str, Any]:
    def found() -> bool:
        orch = relay.orchestrator(orch_id) or {}
        agent = next((a for a in orch.get("agents") or [] if a["agentId"] == agent_id), None)
        return agent is not None and bool(check(agent))

    with trio.fail_after(WAIT):
        await relay.wait_for(found)
    return next(a for a in relay.orchestrator(orch_id)["agents"] if a["agentId"] == agent_id)


async def test_usage_rides_on_heartbeat_registration_and_put(
    relay: Any, start_orchestrator: Any, tmp_path: Path
) -> None:
    orch = await start_orchestrator(id="orch-use", heartbeat_interval="0.2")
    base = (tmp_path / "base").resolve()
    record = base / "u.rec"
    done = await settle(relay, relay.create_command(
        orch.agent_id, "agent.spawn", spawn_params(base, "ag_u", record, "--term", "exit")))
    assert done["status"] == "succeeded", done["error"]
    await wait_lines(record, "started")
    beats = relay.orchestrator("orch-use")["heartbeats"]
    sampled = await wait_agent(relay, "orch-use", "ag_u",
                               lambda a: (a.get("usage") or {}).get("memoryRss", 0) > 1 * MB)
    assert relay.orchestrator("orch-use")["heartbeats"] > beats  # a heartbeat carried it
    assert sampled["usage"]["tasks"] >= 1
    assert sampled["usage"]["memoryPeak"] >= sampled["usage"]["memoryRss"]
    # A PUT (the agent stopped) carries usage too: nothing now, its peak kept.
    await settle(relay, relay.create_command(orch.agent_id, "agent.stop", {"agentId": "ag_u"}))
    stopped = await wait_agent(relay, "orch-use", "ag_u", lambda a: a["status"] == "stopped")
    assert stopped["usage"]["memoryRss"] == 0
    assert stopped["usage"]["memoryPeak"] >= sampled["usage"]["memoryRss"]


async def test_memory_max_in_the_foreground_stops_the_agent_and_says_why(
    relay: Any, start_orchestrator: Any, tmp_path: Path
) -> None:
    providers = {"command": {"enabled": True, "session": "plain", "memory_max": "64M",
                             "cpu_quota": "150%"}}
    orch = await start_orchestrator(id="orch-lim", heartbeat_interval="0.2", providers=providers)
    base = (tmp_path / "base").resolve()
    record = base / "hog.rec"
    done = await settle(relay, relay.create_command(orch.agent_id, "agent.spawn", {
        "provider": "command", "agentId": "ag_hog", "cwd": str(base),
        "providerArgs": [sys.executable, "-c", HOG, str(record), "120"]}))
    assert done["status"] == "succeeded", done["error"]
    pid = done["result"]["pid"]
    ended = await wait_agent(relay, "orch-lim", "ag_hog", lambda a: a["status"] == "exited")
    assert ended["exit"]["reason"] == "memory limit (64M)"
    assert ended["usage"]["memoryPeak"] > 64 * MB
    await wait_dead(pid)
    # cpu_quota cannot be enforced here: said once, in status.
    warnings = orch.status()["warnings"]
    assert len(warnings) == 1 and "cpu_quota = '150%' is not enforced" in warnings[0]
    orch.status_writer.changed()
    with trio.fail_after(WAIT):
        while not local_status(orch.settings).get("warnings"):  # noqa: ASYNC110 (a file)
            await trio.sleep(0.05)
    assert "warning      [providers.command] cpu_quota" in render_status(
        local_status(orch.settings))


async def run_once(settings: Any, body: Any) -> Any:
    """Run an orchestrator, do ``body(orch)``, stop it; returns what body returned."""
    async with trio.open_nursery() as inner:
        orch = await inner.start(partial(run_orchestrator, settings))
        try:
            return await body(orch)
        finally:
            orch.stop()


@pytest.mark.parametrize("policy", ["always", "never"])
async def test_agents_dead_while_the_orchestrator_was_down_resume_once(
    relay: Any, tmp_path: Path, policy: str
) -> None:
    settings = make_settings(tmp_path, relay.url, id="orch-res",
                             providers={"fake": fake_provider(policy)})
    base = settings.base_dir.resolve()
    agents = ("ag_a", "ag_b")

    async def spawn(orch: Any) -> dict[str, dict[str, Any]]:
        for agent_id in agents:
            done = await settle(relay, relay.create_command(orch.agent_id, "agent.spawn", {
                "provider": "fake", "agentId": agent_id, "cwd": str(base),
                "providerArgs": ["--record", str(base / f"{agent_id}.rec")]}))
            assert done["status"] == "succeeded", done["error"]
            await wait_lines(base / f"{agent_id}.rec", "started")
        return {a["agentId"]: a for a in orch.fleet.agents()}

    first = await run_once(settings, spawn)
    try:
        for agent in first.values():
            os.kill(agent["pid"], signal.SIGKILL)  # die while no orchestrator runs
            await wait_dead(agent["pid"])

        async def registered(orch: Any) -> dict[str, dict[str, Any]]:
            return {a["agentId"]: a for a in relay.orchestrator("orch-res")["agents"]}

        async def resumed(orch: Any) -> dict[str, dict[str, Any]]:
            agents_now = await registered(orch)
            if policy == "always":  # each resumed agent says it started, once more
                for agent_id in agents:
                    await wait_lines(base / f"{agent_id}.rec", "started", count=2)
            return agents_now

        second = await run_once(settings, resumed)
        third = await run_once(settings, registered)  # they run: adopted, not started again
    finally:
        kill_agents(list(relay.orchestrator("orch-res")["agents"]))
    for agent_id in agents:
        before, after = first[agent_id], second[agent_id]
        session_id = before["providerSessionId"]
        starts = (base / f"{agent_id}.rec").read_text().splitlines()
        output = (settings.state_dir / "agents" / agent_id / "output.log").read_text()
        if policy == "never":
            assert after["status"] == "exited"
            assert after["restartCount"] == 0
            assert sum(line.startswith("started") for line in starts) == 1
            assert output.splitlines() == [f"session={session_id}"]
            continue
        # Registered with the agent already running again: resumed before registration.
        assert after["status"] == "running" and after["pid"] != before["pid"]
        assert after["agentId"] == agent_id
        assert after["providerSessionId"] == session_id
        assert after["restartCount"] == before["restartCount"] + 1
        assert after["meta"]["resumedFrom"]["pid"] == before["pid"]
        assert sum(line.startswith("started") for line in starts) == 2  # exactly once more
        assert output.splitlines() == [f"session={session_id}", f"resume={session_id}"]
        assert third[agent_id]["pid"] == after["pid"]
        assert third[agent_id]["restartCount"] == after["restartCount"]


def test_an_invalid_limit_is_a_configuration_error_naming_the_key(tmp_path: Path) -> None:
    for table, key in (('memory_max = "4 GB"', "memory_max"), ('cpu_quota = "0%"', "cpu_quota"),
                       ("tasks_max = -1", "tasks_max")):
        config = tmp_path / "config.toml"
        config.write_text(f"[providers.command]\nenabled = true\n{table}\n")
        proc = subprocess.run(
            [sys.executable, "-m", "orchestrator", "run", "--relay-url", "http://127.0.0.1:9",
             "--config", str(config), "--state-dir", str(tmp_path / "state"),
             "--base-dir", str(tmp_path), "--supervisor", "none"],
            env=cli_env(RELAY_ORCHESTRATOR_TOKEN=TOKEN), capture_output=True, text=True,
            timeout=60,
        )
        assert proc.returncode == 2, proc.stderr
        assert f"[providers.command] {key}:" in proc.stderr
        assert "Traceback" not in proc.stderr



async def test_usage_is_left_out_until_it_has_been_measured(
    relay: Any, start_orchestrator: Any, tmp_path: Path
) -> None:
    """Before: the first reports of a new agent said ``memoryRss: 0`` (a relay
    showed "0 MB" for a running agent) until a heartbeat sampled it."""
    orch = await start_orchestrator(id="orch-first", heartbeat_interval="600")
    base = (tmp_path / "base").resolve()
    seen: list[dict[str, Any]] = []

    def running() -> bool:  # called at every change of the relay's state: sees every report
        agents = (relay.orchestrator("orch-first") or {}).get("agents") or []
        seen.extend(a for a in agents if a["agentId"] == "ag_new")
        return any(a["status"] == "running" for a in seen)

    done = relay.create_command(orch.agent_id, "agent.spawn",
                                spawn_params(base, "ag_new", base / "n.rec", "--term", "exit"))
    with trio.fail_after(WAIT):
        await relay.wait_for(running)
    assert (await settle(relay, done))["status"] == "succeeded"
    assert seen and all(a.get("usage") is None for a in seen), seen
    assert all(a.get("usage") is None for a in orch.status()["agents"])
    await orch.presence.beat_now()  # the first sample rides on it
    measured = await wait_agent(relay, "orch-first", "ag_new",
                                lambda a: (a.get("usage") or {}).get("memoryRss", 0) > 0)
    assert measured["status"] == "running"
