"""Re-adopt N agents after a restart: process start → registered with all of them.

    python bench/readopt.py [--agents 200] [--repeat 5]

The dev relay runs in this process, the orchestrator in its own. N plain
agents (``sleep 1000``) are spawned through the bus; then, each repetition,
the orchestrator is stopped with SIGTERM (its agents keep running, as after
an upgrade or ``systemctl --user restart``) and a new one is started on the
same state directory. Measured: from the new process's start to the relay
holding its new registration with all N agents ``running`` under the same
pids (TARGETS: ≤ 1 s for 200). Writes bench/results/readopt.json.
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
from bench._common import fmt_row, median, start_orchestrator, write_json  # noqa: E402
from orchestrator.devrelay._relay import serve_dev_relay  # noqa: E402

TOKEN = "bench-token"
TARGET = "orch:orch-bench"


def agents(relay: object) -> dict[str, dict[str, object]]:
    orch = relay.orchestrator("orch-bench") or {}  # type: ignore[attr-defined]
    return {a["agentId"]: a for a in orch.get("agents") or []}


async def main(args: argparse.Namespace) -> None:
    sleep = shutil.which("sleep") or "/bin/sleep"
    times: list[float] = []
    async with trio.open_nursery() as nursery:
        relay = await nursery.start(lambda task_status: serve_dev_relay(
            token=TOKEN, task_status=task_status))
        proc, work = start_orchestrator(relay.url, TOKEN)
        pids: dict[str, object] = {}
        try:
            with trio.fail_after(30):
                await relay.wait_for(lambda: (relay.orchestrator("orch-bench") or {})
                                     .get("status") == "online")
            base = str((work / "base").resolve())
            for n in range(args.agents):
                relay.create_command(TARGET, "agent.spawn", {
                    "provider": "command", "agentId": f"ag_{n}", "cwd": base,
                    "providerArgs": [sleep, "1000"]})
            with trio.fail_after(120):
                await relay.wait_for(lambda: sum(a.get("status") == "running"
                                                 for a in agents(relay).values()) == args.agents)
            pids = {aid: a["pid"] for aid, a in agents(relay).items()}
            for _ in range(args.repeat):
                proc.send_signal(signal.SIGTERM)
                proc.wait(10)
                before = (relay.orchestrator("orch-bench") or {}).get("registeredAt")
                t0 = time.perf_counter()
                proc, _ = start_orchestrator(relay.url, TOKEN, workdir=work)

                def readopted(before: object = before) -> bool:
                    orch = relay.orchestrator("orch-bench") or {}
                    seen = agents(relay)
                    return orch.get("registeredAt") != before and len(seen) == len(pids) and all(
                        a.get("status") == "running" and a.get("pid") == pids[aid]
                        for aid, a in seen.items())

                with trio.fail_after(60):
                    await relay.wait_for(readopted)
                times.append(time.perf_counter() - t0)
        finally:
            for pid in pids.values():
                try:
                    os.killpg(int(pid), signal.SIGKILL)  # type: ignore[call-overload]
                except (ProcessLookupError, PermissionError):
                    pass
            proc.terminate()
            proc.wait(10)
            nursery.cancel_scope.cancel()
    shutil.rmtree(work, ignore_errors=True)
    print(f"re-adopt {args.agents} plain agents, {len(times)} restarts:")
    print(fmt_row("process start → registered with all", f"{median(times):.3f} s",
                  "≤ 1 s for 200 (TARGETS)"))
    print(fmt_row("worst", f"{max(times):.3f} s", "-"))
    write_json("readopt", {"agents": args.agents, "seconds": times,
                           "median_seconds": median(times), "max_seconds": max(times)})


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=5)
    trio.run(main, ap.parse_args())
