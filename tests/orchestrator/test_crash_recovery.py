"""Agents outlive the orchestrator process: SIGKILL, SIGTERM, restart, re-adoption."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import psutil
import trio

from .e2e import OrchProcess, alive, registered, settle, spawn_params, wait_lines

WAIT = 20


async def test_sigkilled_orchestrator_readopts_running_agents(
    relay: Any, orch_process: OrchProcess,
) -> None:
    orch_process.start()
    await registered(relay, 1)
    target = "orch:orch-crash"
    base = orch_process.base
    pids = {}
    for n in range(3):
        done = await settle(relay, relay.create_command(
            target, "agent.spawn",
            spawn_params(base, f"ag_{n}", base / f"{n}.rec", "--term", "exit")))
        assert done["status"] == "succeeded", done["error"]
        pids[f"ag_{n}"] = done["result"]["pid"]
    for n in range(3):
        await wait_lines(base / f"{n}.rec", "started")
    orch_process.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
    orch_process.proc.wait()  # type: ignore[union-attr]
    assert all(alive(pid) for pid in pids.values())
    os.kill(pids["ag_2"], signal.SIGKILL)  # dies while nobody watches
    orch_process.start()
    reg = await registered(relay, 2)
    by_id = {a["agentId"]: a for a in reg["agents"]}
    assert by_id["ag_0"]["status"] == "running" and by_id["ag_0"]["pid"] == pids["ag_0"]
    assert by_id["ag_1"]["status"] == "running" and by_id["ag_1"]["pid"] == pids["ag_1"]
    assert by_id["ag_2"]["status"] == "exited"
    # The adopted agent still takes input (its FIFO was reopened) and stops gracefully.
    base.joinpath("M.md").write_text("adopted and listening\n")
    done = await settle(relay, relay.create_command(
        target, "agent.compact", {"agentId": "ag_0", "memory": {"alwaysReload": ["M.md"]}}))
    assert done["status"] == "succeeded", done["error"]
    await wait_lines(base / "0.rec", "adopted and listening")
    done = await settle(relay, relay.create_command(target, "agent.stop", {"agentId": "ag_1"}))
    assert done["status"] == "succeeded"
    assert "term" in (await wait_lines(base / "1.rec", "term"))
    assert not alive(pids["ag_1"])


async def test_command_in_flight_at_a_crash_is_settled_on_the_next_start(
    relay: Any, orch_process: OrchProcess,
) -> None:
    orch_process.start()
    await registered(relay, 1)
    target = "orch:orch-crash"
    base = orch_process.base
    done = await settle(relay, relay.create_command(
        target, "agent.spawn", spawn_params(base, "ag_s", base / "s.rec", "--term", "ignore")))
    await wait_lines(base / "s.rec", "started")
    stop = relay.create_command(target, "agent.stop", {"agentId": "ag_s", "timeoutMs": 60000})
    await wait_lines(base / "s.rec", "term")  # the stop is under way
    assert relay.get_command(stop["id"])["status"] == "running"
    orch_process.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
    orch_process.proc.wait()  # type: ignore[union-attr]
    orch_process.start()
    settled = await settle(relay, stop)
    assert settled["status"] == "failed"
    assert settled["error"] == "orchestrator restarted before completing agent.stop"
    assert alive(done["result"]["pid"])  # nothing was done twice, and nothing lost


async def test_sigterm_exits_zero_within_5s_and_leaves_agents(
    relay: Any, orch_process: OrchProcess,
) -> None:
    proc = orch_process.start()
    await registered(relay, 1)
    base = orch_process.base
    done = await settle(relay, relay.create_command(
        "orch:orch-crash", "agent.spawn", spawn_params(base, "ag_t", base / "t.rec")))
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5) == 0
    assert time.monotonic() - start < 5
    assert alive(done["result"]["pid"])
    assert psutil.Process(done["result"]["pid"]).ppid() != proc.pid


async def test_stop_agents_on_exit_stops_them(relay: Any, orch_process: OrchProcess) -> None:
    proc = orch_process.start()
    await registered(relay, 1)
    base = orch_process.base
    done = await settle(relay, relay.create_command(
        "orch:orch-crash", "agent.spawn",
        spawn_params(base, "ag_x", base / "x.rec", "--term", "exit")))
    await wait_lines(base / "x.rec", "started")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5) == 0
    # this run did not ask for it: the agent lives on
    assert alive(done["result"]["pid"])
    argv_flag = ["--stop-agents-on-exit"]
    orch_process.extra = argv_flag
    proc = orch_process.start()
    await registered(relay, 2)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=5) == 0
    with trio.fail_after(WAIT):
        while alive(done["result"]["pid"]):
            await trio.sleep(0.01)
    assert "term" in (await wait_lines(base / "x.rec", "term"))
