"""What sampling per-agent usage costs at each heartbeat, for 200 agents.

    python bench/usage.py [--agents 200] [--samples 50] [--whole 20]

Part 1, in this process: an ``AgentFleet`` (plain sessions, the foreground
launcher) runs N agents, ``sleep 1000`` each (as TARGETS.md's peers were
measured), then N agents that are a small tree each (``sh`` with a ``sleep``
child). ``refresh_usage()`` (what the presence calls before each heartbeat)
is timed in CPU seconds of this process, all threads (the sampling runs in
a worker thread), median of ``--samples`` calls. Beside it, for scale: what
building the heartbeat's agent list costs anyway (``agents()`` + JSON), and
one pass of the naive psutil way (``Process.children(recursive=True)`` per
agent), which the /proc reading here replaces.

Part 2 (``--whole S``, 0 to skip): the orchestrator as its own process on the
dev relay with N agents and a 1 s heartbeat: its whole idle CPU over S
seconds, sampling included.

Targets (TARGETS.md, idle CPU with 200 agents, the whole orchestrator):
≤ 0.05 % of a core at the default 10 s heartbeat, ≤ 0.3 % at a 1 s heartbeat.
Writes bench/results/usage.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from actors import AgentFleet, FleetConfig, MemoryStore, provider_config_from_table  # noqa: E402
from bench._common import cpu_and_rss, fmt_row, start_orchestrator, write_json  # noqa: E402
from supervisors import DirectLauncher  # noqa: E402

TOKEN = "bench-token"
TARGET_10S = 0.05  # % of a core, whole orchestrator, default heartbeat
TARGET_1S = 0.3


class NullReporter:
    def agent_changed(self, agent: dict[str, Any]) -> None:
        pass


async def spawn_all(fleet: AgentFleet, base: Path, argv: list[str], count: int) -> None:
    async def one(n: int) -> None:
        await fleet.execute(
            "agent.spawn", {"provider": "command", "cwd": str(base), "providerArgs": argv}, f"c{n}"
        )

    async with trio.open_nursery() as nursery:
        for n in range(count):
            nursery.start_soon(one, n)


async def measure_sampling(fleet: AgentFleet, samples: int) -> dict[str, float]:
    await fleet.refresh_usage()  # the first opens the descriptors it keeps
    cpu: list[float] = []
    wall: list[float] = []
    for _ in range(samples):
        c0, w0 = time.process_time(), time.perf_counter()
        await fleet.refresh_usage()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    body: list[float] = []
    for _ in range(samples):
        c0 = time.process_time()
        json.dumps(fleet.agents())
        body.append(time.process_time() - c0)
    return {
        "sample_cpu_ms": statistics.median(cpu) * 1000,
        "sample_cpu_ms_min": min(cpu) * 1000,
        "sample_cpu_ms_max": max(cpu) * 1000,
        "sample_wall_ms": statistics.median(wall) * 1000,
        "heartbeat_body_cpu_ms": statistics.median(body) * 1000,
    }


def psutil_pass(pids: list[int]) -> float:
    """CPU seconds of one naive psutil pass over every agent's tree."""
    c0 = time.process_time()
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for proc in [root, *root.children(recursive=True)]:
                with proc.oneshot():
                    proc.cpu_times()
                    proc.memory_info()
                    proc.num_threads()
        except psutil.Error:
            continue
    return time.process_time() - c0


async def part_one(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="relay-bench-usage-"))
    base = work / "base"
    base.mkdir()
    config = FleetConfig(
        base_dir=base,
        state_dir=work / "state",
        providers={
            "command": provider_config_from_table("command", {"enabled": True, "session": "plain"})
        },
    )
    results: dict[str, Any] = {}
    shapes = {
        "sleep": ["sleep", "1000"],
        "tree": ["sh", "-c", "sleep 1000 & wait"],
    }
    for shape, argv in shapes.items():
        fleet = AgentFleet(config, store=MemoryStore(), reporter=NullReporter(),
                           launcher=DirectLauncher())
        async with trio.open_nursery() as nursery:
            await nursery.start(fleet.run)
            try:
                await spawn_all(fleet, base, argv, args.agents)
                await trio.sleep(0.5)  # let the trees form
                figures = await measure_sampling(fleet, args.samples)
                if shape == "sleep":
                    pids = [a["pid"] for a in fleet.agents()]
                    figures["psutil_pass_cpu_ms"] = psutil_pass(pids) * 1000
                usage = [a["usage"] for a in fleet.agents()]
                figures["agents_sampled"] = sum(1 for u in usage if u["memoryRss"] > 0)
                figures["tasks_per_agent"] = statistics.median(u["tasks"] for u in usage)
                results[shape] = figures
            finally:
                with trio.move_on_after(30):
                    await fleet.execute("orchestrator.shutdown", {"timeoutMs": 2000}, "stop")
                nursery.cancel_scope.cancel()
    return results


async def part_two(args: argparse.Namespace) -> dict[str, Any]:
    from orchestrator.devrelay._relay import serve_dev_relay

    async with trio.open_nursery() as nursery:
        relay = await nursery.start(lambda task_status: serve_dev_relay(
            token=TOKEN, task_status=task_status))
        proc, work = start_orchestrator(relay.url, TOKEN, heartbeat=1.0)
        try:
            with trio.fail_after(30):
                await relay.wait_for(lambda: (relay.orchestrator("orch-bench") or {})
                                     .get("status") == "online")
            base = work / "base"
            ids = [relay.create_command("orch:orch-bench", "agent.spawn", {
                "provider": "command", "cwd": str(base), "providerArgs": ["sleep", "1000"]})["id"]
                for _ in range(args.agents)]
            with trio.fail_after(120):
                await relay.wait_for(lambda: all(
                    relay.get_command(i)["status"] in ("succeeded", "failed") for i in ids))
            await trio.sleep(3)  # settle: reports sent, first samples taken
            beats0 = relay.orchestrator("orch-bench")["heartbeats"]
            cpu0, _ = cpu_and_rss(proc.pid)
            t0 = time.perf_counter()
            await trio.sleep(args.whole)
            cpu1, rss = cpu_and_rss(proc.pid)
            elapsed = time.perf_counter() - t0
            beats = relay.orchestrator("orch-bench")["heartbeats"] - beats0
            agents = relay.orchestrator("orch-bench")["agents"]
            return {
                "seconds": elapsed,
                "heartbeats": beats,
                "idle_cpu_percent_1s_heartbeat": (cpu1 - cpu0) / elapsed * 100,
                "cpu_ms_per_heartbeat": (cpu1 - cpu0) / max(beats, 1) * 1000,
                "rss_bytes": rss,
                "agents_with_usage": sum(1 for a in agents if a["usage"]["memoryRss"] > 0),
            }
        finally:
            with trio.move_on_after(30):
                cid = relay.create_command("orch:orch-bench", "orchestrator.shutdown",
                                           {"timeoutMs": 2000})["id"]
                await relay.wait_for(lambda: relay.get_command(cid)["status"]
                                     in ("succeeded", "failed"))
            proc.terminate()
            proc.wait(timeout=10)
            nursery.cancel_scope.cancel()


async def main(args: argparse.Namespace) -> None:
    data: dict[str, Any] = {"agents": args.agents, "samples": args.samples}
    data["sampling"] = await part_one(args)
    if args.whole > 0:
        data["whole_orchestrator"] = await part_two(args)
    data["targets"] = {
        "idle_cpu_percent_10s_heartbeat": TARGET_10S,
        "idle_cpu_percent_1s_heartbeat": TARGET_1S,
    }
    print(f"usage sampling, {args.agents} agents (CPU of one refresh_usage, median)")
    for shape, figures in data["sampling"].items():
        ms = figures["sample_cpu_ms"]
        figures["percent_of_core_10s_heartbeat"] = ms / 10_000 * 100
        figures["percent_of_core_1s_heartbeat"] = ms / 1_000 * 100
        print(fmt_row(f"{shape}: CPU per heartbeat", f"{ms:.2f} ms", "-"))
        print(fmt_row(f"{shape}: at a 10 s heartbeat", f"{ms / 100:.4f} %",
                      f"≤ {TARGET_10S} % (whole idle)"))
        print(fmt_row(f"{shape}: at a 1 s heartbeat", f"{ms / 10:.3f} %",
                      f"≤ {TARGET_1S} % (whole idle)"))
        body = figures["heartbeat_body_cpu_ms"]
        print(fmt_row(f"{shape}: heartbeat body, for scale", f"{body:.2f} ms", "-"))
        if "psutil_pass_cpu_ms" in figures:
            print(fmt_row(f"{shape}: naive psutil pass, for scale",
                          f"{figures['psutil_pass_cpu_ms']:.0f} ms", "-"))
    whole = data.get("whole_orchestrator")
    if whole:
        print(f"whole orchestrator, {args.agents} agents, 1 s heartbeat, {whole['seconds']:.0f} s")
        print(fmt_row("idle CPU", f"{whole['idle_cpu_percent_1s_heartbeat']:.3f} %",
                      f"≤ {TARGET_1S} %"))
        print(fmt_row("CPU per heartbeat (all of it)", f"{whole['cpu_ms_per_heartbeat']:.2f} ms",
                      f"≤ {TARGET_10S * 100:.0f} ms at 10 s"))
        print(fmt_row("agents reported with usage", str(whole["agents_with_usage"]),
                      str(args.agents)))
    path = write_json("usage", data)
    print(f"wrote {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--whole", type=float, default=20.0)
    trio.run(main, parser.parse_args())
