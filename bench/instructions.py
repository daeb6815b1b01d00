"""Instructions the orchestrator executes per agent: spawn, then stop (callgrind).

    python bench/instructions.py [--agents 100] [--repeat 3]

Wall-clock figures on a shared 2-core VM move by ±40 % from one run to the
next; instruction counts move by a few percent, so a change of 5-10 % in
the orchestrator's own work shows here when the timed benches cannot see
it. The orchestrator runs under ``valgrind --tool=callgrind`` with
collection off; it is switched on (``callgrind_control -i on``) only while
N ``agent.spawn`` commands go from created at the dev relay (in this
process) to settled, then again for their ``orchestrator.shutdown`` until
every agent is reported stopped. Counts are of the orchestrator's process
alone (its user-space instructions: not the kernel's work in its system
calls, nor the agents', nor the relay's). Under valgrind the daemon runs
some 50 times slower, so its periodic work (the status file, once a second)
weighs more than in a real run. Prints the median of ``--repeat`` runs per
agent and writes bench/results/instructions.json. Needs valgrind.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import fmt_row, start_orchestrator, write_json  # noqa: E402
from orchestrator.devrelay._relay import serve_dev_relay  # noqa: E402

TOKEN = "bench-token"
TARGET = "orch:orch-bench"


def agents(relay: object) -> list[dict[str, object]]:
    return (relay.orchestrator("orch-bench") or {}).get("agents") or []  # type: ignore[attr-defined]


def control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], capture_output=True, check=True, timeout=60)


def totals(out: Path) -> dict[str, int]:
    """Instructions per dump part, by the name the dump was given."""
    found = {}
    for part in out.parent.glob(out.name + ".*"):
        text = part.read_text(errors="replace")
        name = next(line.split("Trigger: dump ", 1)[1] for line in text.splitlines()
                    if "Trigger: dump " in line)
        found[name] = int(next(line.split()[1] for line in text.splitlines()
                               if line.startswith("totals:")))
    return found


async def one_run(n: int, scratch: Path) -> dict[str, int]:
    sleep = shutil.which("sleep") or "/bin/sleep"
    out = scratch / "callgrind.out"
    wrapper = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
               f"--callgrind-out-file={out}"]
    async with trio.open_nursery() as nursery:
        relay = await nursery.start(lambda task_status: serve_dev_relay(
            token=TOKEN, task_status=task_status))
        proc, work = start_orchestrator(relay.url, TOKEN, wrapper=wrapper)
        pid = str(proc.pid)
        try:
            with trio.fail_after(300):
                await relay.wait_for(lambda: (relay.orchestrator("orch-bench") or {})
                                     .get("status") == "online")
            base = str((work / "base").resolve())
            control("-i", "on", pid)
            commands = [relay.create_command(TARGET, "agent.spawn", {
                "provider": "command", "agentId": f"ag_{i}", "cwd": base,
                "providerArgs": [sleep, "1000"]}) for i in range(n)]
            with trio.fail_after(900):
                await relay.wait_for(lambda: all(
                    relay.get_command(c["id"])["status"] == "succeeded" for c in commands))
            control("-i", "off", pid)
            control("-d", "spawn", pid)
            control("-z", pid)
            control("-i", "on", pid)
            relay.create_command(TARGET, "orchestrator.shutdown", {})
            with trio.fail_after(900):
                await relay.wait_for(lambda: sum(a.get("status") == "stopped"
                                                 for a in agents(relay)) == n)
            control("-i", "off", pid)
            control("-d", "stop", pid)
        finally:
            proc.terminate()
            proc.wait(60)
            shutil.rmtree(work, ignore_errors=True)
            nursery.cancel_scope.cancel()
    return totals(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if not shutil.which("valgrind") or not shutil.which("callgrind_control"):
        sys.exit("bench/instructions.py needs valgrind (apt-get install valgrind)")
    runs = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="relay-callgrind-") as scratch:
            runs.append(trio.run(one_run, args.agents, Path(scratch)))
    per_agent = {phase: statistics.median(r[phase] for r in runs) / args.agents
                 for phase in ("spawn", "stop")}
    print(f"orchestrator instructions per agent, {args.agents} agents, "
          f"median of {args.repeat} runs (callgrind):")
    print(fmt_row("spawn (created → settled)", f"{per_agent['spawn'] / 1e6:.2f} M", "–"))
    print(fmt_row("stop (shutdown → all stopped)", f"{per_agent['stop'] / 1e6:.2f} M", "–"))
    path = write_json("instructions", {"agents": args.agents, "runs": runs,
                                       "per_agent": per_agent})
    print(f"  wrote {path.relative_to(Path(__file__).resolve().parent.parent)}")


if __name__ == "__main__":
    main()
