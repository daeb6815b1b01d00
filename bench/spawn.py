"""Spawn N agents through the whole bus path, then crash some and time the reports.

    python bench/spawn.py [--agents 100] [--crashes 20] [--restarts 20] [--orchestrator-arg ARG]...

The dev relay runs in this process, the orchestrator in its own (plain
sessions, the ``command`` provider running ``sleep``). Prints, beside the
issue's targets: seconds from the N spawn commands created at the relay to
all N agents reported ``running`` to the relay; the orchestrator's RSS per
agent; and, for agents killed with SIGKILL, the time from the kill to their
``exited`` report received by the relay. Writes bench/results/spawn.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import cpu_and_rss, fmt_row, percentile, start_orchestrator, write_json  # noqa: E402
from orchestrator.devrelay._relay import serve_dev_relay  # noqa: E402

TOKEN = "bench-token"
TARGET = "orch:orch-bench"


def agents(relay: object) -> list[dict[str, object]]:
    return (relay.orchestrator("orch-bench") or {}).get("agents") or []  # type: ignore[attr-defined]


async def main(args: argparse.Namespace) -> None:
    sleep = shutil.which("sleep") or "/bin/sleep"
    async with trio.open_nursery() as nursery:
        relay = await nursery.start(lambda task_status: serve_dev_relay(
            token=TOKEN, task_status=task_status))
        proc, work = start_orchestrator(relay.url, TOKEN, extra=args.orchestrator_arg or None)
        try:
            with trio.fail_after(30):
                await relay.wait_for(lambda: (relay.orchestrator("orch-bench") or {})
                                     .get("status") == "online")
            await trio.sleep(0.5)
            _, rss0 = cpu_and_rss(proc.pid)
            base = str((work / "base").resolve())
            cpu0, _ = cpu_and_rss(proc.pid)
            relay_cpu0 = time.process_time()
            t0 = time.perf_counter()
            for n in range(args.agents):
                relay.create_command(TARGET, "agent.spawn", {
                    "provider": "command", "agentId": f"ag_{n}", "cwd": base,
                    "providerArgs": [sleep, "1000"]})
            with trio.fail_after(120):
                await relay.wait_for(lambda: sum(a.get("status") == "running"
                                                 for a in agents(relay)) == args.agents)
            spawn_s = time.perf_counter() - t0
            orch_cpu = cpu_and_rss(proc.pid)[0] - cpu0
            relay_cpu = time.process_time() - relay_cpu0
            await trio.sleep(1)
            _, rss1 = cpu_and_rss(proc.pid)
            per_agent_mb = (rss1 - rss0) / args.agents / 1e6
            exits = []
            for agent in agents(relay)[: args.crashes]:
                aid, pid = agent["agentId"], agent["pid"]
                t = time.perf_counter()
                os.kill(int(pid), signal.SIGKILL)  # type: ignore[arg-type]
                with trio.fail_after(10):
                    await relay.wait_for(lambda aid=aid: any(
                        a["agentId"] == aid and a["status"] == "exited" for a in agents(relay)))
                exits.append((time.perf_counter() - t) * 1000)
            # restart one: agent.restart created at the relay → the new process's `running`
            from orchestrator.devrelay._actions import agent_action
            restarts = []
            for agent in agents(relay)[args.crashes: args.crashes + args.restarts]:
                aid, old_pid = agent["agentId"], agent["pid"]
                t = time.perf_counter()
                agent_action(relay._store, str(aid), {"action": "restart"})
                with trio.fail_after(10):
                    await relay.wait_for(lambda aid=aid, old=old_pid: any(
                        a["agentId"] == aid and a["status"] == "running" and a["pid"] != old
                        for a in agents(relay)))
                restarts.append((time.perf_counter() - t) * 1000)
            t_stop = time.perf_counter()
            stop_cpu0, stop_relay0 = cpu_and_rss(proc.pid)[0], time.process_time()
            relay.create_command(TARGET, "orchestrator.shutdown", {})
            with trio.fail_after(60):
                await relay.wait_for(lambda: all(a.get("status") in ("stopped", "exited")
                                                 for a in agents(relay)))
            stop_s = time.perf_counter() - t_stop
            stop_cpu = cpu_and_rss(proc.pid)[0] - stop_cpu0
            stop_relay = time.process_time() - stop_relay0
        finally:
            proc.terminate()
            proc.wait(10)
            nursery.cancel_scope.cancel()
            if not os.environ.get("BENCH_KEEP_WORK"):  # its state dir, log and agents' files
                shutil.rmtree(work, ignore_errors=True)
    print(f"{args.agents} command-provider agents (plain sessions), whole bus path:")
    print(fmt_row("created → all reported running", f"{spawn_s:.3f} s",
                  "≤ 0.5 s for 100 (issue 3)"))
    print(fmt_row("  orchestrator CPU in that time", f"{orch_cpu:.3f} s", "-"))
    print(fmt_row("  dev relay (this process) CPU", f"{relay_cpu:.3f} s", "-"))
    print(fmt_row("orchestrator RSS per agent", f"{per_agent_mb:.3f} MB",
                  "≤ 0.3 MB (issue 3), ≤ 0.05 MB (TARGETS)"))
    print(fmt_row("orchestrator.shutdown → all reported stopped", f"{stop_s:.3f} s",
                  "≤ 0.1 s for 200 (TARGETS)"))
    print(fmt_row("  orchestrator CPU in that time", f"{stop_cpu:.3f} s", "-"))
    print(fmt_row("  dev relay (this process) CPU", f"{stop_relay:.3f} s", "-"))
    print(f"SIGKILL → exited report received by the relay, {len(exits)} agents:")
    print(fmt_row("p50", f"{percentile(exits, 50):.2f} ms", "≤ 2 ms (TARGETS)"))
    print(fmt_row("max", f"{max(exits):.2f} ms", "≤ 10 ms (TARGETS), ≤ 100 ms (issue 3)"))
    if restarts:
        print(f"agent.restart created → the new process reported running, {len(restarts)} agents:")
        print(fmt_row("p50", f"{percentile(restarts, 50):.2f} ms", "-"))
        print(fmt_row("max", f"{max(restarts):.2f} ms", "-"))
    write_json("spawn", {"agents": args.agents, "spawn_seconds": spawn_s,
                         "orchestrator_cpu_seconds": orch_cpu, "relay_cpu_seconds": relay_cpu,
                         "rss_per_agent_mb": per_agent_mb, "stop_all_seconds": stop_s,
                         "exit_report_ms": exits,
                         "exit_p50_ms": percentile(exits, 50), "exit_max_ms": max(exits),
                         "restart_ms": restarts,
                         "restart_p50_ms": percentile(restarts, 50) if restarts else None})


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=100)
    ap.add_argument("--crashes", type=int, default=20)
    ap.add_argument("--restarts", type=int, default=20)
    ap.add_argument("--orchestrator-arg", action="append", default=[],
                    help="an extra argument for `relay-orchestrator run` (repeatable), "
                         "e.g. --verbose")
    trio.run(main, ap.parse_args())
