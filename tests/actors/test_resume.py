"""Agents that died while no orchestrator ran: why, and resuming their session."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from actors import FleetConfig
from actors._resume import HOST_REBOOTED, START_INTERRUPTED, read_boot_id

from .conftest import Harness, wait_dead

SESSION_ARGS = {
    "session_id_args": ["--print", "session={session_id}"],
    "resume_args": ["--print", "resume={session_id}"],
}


def config(harness: Harness, boot_id: Path, policy: str) -> FleetConfig:
    return harness.config(
        command={**SESSION_ARGS, "resume_dead_agents": policy}, boot_id_file=boot_id
    )


async def run_then_die(harness: Harness, cfg: FleetConfig, agent_id: str) -> dict[str, Any]:
    """Spawn an agent, stop the fleet (the agent runs on), then kill the agent."""
    fleet = await harness.start(cfg)
    record = harness.record(agent_id)
    params = harness.spawn(record=record, agentId=agent_id)
    spawned = await fleet.execute("agent.spawn", params, "c")
    await record.started()
    (agent,) = fleet.agents()
    await harness.stop(fleet)
    os.kill(spawned["pid"], signal.SIGKILL)
    await wait_dead(spawned["pid"])
    return agent


@pytest.mark.parametrize(
    ("policy", "rebooted", "resumed"),
    [
        ("after-reboot", True, True),
        ("after-reboot", False, False),
        ("always", False, True),
        ("never", True, False),
    ],
)
async def test_a_dead_agent_is_told_and_resumed_by_policy(
    harness: Harness, tmp_path: Path, policy: str, rebooted: bool, resumed: bool
) -> None:
    boot_id = tmp_path / "boot_id"
    boot_id.write_text("boot-a\n")
    cfg = config(harness, boot_id, policy)
    before = await run_then_die(harness, cfg, "ag_r")
    if rebooted:
        boot_id.write_text("boot-b\n")
    launches = len(harness.launcher.specs)
    mark = harness.reporter.mark()

    fleet = await harness.start(cfg)
    exited = await harness.reporter.wait_for("ag_r", "exited", since=mark)
    assert exited["exit"].get("reason") == (HOST_REBOOTED if rebooted else None)
    (agent,) = fleet.agents()
    if not resumed:
        assert agent["status"] == "exited"
        assert len(harness.launcher.specs) == launches
        return
    assert harness.reporter.statuses("ag_r", mark) == ["exited", "starting", "running"]
    assert len(harness.launcher.specs) == launches + 1  # exactly once
    session_id = before["providerSessionId"]
    assert list(harness.launcher.specs[-1].argv[-2:]) == ["--print", f"resume={session_id}"]
    assert agent["status"] == "running"
    assert agent["agentId"] == "ag_r"
    assert agent["providerSessionId"] == session_id
    assert agent["restartCount"] == before["restartCount"] + 1
    resumed_from = agent["meta"]["resumedFrom"]
    assert resumed_from["pid"] == before["pid"]
    assert resumed_from["reason"] == (HOST_REBOOTED if rebooted else None)
    # The resume was stored before its process started.
    starting = next(r for r in harness.reporter.reports[mark:] if r["status"] == "starting")
    assert starting["meta"]["resumedFrom"] == resumed_from
    assert starting["restartCount"] == agent["restartCount"]


async def test_a_resume_cut_short_is_never_done_twice(harness: Harness, tmp_path: Path) -> None:
    boot_id = tmp_path / "boot_id"
    boot_id.write_text("boot-a\n")
    cfg = config(harness, boot_id, "always")
    await run_then_die(harness, cfg, "ag_c")
    # As a crash right after the resume was stored leaves it: starting, no process.
    record = harness.store.record("ag_c")
    assert record is not None
    record["agent"]["status"] = "starting"
    record["agent"]["meta"]["resumedFrom"] = {"pid": record["agent"]["pid"]}
    record["process"] = None
    harness.store.save_agent("ag_c", record)
    launches = len(harness.launcher.specs)
    mark = harness.reporter.mark()

    fleet = await harness.start(cfg)
    (agent,) = fleet.agents()
    assert agent["status"] == "failed"
    assert agent["exit"]["reason"] == START_INTERRUPTED
    assert len(harness.launcher.specs) == launches
    assert harness.reporter.statuses("ag_c", mark) == ["failed"]


def test_boot_id_comes_from_the_kernel_or_the_boot_time(tmp_path: Path) -> None:
    path = tmp_path / "boot_id"
    path.write_text("5c1b0e2f\n")
    assert read_boot_id(path) == "5c1b0e2f"
    assert (read_boot_id(tmp_path / "absent") or "").startswith("boot-time-")
    real = Path("/proc/sys/kernel/random/boot_id")
    if real.exists():
        assert read_boot_id(real) == real.read_text().strip()
