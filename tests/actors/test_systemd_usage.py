"""Usage and memory_max of agents in systemd units, under the real ``systemd --user``.

The fleet runs as the sandbox's user (``systemd_fleet_helper.py``), with the
systemd launcher: each plain agent in a transient unit of its own. Its usage
is the unit's (``cgroup.procs``, ``cpu.stat``, and ``memory.current``,
``pids.current`` where the controllers are there), checked against /proc.
An agent past ``memory_max`` is ended by the kernel where the unit's cgroup
has the memory controller, by the fleet's sample where it has not (a host
whose controllers are on the legacy hierarchy): reported the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ..supervisors.systemd_sandbox_support import SystemdUser

pytestmark = [pytest.mark.systemd, pytest.mark.slow]

HELPER = Path(__file__).resolve().with_name("systemd_fleet_helper.py")
MB = 1024 * 1024


@pytest.fixture(scope="module")
def fleet_run(systemd_user: SystemdUser) -> dict[str, Any]:
    user = systemd_user
    work = user.workdir("fleet-usage")
    proc = user.run_as_user([user.python, str(HELPER), str(work)], check=False, timeout=120)
    assert proc.returncode == 0, f"helper failed:\n{proc.stdout}\n{proc.stderr}"
    result: dict[str, Any] = json.loads((work / "result.json").read_text())
    units = [f"relay-{agent_id}.service" for agent_id in result["agents"]]
    leftover = user.systemctl("list-units", "--no-legend", *units, check=False)
    assert leftover.strip() == "", leftover  # the helper's agents are gone with their units
    return result


def close(value: float, expected: float, share: float = 0.10) -> bool:
    return abs(value - expected) <= share * expected


def test_usage_is_the_agents_unit_and_matches_proc(fleet_run: dict[str, Any]) -> None:
    first, second = fleet_run["first"], fleet_run["second"]
    proc_first, proc_second = fleet_run["proc_first"], fleet_run["proc_second"]
    assert fleet_run["unit"] == f"relay-{fleet_run['agents'][0]}.service"
    assert len(proc_first["pids"]) == 2  # the agent and its child, both in the unit
    if fleet_run["memory_controller"]:
        # memory.current counts page cache and kernel memory too: at least the RSS.
        assert first["memoryRss"] >= 0.9 * proc_first["rss"]
    else:
        assert close(first["memoryRss"], proc_first["rss"]), (first, proc_first)
        assert first["tasks"] == proc_first["threads"]
    assert first["memoryRss"] > 100 * MB
    cpu_seconds = proc_second["cpu"] - proc_first["cpu"]
    if proc_second["unit_cpu"] is not None:
        cpu_seconds = proc_second["unit_cpu"] - proc_first["unit_cpu"]
    expected = cpu_seconds / fleet_run["elapsed"] * 100
    assert expected > 50  # the child spins
    assert abs(second["cpuPercent"] - expected) <= max(0.10 * expected, 3.0), (second, expected)


def test_an_agent_past_memory_max_is_ended_and_reported_with_the_reason(
    fleet_run: dict[str, Any],
) -> None:
    hog = fleet_run["hog"]
    assert hog["status"] == "exited"
    assert hog["exit"]["reason"] == "memory limit (64M)"
    if fleet_run["memory_controller"]:
        # The kernel ended it: its unit's memory never went past the limit.
        assert hog["usage"]["memoryPeak"] <= 64 * MB + 1 * MB
    else:
        # The unit could not have the kernel enforce it (no memory controller on this
        # host's unified hierarchy): the fleet did, from its sample.
        assert hog["usage"]["memoryPeak"] > 64 * MB
        # Nor cpu_quota and tasks_max: said once, for the provider.
        assert any("[providers.hog] cpu_quota = '150%'" in w for w in fleet_run["warnings"])


def test_limits_are_properties_of_the_agents_unit(fleet_run: dict[str, Any]) -> None:
    unit = fleet_run["hog_unit"]
    if unit.get("ActiveState") != "active":
        pytest.skip(f"the kernel ended the agent before its unit could be read: {unit}")
    assert unit["MemoryMax"] == str(64 * MB)
    assert unit["CPUQuotaPerSecUSec"] == "1.500000s"
    assert unit["TasksMax"] == "64"
