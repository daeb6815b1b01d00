"""Per-agent usage and limits with real processes, in the foreground.

Usage is compared with what ``/proc`` says of the same processes at the same
moment; ``memory_max`` is enforced by the fleet at the sample, since no
systemd unit does it here (``tests/supervisors/test_systemd_usage.py`` has
the systemd side).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from actors import AgentFleet
from actors._limits import memory_bytes
from actors._usage import Usage, UsageProbe

from .conftest import Harness

MB = 1024 * 1024

# An agent with a child: the agent holds PARENT_MB, the child CHILD_MB and
# spins (one core) when asked to; both write "ready" to the record.
TREE_AGENT = r"""
import os, subprocess, sys, time
record, parent_mb, child_mb, spin = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
CHILD = (
    "import os, sys, time\n"
    "b = bytearray(int(sys.argv[1]) * 1048576)\n"
    "for i in range(0, len(b), 4096): b[i] = 1\n"
    "print('ready', flush=True)\n"
    "if sys.argv[2] == 'spin':\n"
    "    while True: pass\n"
    "time.sleep(600)\n"
)
block = bytearray(parent_mb * 1048576)
for i in range(0, len(block), 4096):
    block[i] = 1
child = subprocess.Popen([sys.executable, "-c", CHILD, str(child_mb), spin], stdout=subprocess.PIPE)
child.stdout.readline()
fd = os.open(record, os.O_WRONLY | os.O_APPEND)
os.write(fd, f"started {os.getpid()} {child.pid}\n".encode())
time.sleep(600)
"""

# Allocates MB megabytes (touching every page); ignores SIGTERM with "ignore".
HOG_AGENT = r"""
import os, signal, sys, time
record, mb, term = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if term == "ignore":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
block = bytearray(mb * 1048576)
for i in range(0, len(block), 4096):
    block[i] = 1
fd = os.open(record, os.O_WRONLY | os.O_APPEND)
os.write(fd, f"started {os.getpid()}\n".encode())
time.sleep(600)
"""


def agent_params(harness: Harness, code: str, *args: str, agent_id: str) -> dict[str, Any]:
    return {
        "provider": "command",
        "cwd": str(harness.base),
        "agentId": agent_id,
        "providerArgs": [sys.executable, "-c", code, *args],
    }


def proc_figures(pids: list[int]) -> tuple[int, int, float]:
    """(RSS bytes, threads, CPU seconds) of ``pids``, as /proc/<pid>/status and stat say."""
    rss = threads = 0
    cpu = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        status = Path(f"/proc/{pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        rss += int(fields["VmRSS"].split()[0]) * 1024
        threads += int(fields["Threads"])
        stat = Path(f"/proc/{pid}/stat").read_text()
        values = stat[stat.rfind(")") + 2 :].split()
        cpu += sum(int(v) for v in values[11:15]) / ticks
    return rss, threads, cpu


def usage_of(fleet: AgentFleet, agent_id: str) -> dict[str, Any]:
    (agent,) = [a for a in fleet.agents() if a["agentId"] == agent_id]
    return dict(agent["usage"])


def within(value: float, expected: float, share: float = 0.10) -> bool:
    return abs(value - expected) <= share * expected


async def test_usage_covers_the_whole_tree_and_matches_proc(harness: Harness) -> None:
    fleet = await harness.start()
    record = harness.record()
    await fleet.execute(
        "agent.spawn",
        agent_params(harness, TREE_AGENT, str(record.path), "40", "60", "spin", agent_id="ag_u"),
        "c1",
    )
    line = await record.line()
    pids = [int(pid) for pid in line.split()[1:]]
    assert usage_of(fleet, "ag_u") == Usage().to_json()  # nothing sampled yet

    rss0, threads0, cpu0 = proc_figures(pids)
    start = time.monotonic()
    await fleet.refresh_usage()
    first = usage_of(fleet, "ag_u")
    assert within(first["memoryRss"], rss0), (first, rss0)
    assert first["memoryRss"] > 100 * MB  # both processes: 40 + 60 MB and the interpreters
    assert first["tasks"] == threads0
    assert first["memoryPeak"] >= first["memoryRss"]

    await trio.sleep(1.0)  # a measuring interval, not a synchronisation
    await fleet.refresh_usage()
    elapsed = time.monotonic() - start
    rss1, _, cpu1 = proc_figures(pids)
    second = usage_of(fleet, "ag_u")
    expected_cpu = (cpu1 - cpu0) / elapsed * 100
    assert expected_cpu > 50  # the child spins
    assert abs(second["cpuPercent"] - expected_cpu) <= max(0.10 * expected_cpu, 3.0), (
        second,
        expected_cpu,
    )
    assert within(second["memoryRss"], rss1)

    await fleet.execute("agent.stop", {"agentId": "ag_u", "timeoutMs": 2000}, "c2")
    stopped = usage_of(fleet, "ag_u")
    assert stopped["memoryRss"] == 0 and stopped["cpuPercent"] == 0 and stopped["tasks"] == 0
    assert stopped["memoryPeak"] == second["memoryPeak"]  # kept: what it took at most


async def test_memory_max_is_enforced_at_the_sample_in_the_foreground(harness: Harness) -> None:
    config = harness.config(command={"memory_max": "64M"}, memory_kill_grace=0.5)
    fleet = await harness.start(config)
    small, big, stubborn = harness.record("small"), harness.record("big"), harness.record("stub")
    for agent_id, record, mb, term in (
        ("ag_small", small, "8", "exit"),
        ("ag_big", big, "100", "exit"),
        ("ag_stub", stubborn, "100", "ignore"),
    ):
        params = agent_params(harness, HOG_AGENT, str(record.path), mb, term, agent_id=agent_id)
        await fleet.execute("agent.spawn", params, agent_id)
        await record.line()
    mark = harness.reporter.mark()
    await fleet.refresh_usage()
    big_exit = await harness.reporter.wait_for("ag_big", "exited", since=mark)
    assert big_exit["exit"]["reason"] == "memory limit (64M)"
    assert big_exit["exit"]["signal"] == "SIGTERM"
    stub_exit = await harness.reporter.wait_for("ag_stub", "exited", since=mark)
    assert stub_exit["exit"]["reason"] == "memory limit (64M)"
    assert stub_exit["exit"]["signal"] == "SIGKILL"  # it ignored SIGTERM for the grace
    assert stub_exit["usage"]["memoryPeak"] > 64 * MB
    small_agent = next(a for a in fleet.agents() if a["agentId"] == "ag_small")
    assert small_agent["status"] == "running"
    assert small_agent["usage"]["memoryRss"] < 64 * MB
    assert fleet.warnings() == []


async def test_cpu_quota_not_enforced_is_said_once(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    config = harness.config(command={"cpu_quota": "50%", "tasks_max": 64})
    fleet = await harness.start(config)
    record = harness.record()
    await fleet.execute("agent.spawn", harness.spawn(record=record, agentId="ag_q"), "c1")
    await record.started()
    assert fleet.warnings() == []  # said when known: at the first sample
    with caplog.at_level(logging.WARNING, logger="relay_orchestrator.actors"):
        await fleet.refresh_usage()
        await fleet.refresh_usage()
    warnings = fleet.warnings()
    assert len(warnings) == 2
    assert "[providers.command] cpu_quota = '50%' is not enforced" in warnings[0]
    assert "[providers.command] tasks_max = '64' is not enforced" in warnings[1]
    logged = [r.getMessage() for r in caplog.records if "not enforced" in r.getMessage()]
    assert logged == warnings


async def test_refresh_with_nothing_running_is_a_no_op(harness: Harness) -> None:
    fleet = await harness.start()
    await fleet.refresh_usage()
    assert fleet.agents() == [] and fleet.warnings() == []


def test_probe_of_a_process_that_is_gone_gives_none() -> None:
    probe = UsageProbe(os.getpid(), create_time=1.0)  # another start time: not ours
    assert probe.sample() is None
    probe.close()
    own = UsageProbe(os.getpid(), create_time=0.0)
    usage = own.sample()
    assert usage is not None and usage.memory_rss > 0 and usage.tasks >= 1
    own.close()
    assert own.sample() is None


def test_memory_sizes_read_as_systemd_reads_them() -> None:
    assert memory_bytes("4G") == 4 * 1024**3
    assert memory_bytes("512M") == 512 * MB
    assert memory_bytes("1.5K") == 1536
    assert memory_bytes("1000") == 1000
    assert memory_bytes("50%", total=1000) == 500
    assert memory_bytes("infinity") is None
    assert memory_bytes(None) is None
    with pytest.raises(ValueError):
        memory_bytes("4GB")



@pytest.mark.parametrize("budget", [0, 1 << 20])
async def test_a_probe_reads_the_tree_with_or_without_held_descriptors(
    monkeypatch: pytest.MonkeyPatch, budget: int
) -> None:
    from actors import _usage

    monkeypatch.setattr(_usage, "_held_budget", lambda: budget)
    held = _usage._held[0]
    proc = await trio.lowlevel.open_process(
        ["sh", "-c", "sleep 60 & sleep 60 & wait"], start_new_session=True
    )
    try:
        probe = UsageProbe(proc.pid, create_time=0.0)
        with trio.fail_after(5):
            while (usage := probe.sample()) is None or usage.tasks < 3:  # noqa: ASYNC110
                await trio.sleep(0.01)  # the children appearing: no event for it
        assert usage.tasks == 3  # sh and its two sleeps
        assert (_usage._held[0] > held) == (budget > 0)
        probe.close()
        assert _usage._held[0] == held
    finally:
        os.killpg(proc.pid, 9)
        await proc.wait()
