"""Bus round trip: commands created at the dev relay → settled by the orchestrator.

The relay runs in this process (trio), the orchestrator in its own process,
both on loopback. Each command is ``agent.stop`` for an unknown agent, which
fails fast: the figure is the bus itself (deliver, claim, settle).

    python bench/bus_roundtrip.py [--commands 1000] [--burst 1000] [--idle 60]

Prints p50/p99 create → settled for commands one after another, the rate
for a burst created at once, and the orchestrator's RSS and CPU while idle
with a 1 s heartbeat. Writes bench/results/bus_roundtrip.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import cpu_and_rss, fmt_row, percentile, start_orchestrator, write_json  # noqa: E402
from orchestrator.devrelay._relay import serve_dev_relay  # noqa: E402

TOKEN = "bench-token"


def is_settled(relay: object, cid: str) -> bool:
    c = relay.get_command(cid)  # type: ignore[attr-defined]
    return c is not None and c["status"] in ("succeeded", "failed")


async def main(args: argparse.Namespace) -> None:
    async with trio.open_nursery() as nursery:
        relay = await nursery.start(lambda task_status: serve_dev_relay(
            token=TOKEN, task_status=task_status))
        proc, work = start_orchestrator(relay.url, TOKEN, heartbeat=1.0)
        try:
            with trio.fail_after(30):
                await relay.wait_for(lambda: relay.orchestrator("orch-bench") is not None
                                     and relay.orchestrator("orch-bench")["status"] == "online")
            await trio.sleep(0.5)  # the stream connects right after registration
            target = "orch:orch-bench"
            # warm-up
            for _ in range(20):
                cid = relay.create_command(target, "agent.stop", {"agentId": "nobody"})["id"]
                with trio.fail_after(10):
                    await relay.wait_for(lambda cid=cid: is_settled(relay, cid))
            # one after another
            lat = []
            for _ in range(args.commands):
                t0 = time.perf_counter()
                cid = relay.create_command(target, "agent.stop", {"agentId": "nobody"})["id"]
                with trio.fail_after(10):
                    await relay.wait_for(lambda cid=cid: is_settled(relay, cid))
                lat.append((time.perf_counter() - t0) * 1000)
            # burst
            cpu_o0, _ = cpu_and_rss(proc.pid)
            cpu_r0 = time.process_time()
            t0 = time.perf_counter()
            ids = [relay.create_command(target, "agent.stop", {"agentId": "nobody"})["id"]
                   for _ in range(args.burst)]
            cursor = [0]

            def all_settled() -> bool:
                while cursor[0] < len(ids) and is_settled(relay, ids[cursor[0]]):
                    cursor[0] += 1
                return cursor[0] == len(ids)

            with trio.fail_after(120):
                await relay.wait_for(all_settled)
            burst_s = time.perf_counter() - t0
            burst_cpu_orch = cpu_and_rss(proc.pid)[0] - cpu_o0
            burst_cpu_relay = time.process_time() - cpu_r0
            # the dev relay forgets old settled commands: count the ones it still has
            errors = {(relay.get_command(i) or {}).get("error") for i in ids}
            # idle
            await trio.sleep(2)
            cpu0, _ = cpu_and_rss(proc.pid)
            t_idle = time.perf_counter()
            await trio.sleep(args.idle)
            cpu1, rss = cpu_and_rss(proc.pid)
            idle_cpu = (cpu1 - cpu0) / (time.perf_counter() - t_idle) * 100
        finally:
            proc.terminate()
            proc.wait(10)
            nursery.cancel_scope.cancel()
            if not os.environ.get("BENCH_KEEP_WORK"):  # its state dir, log and agents' files
                shutil.rmtree(work, ignore_errors=True)
    p50, p99 = percentile(lat, 50), percentile(lat, 99)
    rate = args.burst / burst_s
    print(f"bus round trip, {args.commands} commands one after another (loopback):")
    print(fmt_row("create → settled p50", f"{p50:.2f} ms", "≤ 1 ms (TARGETS), ≤ 5 ms (issue)"))
    print(fmt_row("create → settled p99", f"{p99:.2f} ms", "≤ 3 ms (TARGETS), ≤ 25 ms (issue)"))
    print(f"burst of {args.burst} created at once:")
    print(fmt_row("settled per second", f"{rate:.0f} /s", "≥ 3000 /s"))
    orch_us = burst_cpu_orch / args.burst * 1e6
    relay_us = burst_cpu_relay / args.burst * 1e6
    print(fmt_row("CPU per command: orchestrator", f"{orch_us:.0f} µs", "–"))
    print(fmt_row("CPU per command: relay + bench", f"{relay_us:.0f} µs", "–"))
    print(f"orchestrator idle {args.idle:.0f} s, heartbeat 1 s:")
    print(fmt_row("CPU", f"{idle_cpu:.3f} %", "≤ 0.3 % (TARGETS at 1 s), ≤ 0.5 % (issue)"))
    print(fmt_row("RSS", f"{rss / 1e6:.1f} MB", "≤ 35 MB (TARGETS), ≤ 60 MB (issue)"))
    print(f"  settle errors seen: {sorted(e for e in errors if e)}")
    path = write_json("bus_roundtrip", {
        "commands": args.commands, "p50_ms": p50, "p99_ms": p99, "burst": args.burst,
        "burst_seconds": burst_s, "burst_rate_per_s": rate, "idle_seconds": args.idle,
        "idle_cpu_percent": idle_cpu, "rss_bytes": rss,
        "targets": {"p50_ms": 1, "p99_ms": 3, "burst_rate_per_s": 3000,
                    "idle_cpu_percent_1s_heartbeat": 0.3, "rss_mb": 35},
    })
    print(f"  wrote {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--commands", type=int, default=1000)
    ap.add_argument("--burst", type=int, default=1000)
    ap.add_argument("--idle", type=float, default=60.0)
    trio.run(main, ap.parse_args())
