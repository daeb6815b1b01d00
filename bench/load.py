"""Load: 200 agents, then a burst of 2,000 commands across them (not in CI).

    python bench/load.py [--agents 200] [--burst 2000] [--seed N]

The dev relay runs in this process, one orchestrator as a subprocess (plain
sessions, the ``command`` provider running ``sleep``). First ``--agents``
spawns are created at once; then ``--burst`` commands at once, a mix of
``agent.compact`` (45 %), ``agent.restart`` (20 %), ``agent.stop`` of a
known agent (10 %) and of an unknown one (25 %). Each command's settle time
is from its creation at the relay to its settling there (the whole path).
Prints p50/p99/max settle times, the rate, the orchestrator's RSS (before,
with the agents, peak during the burst) beside TARGETS.md, and the fork/exec
floor of the same run; writes ``bench/results/load.json``.
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import fmt_row, percentile, write_json  # noqa: E402
from bench._soak_driver import default_workdir  # noqa: E402
from bench._soak_procs import (  # noqa: E402
    TARGET,
    OrchestratorProcess,
    RelayHost,
    kill_marked,
    marked_processes,
)
from orchestrator.devrelay._records import TERMINAL  # noqa: E402
from orchestrator.devrelay._store import RelayStore  # noqa: E402

SETTLED_AT: dict[str, float] = {}
CLAIMED_AT: dict[str, float] = {}
WAITING: set[str] = set()  # ids not settled yet of the batch being waited for


def _record_settles() -> None:
    """Stamp each command's settle time as the relay's store records it (bench only)."""
    original = RelayStore._set_status

    def set_status(self: RelayStore, command: Any, status: str, **kwargs: Any) -> None:
        if status == "running":
            CLAIMED_AT[command.id] = time.perf_counter()
        if status in TERMINAL and command.id not in SETTLED_AT:
            SETTLED_AT[command.id] = time.perf_counter()
            WAITING.discard(command.id)
        original(self, command, status, **kwargs)

    RelayStore._set_status = set_status  # type: ignore[method-assign]


def fork_floor(count: int, argv: list[str]) -> float:
    """Seconds to Popen ``count`` sleeping processes one by one (then they are ended)."""
    started = time.perf_counter()
    procs = [subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
             for _ in range(count)]
    elapsed = time.perf_counter() - started
    for proc in procs:
        proc.kill()
    for proc in procs:
        proc.wait()
    return elapsed


class Load:
    def __init__(self, args: argparse.Namespace, nursery: trio.Nursery) -> None:
        self.args = args
        self.nursery = nursery
        self.rng = random.Random(args.seed)
        self.work = default_workdir("relay-load-")
        # `sleep` takes a float: a unique duration marks this run's agents.
        self.marker = f"{86400 + self.rng.randrange(10**6) / 10**6:.6f}"
        self.relay = RelayHost(nursery, None)
        self.orch: OrchestratorProcess | None = None
        self.created_at: dict[str, float] = {}
        self.peak_rss = 0

    def spawn_params(self, agent_id: str) -> dict[str, Any]:
        return {"provider": "command", "agentId": agent_id,
                "spawnRequestId": f"sp_{agent_id}_{self.rng.randrange(10**9)}",
                "cwd": str((self.work / "base").resolve()), "label": agent_id,
                "providerArgs": ["sleep", self.marker]}

    def create(self, kind: str, params: dict[str, Any]) -> str:
        relay = self.relay.relay
        assert relay is not None
        command = relay.create_command(TARGET, kind, params, "load")
        self.created_at[command["id"]] = time.perf_counter()
        return str(command["id"])

    async def settle_all(self, ids: list[str], bound: float) -> float:
        relay = self.relay.relay
        assert relay is not None
        started = time.perf_counter()
        WAITING.update(i for i in ids if i not in SETTLED_AT)
        with trio.fail_after(bound):
            await relay.wait_for(lambda: not WAITING)
        return time.perf_counter() - started

    def rss(self) -> int:
        assert self.orch is not None and self.orch.proc is not None
        return int(psutil.Process(self.orch.proc.pid).memory_info().rss)

    async def sample_rss(self, scope: trio.CancelScope) -> None:
        with scope:
            while True:
                self.peak_rss = max(self.peak_rss, self.rss())
                await trio.sleep(0.1)

    def burst_command(self, agent_ids: list[str]) -> tuple[str, dict[str, Any]]:
        agent_id = self.rng.choice(agent_ids)
        roll = self.rng.random()
        if roll < 0.45:
            return "agent.compact", {"agentId": agent_id}
        if roll < 0.65:
            return "agent.restart", {"agentId": agent_id,
                                     "restartSpawn": self.spawn_params(agent_id)}
        if roll < 0.75:
            return "agent.stop", {"agentId": agent_id, "timeoutMs": 2000}
        return "agent.stop", {"agentId": f"ag_unknown_{self.rng.randrange(10**6)}"}

    async def run(self) -> dict[str, Any]:
        args = self.args
        floor = fork_floor(args.agents, ["sleep", self.marker])
        await self.relay.start()
        self.orch = OrchestratorProcess(self.work, self.relay.url, heartbeat=10.0,
                                        provider={"compact_settle_seconds": 0.0})
        await self.orch.start(self.nursery)
        relay = self.relay.relay
        assert relay is not None
        with trio.fail_after(30):
            await relay.wait_for(lambda: (relay.orchestrator("orch-soak") or {}).get(
                "status") == "online")
        await trio.sleep(1.0)  # the command stream connects right after registration
        rss_idle = self.rss()
        agent_ids = [f"ag_load_{i:03d}" for i in range(args.agents)]
        spawn_ids = [self.create("agent.spawn", self.spawn_params(a)) for a in agent_ids]
        spawn_s = await self.settle_all(spawn_ids, 120)
        failed = [i for i in spawn_ids if relay.get_command(i)["status"] != "succeeded"]
        await trio.sleep(1.0)
        rss_agents = self.rss()
        sampling = trio.CancelScope()
        self.nursery.start_soon(self.sample_rss, sampling)
        burst = [self.burst_command(agent_ids) for _ in range(args.burst)]
        started = time.perf_counter()
        burst_ids = [self.create(kind, params) for kind, params in burst]
        create_s = time.perf_counter() - started
        burst_s = await self.settle_all(burst_ids, 600) + create_s
        sampling.cancel()
        settle_ms = [(SETTLED_AT[i] - self.created_at[i]) * 1000 for i in burst_ids]
        spawn_ms = [(SETTLED_AT[i] - self.created_at[i]) * 1000 for i in spawn_ids]
        claim_ms = [(CLAIMED_AT[i] - self.created_at[i]) * 1000 for i in burst_ids
                    if i in CLAIMED_AT]
        outcomes: dict[str, int] = {}
        for (kind, _), cid in zip(burst, burst_ids, strict=True):
            key = f"{kind} {relay.get_command(cid)['status']}"
            outcomes[key] = outcomes.get(key, 0) + 1
        rss_after = self.rss()
        running = sum(a.get("status") == "running"
                      for a in relay.orchestrator("orch-soak")["agents"])
        return {
            "agents": args.agents, "burst": args.burst, "seed": args.seed,
            "fork_floor_s": floor, "spawn_s": spawn_s, "spawn_failed": len(failed),
            "spawn_p50_ms": percentile(spawn_ms, 50), "spawn_p99_ms": percentile(spawn_ms, 99),
            "burst_s": burst_s, "burst_rate_per_s": args.burst / burst_s,
            "settle_p50_ms": percentile(settle_ms, 50), "settle_p99_ms": percentile(settle_ms, 99),
            "settle_max_ms": max(settle_ms), "outcomes": outcomes,
            "claim_p50_ms": percentile(claim_ms, 50), "claim_p99_ms": percentile(claim_ms, 99),
            "agents_running_after": running, "rss_idle_bytes": rss_idle,
            "rss_with_agents_bytes": rss_agents, "rss_peak_burst_bytes": self.peak_rss,
            "rss_after_burst_bytes": rss_after,
            "targets": {"rss_mb": 35, "rss_per_agent_mb": 0.05},
        }

    async def teardown(self) -> None:
        if self.orch is not None:
            await self.orch.terminate()
        relay = self.relay.relay
        pids = set(marked_processes(self.marker))
        if relay is not None:
            agents = (relay.orchestrator("orch-soak") or {}).get("agents", [])
            pids |= {a["pid"] for a in agents if isinstance(a.get("pid"), int)}
        for pid in sorted(pids):
            kill_marked(pid, self.marker)
        await self.relay.stop()
        shutil.rmtree(self.work, ignore_errors=True)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    _record_settles()
    async with trio.open_nursery() as nursery:
        load = Load(args, nursery)
        try:
            result = await load.run()
        finally:
            with trio.CancelScope(shield=True):
                await load.teardown()
        nursery.cancel_scope.cancel()
    return result


def report(r: dict[str, Any]) -> None:
    mb = 1e6
    print(f"load: {r['agents']} agents (plain sessions, sleep), then a burst of {r['burst']} "
          f"commands (seed {r['seed']})")
    print(fmt_row(f"fork/exec floor, {r['agents']} × Popen", f"{r['fork_floor_s']:.2f} s",
                  "the floor"))
    print(fmt_row(f"spawn {r['agents']}: all settled", f"{r['spawn_s']:.2f} s",
                  f"({r['spawn_s'] / r['fork_floor_s']:.1f} × floor; ≤ 2.5 × for the "
                  "whole path)"))
    print(fmt_row("spawn settle p50 / p99", f"{r['spawn_p50_ms']:.0f} / "
                  f"{r['spawn_p99_ms']:.0f} ms", "-"))
    print(fmt_row(f"burst of {r['burst']}: all settled", f"{r['burst_s']:.2f} s",
                  f"{r['burst_rate_per_s']:.0f} commands/s"))
    print(fmt_row("burst settle p50", f"{r['settle_p50_ms']:.0f} ms", "-"))
    print(fmt_row("burst settle p99", f"{r['settle_p99_ms']:.0f} ms", "-"))
    print(fmt_row("burst settle max", f"{r['settle_max_ms']:.0f} ms", "-"))
    print(fmt_row("burst create → claimed p50 / p99",
                  f"{r['claim_p50_ms']:.0f} / {r['claim_p99_ms']:.0f} ms", "-"))
    print(fmt_row("orchestrator RSS, idle", f"{r['rss_idle_bytes'] / mb:.1f} MB", "≤ 35 MB"))
    per_agent = (r["rss_with_agents_bytes"] - r["rss_idle_bytes"]) / mb / r["agents"]
    print(fmt_row(f"orchestrator RSS, {r['agents']} agents",
                  f"{r['rss_with_agents_bytes'] / mb:.1f} MB",
                  f"≤ 35 MB; +{per_agent:.3f} MB/agent (≤ 0.05)"))
    print(fmt_row("orchestrator RSS, peak in the burst",
                  f"{r['rss_peak_burst_bytes'] / mb:.1f} MB", "-"))
    print(f"  outcomes: {r['outcomes']}; spawns failed: {r['spawn_failed']}; "
          f"agents running after: {r['agents_running_after']}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, default=200)
    ap.add_argument("--burst", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    result = trio.run(main, ap.parse_args())
    report(result)
    print(f"  wrote {write_json('load', result)}")
