"""Run as the systemd sandbox's user by test_systemd_usage.py (not a test module).

    systemd_fleet_helper.py WORKDIR

A fleet with the systemd launcher (each plain agent in a transient unit of
its own) starts two agents:

- ``ag_tree_<run>``: 40 MB in the agent, 60 MB in a spinning child; the fleet
  samples it twice, and /proc is read for the unit's processes (its
  ``cgroup.procs``) at the same moments;
- ``ag_hog_<run>``, of a provider with ``memory_max = "64M"``: allocates 120 MB.
  Where the unit's cgroup has the memory controller the kernel ends it;
  elsewhere the fleet's sample does.

Writes WORKDIR/result.json, stops its agents (their units go), exits 0.
Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import trio

from actors import AgentFleet, FleetConfig, MemoryStore, provider_config_from_table
from actors._usage import unit_cgroup
from supervisors import SystemdLauncher, open_backend

WAIT = 30
RUN = os.urandom(4).hex()  # units of their own, whatever else runs in the sandbox
TREE_ID, HOG_ID = f"ag_tree_{RUN}", f"ag_hog_{RUN}"

TREE = r"""
import os, subprocess, sys, time
CHILD = (
    "import sys, time\n"
    "b = bytearray(60 * 1048576)\n"
    "for i in range(0, len(b), 4096): b[i] = 1\n"
    "print('ready', flush=True)\n"
    "while True: pass\n"
)
block = bytearray(40 * 1048576)
for i in range(0, len(block), 4096):
    block[i] = 1
child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE)
child.stdout.readline()
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND)
os.write(fd, b"started\n")
time.sleep(600)
"""

HOG = r"""
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND)
os.write(fd, b"allocating\n")
block = bytearray(120 * 1048576)
for i in range(0, len(block), 4096):
    block[i] = 1
os.write(fd, b"allocated\n")
time.sleep(600)
"""


class Reporter:
    def __init__(self) -> None:
        self.reports: list[dict[str, Any]] = []
        self.changed = trio.Event()

    def agent_changed(self, agent: dict[str, Any]) -> None:
        self.reports.append(json.loads(json.dumps(agent)))
        self.changed.set()
        self.changed = trio.Event()

    async def wait_for(self, agent_id: str, status: str) -> dict[str, Any]:
        with trio.fail_after(WAIT):
            while True:
                for report in self.reports:
                    if report["agentId"] == agent_id and report["status"] == status:
                        return report
                await self.changed.wait()


class Record:
    """A FIFO an agent writes its lines to."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path, 0o600)
        self.path = path
        self._stream = trio.lowlevel.FdStream(os.open(path, os.O_RDWR | os.O_NONBLOCK))
        self._buffer = b""

    async def line(self) -> str:
        with trio.fail_after(WAIT):
            while b"\n" not in self._buffer:
                self._buffer += await self._stream.receive_some(4096)
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()


def proc_figures(unit_cgroup: Path) -> dict[str, Any]:
    """RSS, threads and CPU seconds of the unit's processes, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    rss = threads = 0
    cpu = 0.0
    pids = [int(p) for p in (unit_cgroup / "cgroup.procs").read_text().split()]
    for pid in pids:
        status = Path(f"/proc/{pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        rss += int(fields["VmRSS"].split()[0]) * 1024
        threads += int(fields["Threads"])
        stat = Path(f"/proc/{pid}/stat").read_text()
        cpu += sum(int(v) for v in stat[stat.rfind(")") + 2 :].split()[11:15]) / ticks
    cpu_stat = (unit_cgroup / "cpu.stat").read_text().split()
    unit_cpu = None
    if "usage_usec" in cpu_stat:
        unit_cpu = int(cpu_stat[cpu_stat.index("usage_usec") + 1]) / 1e6
    return {"pids": pids, "rss": rss, "threads": threads, "cpu": cpu, "unit_cpu": unit_cpu}


def agent(fleet: AgentFleet, agent_id: str) -> dict[str, Any]:
    return next(a for a in fleet.agents() if a["agentId"] == agent_id)


async def main(workdir: Path) -> None:
    base = workdir / "base"
    base.mkdir()
    providers = {
        "command": provider_config_from_table("command", {"enabled": True, "session": "plain"}),
        "hog": provider_config_from_table(
            "hog",
            {"command": [sys.executable, "-c", HOG], "session": "plain", "memory_max": "64M",
             "cpu_quota": "150%", "tasks_max": 64},
        ),
    }
    config = FleetConfig(
        base_dir=base, state_dir=workdir / "state", providers=providers, memory_kill_grace=2.0
    )
    secrets = workdir / "secrets"
    secrets.mkdir(mode=0o700)
    reporter = Reporter()
    launcher = SystemdLauncher(open_backend("auto", user=True, secrets_dir=secrets))
    fleet = AgentFleet(config, store=MemoryStore(), reporter=reporter, launcher=launcher)
    result: dict[str, Any] = {"backend": launcher.backend.name, "agents": [TREE_ID, HOG_ID]}
    async with trio.open_nursery() as nursery:
        await nursery.start(fleet.run)
        try:
            tree = Record(workdir / "tree.fifo")
            await fleet.execute("agent.spawn", {
                "provider": "command", "agentId": TREE_ID, "cwd": str(base),
                "providerArgs": [sys.executable, "-c", TREE, str(tree.path)]}, "c1")
            assert await tree.line() == "started"
            cgroup = unit_cgroup(agent(fleet, TREE_ID)["pid"], f"relay-{TREE_ID}.service")
            assert cgroup is not None, "no unit cgroup found"
            result["unit"] = cgroup.name
            result["memory_controller"] = (cgroup / "memory.max").exists()
            before = proc_figures(cgroup)
            start = time.monotonic()
            await fleet.refresh_usage()
            result["first"] = agent(fleet, TREE_ID)["usage"]
            result["proc_first"] = before
            await trio.sleep(1.0)  # a measuring interval
            await fleet.refresh_usage()
            result["elapsed"] = time.monotonic() - start
            result["second"] = agent(fleet, TREE_ID)["usage"]
            result["proc_second"] = proc_figures(cgroup)

            hog = Record(workdir / "hog.fifo")
            await fleet.execute("agent.spawn", {
                "provider": "hog", "agentId": HOG_ID, "cwd": str(base),
                "providerArgs": [str(hog.path)]}, "c2")
            assert await hog.line() == "allocating"
            shown = await trio.run_process(
                ["systemctl", "--user", "show", f"relay-{HOG_ID}.service", "-p",
                 "ActiveState,MemoryMax,CPUQuotaPerSecUSec,TasksMax"],
                capture_stdout=True, check=False,
            )  # fmt: skip
            result["hog_unit"] = dict(
                line.split("=", 1) for line in shown.stdout.decode().splitlines() if "=" in line
            )
            with trio.fail_after(WAIT):
                # The kernel ends it while it allocates; or it gets there and the
                # fleet's next sample ends it (as the heartbeat would).
                while agent(fleet, HOG_ID)["status"] == "running":
                    await fleet.refresh_usage()
                    with trio.move_on_after(0.2):
                        await reporter.changed.wait()
            result["hog"] = await reporter.wait_for(HOG_ID, "exited")
            result["warnings"] = fleet.warnings()
        finally:
            with trio.move_on_after(WAIT):
                await fleet.execute("orchestrator.shutdown", {"timeoutMs": 2000}, "c3")
            nursery.cancel_scope.cancel()
    (workdir / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    trio.run(main, Path(sys.argv[1]))
