"""Self-upgrade under a real ``systemd --user``: command → succeeded, time off the bus.

Run as root (it uses the systemd sandbox of ``.ci/systemd-sandbox.sh``, starting
it when it is not up, and runs everything else as the sandbox's test user):

    python bench/upgrade.py [--runs 3] [--agents 3] [--heartbeat 10]

What it does: builds wheels of this checkout at A (the checkout's version)
and A+1 … A+runs, with the dependencies in a local index (pip stays on this
machine); serves the dev relay in this process on 127.0.0.1; the test user
installs the service (``install --systemd --runtime-root``) at A; spawns
``--agents`` agents (``sleep``); then upgrades one version at a time through
the relay's action route. For each upgrade:

- end to end: the action's command created → ``succeeded`` at the relay;
- off the bus (PROTOCOL.md 5): the old process's last accepted heartbeat →
  the new process's first accepted registration, by the relay's own stamps;
- agents restarted: agents whose pid changed or that are gone;
- where the time went, from the orchestrators' own log lines (venv, pip,
  verify, restart → registered).

Prints the figures beside the targets (TARGETS.md, issue 6) and writes
bench/results/upgrade.json. Cleans up what it made: the service, the agents'
units, its files.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import fmt_row, write_json  # noqa: E402
from orchestrator.devrelay._relay import serve_dev_relay  # noqa: E402
from tests.system.sandbox import (  # noqa: E402
    ServiceLayout,
    UserHost,
    alive,
    build_wheelhouse,
    bump,
    checkout_version,
    manager_log_lines,
    sandbox_user,
    service_slot,
    spawn_params,
    unit_of,
)

TOKEN = f"bench-{uuid.uuid4().hex}"
TARGET_END_TO_END = 10.0
TARGET_OFF_BUS = 2.0  # issue 6; TARGETS.md asks ≤ 1 s
TARGET_OFF_BUS_STRICT = 1.0


class BusWatch:
    """Every accepted heartbeat and registration of one orchestrator, by the relay's stamps."""

    def __init__(self, relay: Any, orch_id: str) -> None:
        self.relay = relay
        self.orch_id = orch_id
        self.events: list[tuple[str, int, int, str]] = []  # (kind, ms, pid, version)
        self._recorded = trio.Event()

    async def run(self) -> None:
        seen = (0, 0)
        while True:
            await self.relay.wait_for(lambda seen=seen: self._counts() != seen)
            orch = self.relay.orchestrator(self.orch_id) or {}
            registrations, heartbeats = self._counts()
            if registrations > seen[0]:
                self.events.append(("register", orch["registeredAt"], orch["pid"],
                                    orch["version"]))
            elif heartbeats > seen[1]:
                self.events.append(("heartbeat", orch["lastHeartbeatAt"], orch["pid"],
                                    orch["version"]))
            seen = (registrations, heartbeats)
            self._recorded.set()
            self._recorded = trio.Event()

    async def wait_off_bus(self, old_pid: int, new_pid: int) -> float:
        while (seconds := self.off_bus(old_pid, new_pid)) is None:
            await self._recorded.wait()
        return seconds

    def _counts(self) -> tuple[int, int]:
        orch = self.relay.orchestrator(self.orch_id) or {}
        return orch.get("registrations", 0), orch.get("heartbeats", 0)

    def off_bus(self, old_pid: int, new_pid: int) -> float | None:
        """Seconds from the old process's last heartbeat to the new one's registration."""
        last_beat = None
        for kind, ms, pid, _ in self.events:
            if pid == old_pid and kind in ("heartbeat", "register"):
                last_beat = ms
            if pid == new_pid and kind == "register" and last_beat is not None:
                return (ms - last_beat) / 1000
        return None


def breakdown(lines: list[dict[str, Any]], *, since: float, target: str, orch_id: str,
              root: Path, command_id: str) -> dict[str, float | None]:
    """Where an upgrade's time went, from this orchestrator's own log lines.

    The manager's output is shared with whatever else runs as the test user:
    only lines naming this service's runtime root, id or command count.
    """

    def first(pred: Any) -> float | None:
        for record in lines:
            msg = str(record.get("msg", ""))
            if pred(msg, record):
                return float(record["ts"])
        return None

    marks = {
        "created": since,
        "pip": first(lambda m, r: m.startswith("pip install") and str(root) in m),
        "verify": first(lambda m, r: m.startswith("verify") and str(root) in m),
        "restart": first(lambda m, r: r.get("commandId") == command_id
                         and m.startswith(f"version {target} installed; restarting")),
        "stopped": first(lambda m, r: m == f"orchestrator {orch_id} stopped; agents left running"),
        "registered": first(lambda m, r: m.startswith("registered with relay")
                            and f" as orch:{orch_id} (version {target})" in m),
    }

    def span(a: str, b: str) -> float | None:
        start, end = marks[a], marks[b]
        return None if start is None or end is None else round(end - start, 3)

    return {
        "claim, create venv": span("created", "pip"),
        "pip install": span("pip", "verify"),
        "verify, switch": span("verify", "restart"),
        "old process stops": span("restart", "stopped"),
        "stopped → new one registered": span("stopped", "registered"),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    version_a = checkout_version()
    targets = [bump(version_a, i) for i in range(1, args.runs + 1)]
    with sandbox_user() as user, service_slot(user):
        host = UserHost(user)
        dest = user.home / "relay-tests" / f"bench-wheels-{uuid.uuid4().hex[:8]}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        layout: ServiceLayout | None = None
        agent_units: list[str] = []
        installed = False
        try:
            print(f"building wheels {version_a} … {targets[-1]} …", flush=True)
            wheels = build_wheelhouse(dest, {v: None for v in [version_a, *targets]})
            layout = ServiceLayout.create(host, "bench-upgrade", TOKEN)
            async with trio.open_nursery() as nursery:
                relay = await nursery.start(lambda task_status: serve_dev_relay(
                    token=TOKEN, offline_after=3 * args.heartbeat + 5, task_status=task_status))
                print(f"installing {version_a} as {user.name} (runtime prefix) …", flush=True)
                with trio.fail_after(300):
                    await host.cli("install", "--systemd",
                                   *layout.install_flags(relay.url, heartbeat=args.heartbeat),
                                   *layout.runtime_flags(wheels))
                installed = True
                watch = BusWatch(relay, layout.orch_id)
                nursery.start_soon(watch.run)
                agents = await spawn_agents(relay, layout, args.agents)
                agent_units = [u for u in (unit_of(pid) for pid in agents.values()) if u]
                runs = []
                for target in targets:
                    runs.append(await one_upgrade(relay, host, layout, watch, agents, target))
                    r = runs[-1]
                    print(f"  {r['from']} -> {r['to']}: {r['endToEnd']:.2f} s end to end, "
                          f"{r['offBus']:.3f} s off the bus, {r['agentsRestarted']} agents "
                          f"restarted", flush=True)
                nursery.cancel_scope.cancel()
        finally:
            with trio.move_on_after(60):
                if installed:
                    await host.cli("uninstall", check=False)
                await host.stop_units(agent_units)
            if layout is not None:
                shutil.rmtree(layout.work, ignore_errors=True)
            shutil.rmtree(dest, ignore_errors=True)
    return report(args, runs)


async def spawn_agents(relay: Any, layout: ServiceLayout, count: int) -> dict[str, int]:
    target = f"orch:{layout.orch_id}"
    ids = [relay.create_command(target, "agent.spawn",
                                spawn_params(layout.base_dir, ["sleep", "1000"]))["id"]
           for _ in range(count)]

    def settled() -> bool:
        return all((relay.get_command(i) or {}).get("status") in ("succeeded", "failed")
                   for i in ids)

    with trio.fail_after(60):
        await relay.wait_for(settled)
    agents = {}
    for command_id in ids:
        command = relay.get_command(command_id) or {}
        if command.get("status") != "succeeded":
            raise SystemExit(f"an agent did not start: {command}")
        agents[command["result"]["agentId"]] = command["result"]["pid"]
    return agents


async def one_upgrade(relay: Any, host: UserHost, layout: ServiceLayout, watch: BusWatch,
                      agents: dict[str, int], target: str) -> dict[str, Any]:
    orch = relay.orchestrator(layout.orch_id) or {}
    old_pid, old_version = orch["pid"], orch["version"]
    wall0 = time.time()
    t0 = trio.current_time()
    async with httpx.AsyncClient(base_url=relay.url,
                                 headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        answer = await client.post(f"/api/orchestrators/{layout.orch_id}/action",
                                   json={"action": "upgrade", "targetVersion": target})
    if answer.status_code != 202:
        raise SystemExit(f"the relay refused the upgrade: {answer.status_code} {answer.text}")
    command_id = answer.json()["id"]

    def settled() -> bool:
        return (relay.get_command(command_id) or {}).get("status") in ("succeeded", "failed")

    with trio.fail_after(120):
        await relay.wait_for(settled)
    end_to_end = trio.current_time() - t0
    command = relay.get_command(command_id) or {}
    if command.get("status") != "succeeded":
        raise SystemExit(f"upgrade to {target} failed: {command.get('error')}\n"
                         + host.log_tail())
    # The new process: registered (that settled it); its pid is the relay's.
    new_pid = (relay.orchestrator(layout.orch_id) or {})["pid"]
    try:
        with trio.fail_after(10):
            off_bus = await watch.wait_off_bus(old_pid, new_pid)
    except trio.TooSlowError:
        raise SystemExit(f"no registration of {new_pid} after a heartbeat of {old_pid}: "
                         f"{watch.events}") from None
    reported = {a["agentId"]: a["pid"]
                for a in (relay.orchestrator(layout.orch_id) or {}).get("agents", [])
                if a.get("status") == "running"}
    restarted = sum(1 for agent, pid in agents.items()
                    if reported.get(agent) != pid or not alive(pid))
    with trio.fail_after(30):
        main_pid = await host.main_pid()
    assert main_pid == new_pid, "the unit's main process is not the registered one"
    lines = manager_log_lines(host.user, wall0, time.time() + 1)
    return {
        "from": old_version,
        "to": target,
        "endToEnd": round(end_to_end, 3),
        "relayCreatedToSettledMs": command["updatedAt"] - command["createdAt"],
        "offBus": off_bus,
        "agentsRestarted": restarted,
        "breakdown": breakdown(lines, since=wall0, target=target, orch_id=layout.orch_id,
                               root=layout.runtime_root, command_id=command_id),
    }


def report(args: argparse.Namespace, runs: list[dict[str, Any]]) -> dict[str, Any]:
    e2e = statistics.median(r["endToEnd"] for r in runs)
    off = statistics.median(r["offBus"] for r in runs)
    worst_off = max(r["offBus"] for r in runs)
    restarted = sum(r["agentsRestarted"] for r in runs)
    print(f"\nself-upgrade, {args.runs} upgrades, {args.agents} agents, "
          f"heartbeat {args.heartbeat:g} s (median of runs)")
    print(fmt_row("command → succeeded", f"{e2e:.2f} s", f"≤ {TARGET_END_TO_END:g} s"))
    print(fmt_row("off the bus", f"{off:.3f} s",
                  f"≤ {TARGET_OFF_BUS:g} s (issue 6), ≤ {TARGET_OFF_BUS_STRICT:g} s (TARGETS.md)"))
    print(fmt_row("off the bus, worst run", f"{worst_off:.3f} s", f"≤ {TARGET_OFF_BUS:g} s"))
    print(fmt_row("agents restarted (all runs)", str(restarted), "0"))
    keys = list(runs[0]["breakdown"])
    print("  where the time went (median):")
    for key in keys:
        values = [r["breakdown"][key] for r in runs if r["breakdown"][key] is not None]
        shown = f"{statistics.median(values):.2f} s" if values else "-"
        print(f"    {key:<36} {shown:>14}")
    data = {
        "runs": runs,
        "agents": args.agents,
        "heartbeatInterval": args.heartbeat,
        "endToEndMedian": e2e,
        "offBusMedian": off,
        "offBusWorst": worst_off,
        "agentsRestarted": restarted,
        "targets": {"endToEnd": TARGET_END_TO_END, "offBus": TARGET_OFF_BUS,
                    "offBusTargetsMd": TARGET_OFF_BUS_STRICT, "agentsRestarted": 0},
        "met": {"endToEnd": e2e <= TARGET_END_TO_END, "offBus": worst_off <= TARGET_OFF_BUS,
                "agentsRestarted": restarted == 0},
    }
    path = write_json("upgrade", data)
    print(f"\nwrote {path}")
    return data


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="upgrades, one after another")
    parser.add_argument("--agents", type=int, default=3)
    parser.add_argument("--heartbeat", type=float, default=10.0,
                        help="the orchestrator's heartbeat interval (default: its default)")
    trio.run(main, parser.parse_args())
