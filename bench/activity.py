"""Activity tracking in tmux: its idle cost with N agents, and how soon a screen change is reported.

    python bench/activity.py [--agents 200] [--idle 30] [--samples 20] [--repeat 1]

The dev relay runs in this process, the orchestrator in its own, agents in
tmux sessions. The agents are a cheap stand-in for an agent CLI,
``bench/_screen_agent.sh``: it draws claude's ready screen (the test
fixture), then the busy screen on each line typed, the ready screen on the
next. Two runs, each with its own orchestrator and tmux server:

- **untracked**: N agents of the ``command`` provider in tmux, running the
  stand-in (no screen rules: no tracking);
- **tracked**: N agents of a provider added by config with ``kind =
  "claude"`` running the same stand-in, so claude's screen rules apply and
  every agent's activity is followed.

Prints, beside the targets: the orchestrator's CPU (% of a core) over
``--idle`` seconds, from 5 s after every agent is up (tracked: reported
``ready``), for both runs, and their difference (from each thread's
``schedstat``, in ns; the kernel's 10 ms ticks, which charge a whole tick
to whoever runs when it falls, beside it); its tmux server's CPU likewise;
then, for ``--samples`` tracked agents one at a time, the time from a line
typed into the pane (``tmux send-keys``: the stand-in redraws at once) to
the relay holding that agent's ``activity`` as ``busy``, and back to
``ready`` on the next line. The orchestrator's own log line of the change
splits that into its noticing (the tracker) and the report reaching the
relay. ``--repeat`` alternates the two runs and gives medians.
Writes bench/results/activity.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import (  # noqa: E402
    ROOT,
    cpu_and_rss,
    fmt_row,
    kill_live_agents,
    kill_tmux,
    median,
    percentile,
    start_orchestrator,
    tmux_socket,
    write_json,
)
from orchestrator.devrelay._relay import serve_dev_relay  # noqa: E402

TOKEN = "bench-token"
ORCH = "orch-bench"
TARGET = f"orch:{ORCH}"
AGENT = ROOT / "bench" / "_screen_agent.sh"
PROVIDER = f"""
[providers.screenagent]
kind = "claude"
session = "tmux"
command = ["sh", {json.dumps(str(AGENT))}]
"""


def relay_agents(relay: Any) -> dict[str, dict[str, Any]]:
    """The relay's own record of our agents, read in place (the predicates
    run on every change at the relay)."""
    orch = relay._store.orchestrators.get(ORCH)
    return orch.agents if orch is not None else {}


def cpu_ns(pid: int) -> dict[str, int]:
    """CPU time of each of ``pid``'s threads, in ns (schedstat: not in 10 ms ticks)."""
    times = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                times[task] = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return times


def ns_since(before: dict[str, int], after: dict[str, int]) -> int:
    """CPU time between two ``cpu_ns``, thread by thread: a worker thread that
    ended in between (trio ends idle ones after 10 s) takes its earlier time
    with it, which a plain sum would subtract."""
    return sum(ns - before.get(tid, 0) for tid, ns in after.items())


def tmux_server_pid(socket: str) -> int | None:
    out = subprocess.run(["tmux", "-L", socket, "display-message", "-p", "#{pid}"],
                         capture_output=True, text=True, check=False).stdout.strip()
    return int(out) if out.isdigit() else None


def log_changes(work: Path) -> dict[tuple[str, str], list[float]]:
    """(agent, activity) → the wall times the orchestrator logged that change."""
    found: dict[tuple[str, str], list[float]] = {}
    for raw in (work / "orchestrator.log").read_text(errors="replace").splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        words = str(line.get("msg", "")).split()
        if len(words) == 4 and words[0] == "agent" and words[2] == "is":
            found.setdefault((words[1], words[3]), []).append(float(line["ts"]))
    return found


async def trial(n: int, idle: float, samples: int, tracked: bool) -> dict[str, Any]:
    async with trio.open_nursery() as nursery:
        relay = await nursery.start(lambda task_status: serve_dev_relay(
            token=TOKEN, task_status=task_status))
        proc, work = start_orchestrator(relay.url, TOKEN, session="tmux",
                                        config_extra=PROVIDER if tracked else "")
        socket = tmux_socket(work)
        ids = [f"ag_{i}" for i in range(n)]
        result: dict[str, Any] = {"tracked": tracked}
        try:
            with trio.fail_after(30):
                await relay.wait_for(lambda: (relay.orchestrator(ORCH) or {})
                                     .get("status") == "online")
            await trio.sleep(0.5)
            base = str((work / "base").resolve())
            created = []
            for aid in ids:
                params: dict[str, Any] = {"provider": "screenagent", "agentId": aid, "cwd": base}
                if not tracked:
                    params = {"provider": "command", "agentId": aid, "cwd": base,
                              "providerArgs": ["sh", str(AGENT)]}
                created.append(relay.create_command(TARGET, "agent.spawn", params)["id"])
            t0 = time.perf_counter()
            with trio.fail_after(120):
                await relay.wait_for(lambda: all(
                    relay.get_command(c)["status"] in ("succeeded", "failed") for c in created))
            failed = [relay.get_command(c)["error"] for c in created
                      if relay.get_command(c)["status"] != "succeeded"]
            if failed:
                raise RuntimeError(f"{len(failed)} spawns failed: {failed[0]}")

            def up(agent: dict[str, Any]) -> bool:
                return agent.get("status") == "running" and (
                    not tracked or agent.get("activity") == "ready")

            with trio.fail_after(120):
                await relay.wait_for(lambda: sum(up(a) for a in relay_agents(relay).values()) == n)
            result["all_up_seconds"] = time.perf_counter() - t0
            if not tracked:
                assert all(a.get("activity") is None for a in relay_agents(relay).values())
            await trio.sleep(5)  # the last reports, journal and status writes; then idle
            tmux_pid = tmux_server_pid(socket)
            cpu0, _ = cpu_and_rss(proc.pid)
            ns0, tmux0 = cpu_ns(proc.pid), cpu_ns(tmux_pid) if tmux_pid else {}
            t_idle = time.perf_counter()
            await trio.sleep(idle)
            window = time.perf_counter() - t_idle
            cpu1, rss = cpu_and_rss(proc.pid)
            ns1, tmux1 = cpu_ns(proc.pid), cpu_ns(tmux_pid) if tmux_pid else {}
            used = ns_since(ns0, ns1)
            result.update(
                idle_seconds=window, rss_mb=rss / 1e6, threads=len(ns1),
                idle_cpu_pct_ticks=(cpu1 - cpu0) / window * 100,
                idle_cpu_pct=used / 1e9 / window * 100, idle_cpu_ms=used / 1e6,
                tmux_idle_cpu_pct=ns_since(tmux0, tmux1) / 1e9 / window * 100 if tmux_pid else None)
            if tracked and samples:
                result.update(await delays(relay, socket, work, ids, samples))
            relay.create_command(TARGET, "orchestrator.shutdown", {})
            with trio.fail_after(60):
                await relay.wait_for(lambda: all(a.get("status") in ("stopped", "exited")
                                                 for a in relay_agents(relay).values()))
        finally:
            kill_live_agents(relay_agents(relay).values())
            proc.terminate()
            proc.wait(10)
            kill_tmux(work)  # the orchestrator leaves its tmux server up, by design
            nursery.cancel_scope.cancel()
            if not os.environ.get("BENCH_KEEP_WORK"):
                shutil.rmtree(work, ignore_errors=True)
    return result


async def delays(relay: Any, socket: str, work: Path, ids: list[str],
                 samples: int) -> dict[str, Any]:
    """A line typed into one agent at a time → its activity at the relay (busy, then ready)."""
    step = max(1, len(ids) // samples)
    chosen = ids[::step][:samples]
    typed: dict[tuple[str, str], float] = {}  # (agent, activity) → wall time of the keys
    seen: dict[str, list[float]] = {"busy": [], "ready": []}
    for aid in chosen:
        for want in ("busy", "ready"):
            wall, t = time.time(), time.perf_counter()
            await trio.run_process(["tmux", "-L", socket, "send-keys", "-t", f"=relay-{aid}:",
                                    "x", "Enter"])
            with trio.fail_after(10):
                await relay.wait_for(lambda aid=aid, want=want:
                                     relay_agents(relay)[aid].get("activity") == want)
            seen[want].append((time.perf_counter() - t) * 1000)
            typed[(aid, want)] = wall
            await trio.sleep(0.2)  # one change at a time
    logged = log_changes(work)
    noticed: list[float] = []  # keys → the orchestrator's log line of the change
    for (aid, want), wall in typed.items():
        after = [ts for ts in logged.get((aid, want), []) if ts >= wall - 0.002]
        if after:
            noticed.append((min(after) - wall) * 1000)
    both = seen["busy"] + seen["ready"]
    return {"busy_ms": seen["busy"], "ready_ms": seen["ready"], "noticed_ms": noticed,
            "busy_p50_ms": percentile(seen["busy"], 50),
            "busy_p95_ms": percentile(seen["busy"], 95), "busy_max_ms": max(seen["busy"]),
            "ready_p50_ms": percentile(seen["ready"], 50),
            "ready_max_ms": max(seen["ready"]),
            "all_p50_ms": percentile(both, 50), "all_p95_ms": percentile(both, 95),
            "all_max_ms": max(both),
            "noticed_p50_ms": percentile(noticed, 50) if noticed else None}


async def main(args: argparse.Namespace) -> None:
    runs: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    for rep in range(args.repeat):
        for tracked in ((False, True) if rep % 2 == 0 else (True, False)):
            runs[tracked].append(await trial(args.agents, args.idle, args.samples, tracked))

    def med(tracked: bool, key: str) -> float:
        return median([r[key] for r in runs[tracked] if r.get(key) is not None])

    off, on = med(False, "idle_cpu_pct"), med(True, "idle_cpu_pct")
    delay = runs[True][0]
    n = args.agents
    reps = f", medians of {args.repeat}" if args.repeat > 1 else ""
    print(f"{n} idle agents in tmux (bench/_screen_agent.sh), orchestrator CPU over "
          f"{args.idle:g} s{reps}:")
    print(fmt_row("untracked (`command` provider)", f"{off:.3f} %", "-"))
    print(fmt_row("tracked (kind claude)", f"{on:.3f} %", "-"))
    print(fmt_row("tracking adds", f"{on - off:+.3f} %",
                  "nothing measurable (TARGETS)"))
    ticks = f"{med(False, 'idle_cpu_pct_ticks'):.3f} / {med(True, 'idle_cpu_pct_ticks'):.3f} %"
    print(fmt_row("  10 ms ticks: untracked / tracked", ticks, "-"))
    print(fmt_row("  tmux server: untracked / tracked",
                  f"{med(False, 'tmux_idle_cpu_pct'):.3f} / {med(True, 'tmux_idle_cpu_pct'):.3f} %",
                  "-"))
    print(fmt_row("  spawned → up: untracked / tracked",
                  f"{med(False, 'all_up_seconds'):.2f} / {med(True, 'all_up_seconds'):.2f} s",
                  "-"))
    print(fmt_row("  RSS: untracked / tracked",
                  f"{med(False, 'rss_mb'):.1f} / {med(True, 'rss_mb'):.1f} MB", "-"))
    if args.samples:
        print(f"a line typed into the pane (send-keys) → `activity` at the relay, "
              f"{len(delay['busy_ms'])} agents one at a time (first run):")
        print(fmt_row("→ busy p50 / p95", f"{delay['busy_p50_ms']:.1f} / "
                      f"{delay['busy_p95_ms']:.1f} ms", "-"))
        print(fmt_row("→ busy max", f"{delay['busy_max_ms']:.1f} ms", "≤ 300 ms (TARGETS)"))
        print(fmt_row("→ ready p50 / max", f"{delay['ready_p50_ms']:.1f} / "
                      f"{delay['ready_max_ms']:.1f} ms", "≤ 300 ms (TARGETS)"))
        if delay["noticed_p50_ms"] is not None:
            print(fmt_row("  keys → orchestrator's log line, p50",
                          f"{delay['noticed_p50_ms']:.0f} ms", "- (log: ms stamps)"))
    path = write_json("activity", {
        "agents": n, "idle_window_seconds": args.idle, "repeat": args.repeat,
        "untracked": runs[False], "tracked": runs[True],
        "idle_cpu_pct_untracked": off, "idle_cpu_pct_tracked": on,
        "tracking_adds_pct": on - off,
        "targets": {"tracking_adds_pct": 0.0, "screen_change_to_report_ms": 300}})
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=200)
    ap.add_argument("--idle", type=float, default=30.0, help="idle window, seconds")
    ap.add_argument("--samples", type=int, default=20,
                    help="tracked agents whose screen is changed, one at a time (0: skip)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs of each kind, alternating (the delays: from the first)")
    trio.run(main, ap.parse_args())
