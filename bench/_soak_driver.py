"""Chaos soak: agent commands under a storm of faults, then the invariants.

The dev relay runs in this process (with a state file), one orchestrator as
a subprocess (``python -m orchestrator run``, ``--supervisor none``, plain
sessions, the ``command`` provider running ``tests/fake_agent.py``). Two
tasks run side by side:

- the **commands**: a random mix of ``agent.spawn/stop/restart/compact``
  over tens of agent ids, created at the relay;
- the **chaos**: at random, the relay is killed and started again from its
  state file on the same port, the orchestrator is SIGKILLed and started
  again, an agent is SIGKILLed, the relay answers 500 or hangs for a moment.

Then the storm stops, the orchestrator is given time to catch up, and the
invariants are checked (``SoakReport.violations`` lists every one broken):

1. every command is settled exactly once: none left pending or running; its
   outcome at the relay is the one the orchestrator journaled, and never
   changed once seen; the orchestrator never had an outcome refused;
2. no command was acted on twice: each spawn (``agent.spawn``, and each
   ``agent.restart``'s ``restartSpawn``, with its own ``spawnRequestId``)
   starts at most one process — every fake agent appends ``started <pid>``
   to a file named after its spawnRequestId; a refused spawn starts none;
3. every agent the relay believes running is running (alive, not a zombie),
   and no fake agent of this run runs that the relay does not know;
4. the journal and the relay agree (agents' status and pid; commands).

Used by ``bench/soak.py`` (minutes) and ``tests/test_soak.py`` (CI)::

    report = await run_soak(SoakConfig(seconds=20, seed=7, workdir=tmp))
    print(report.render()); assert not report.violations
"""

from __future__ import annotations

import collections
import json
import random
import sqlite3
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import trio

from bench._soak_procs import (
    ORCH_ID,
    TARGET,
    OrchestratorProcess,
    RelayHost,
    is_alive,
    kill_marked,
    marked_processes,
)
from orchestrator.devrelay._relay import DevRelay

ROOT = Path(__file__).resolve().parent.parent
FAKE_AGENT = ROOT / "tests" / "fake_agent.py"
TERMINAL = ("succeeded", "failed", "cancelled")
RECOVERED = "orchestrator restarted before completing"
MAX_PENDING = 60  # commands waiting at the relay before the command task waits too


@attrs.frozen(kw_only=True)
class SoakConfig:
    seconds: float  # how long the storm lasts
    seed: int
    workdir: Path
    agents: int = 24
    command_gap: tuple[float, float] = (0.01, 0.08)  # seconds between two commands
    chaos_gap: tuple[float, float] = (0.4, 2.0)  # seconds between two faults
    # Relative weights of the faults.
    chaos_weights: tuple[tuple[str, int], ...] = (
        ("relay_restart", 2), ("orchestrator_kill", 2), ("agent_crash", 4),
        ("relay_500", 2), ("relay_hang", 2),
    )
    catch_up: float = 40.0  # the bound on the orchestrator catching up afterwards
    heartbeat: float = 1.0
    say: Callable[[str], None] = lambda line: None


@attrs.define
class SoakReport:
    seed: int
    seconds: float
    commands: collections.Counter[str] = attrs.field(factory=collections.Counter)
    outcomes: collections.Counter[str] = attrs.field(factory=collections.Counter)
    faults: collections.Counter[str] = attrs.field(factory=collections.Counter)
    figures: dict[str, Any] = attrs.field(factory=dict)
    violations: list[str] = attrs.field(factory=list)

    def render(self) -> str:
        lines = [f"soak: seed {self.seed}, storm {self.seconds:.0f} s"]
        lines.append(f"  commands created     {sum(self.commands.values()):>6}  "
                     + ", ".join(f"{k} {v}" for k, v in sorted(self.commands.items())))
        lines.append("  outcomes             "
                     + ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items())))
        lines.append(f"  faults injected      {sum(self.faults.values()):>6}  "
                     + ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())))
        for key, value in self.figures.items():
            lines.append(f"  {key:<36} {value}")
        lines.append(f"  invariants broken    {len(self.violations):>6}")
        lines += [f"    - {v}" for v in self.violations[:40]]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"seed": self.seed, "seconds": self.seconds, "commands": dict(self.commands),
                "outcomes": dict(self.outcomes), "faults": dict(self.faults),
                "figures": self.figures, "violations": self.violations}


# -- the soak ------------------------------------------------------------------------------


@attrs.define
class _Issued:
    id: str
    type: str
    agent_id: str
    spawn_request_id: str | None  # of the spawn it asks for (spawn, restart)


class Soak:
    def __init__(self, config: SoakConfig, nursery: trio.Nursery) -> None:
        self.config = config
        self.nursery = nursery
        self.work = config.workdir
        self.records = self.work / "records"
        self.records.mkdir(parents=True, exist_ok=True)
        self.marker = f"soak-{uuid.uuid4().hex[:12]}"
        self.commands_rng = random.Random(config.seed)
        self.chaos_rng = random.Random(config.seed + 1)
        self.relay = RelayHost(nursery, self.work / "relay-state.json")
        self.orch: OrchestratorProcess | None = None
        self.issued: dict[str, _Issued] = {}
        self.first_outcome: dict[str, tuple[Any, ...]] = {}
        self.crashed_pids: set[int] = set()
        self.compared = 0
        self.report = SoakReport(seed=config.seed, seconds=config.seconds)
        self.agent_ids = [f"ag_soak_{i:02d}" for i in range(config.agents)]
        (self.work / "base").mkdir(parents=True, exist_ok=True)
        (self.work / "base" / "NOTES.md").write_text("soak notes\n")

    # -- commands --------------------------------------------------------------------

    def spawn_params(self, agent_id: str) -> dict[str, Any]:
        sp = f"sp_{uuid.uuid4().hex[:16]}"
        return {
            "action": "spawn", "provider": "command", "agentId": agent_id,
            "spawnRequestId": sp, "cwd": str((self.work / "base").resolve()),
            "label": agent_id, "tags": ["memory-reload:NOTES.md"],
            "providerArgs": [sys.executable, str(FAKE_AGENT), "--term", "exit",
                             "--print", self.marker],
            # The agent's start is counted in a file named after its spawnRequestId.
            "env": {"FAKE_AGENT_RECORD": str(self.records / f"{sp}.rec")},
            "requestedBy": "soak",
        }

    def next_command(self) -> tuple[str, dict[str, Any], str | None]:
        rng = self.commands_rng
        agent_id = rng.choice(self.agent_ids)
        kind = rng.choices(("agent.spawn", "agent.stop", "agent.restart", "agent.compact"),
                           (3, 2, 2, 2))[0]
        if kind == "agent.spawn":
            params = self.spawn_params(agent_id)
            return kind, params, params["spawnRequestId"]
        if kind == "agent.stop":
            return kind, {"agentId": agent_id, "timeoutMs": 3000}, None
        if kind == "agent.restart":
            spawn = self.spawn_params(agent_id)
            return kind, {"agentId": agent_id, "timeoutMs": 3000,
                          "restartSpawn": spawn}, spawn["spawnRequestId"]
        return kind, {"agentId": agent_id, "memory": {"alwaysReload": ["NOTES.md"]}}, None

    async def issue_commands(self, until: float) -> None:
        while trio.current_time() < until:
            relay = self.relay.relay
            if relay is None:
                with trio.move_on_at(until):
                    await self.relay.up.wait()
                continue
            if len(relay.commands(TARGET, "pending")) >= MAX_PENDING:
                with trio.move_on_after(0.5):
                    await relay.wait_for(
                        lambda r=relay: len(r.commands(TARGET, "pending")) < MAX_PENDING)
                continue
            kind, params, sp = self.next_command()
            command = relay.create_command(TARGET, kind, params, "soak")
            self.issued[command["id"]] = _Issued(command["id"], kind, params["agentId"], sp)
            self.report.commands[kind] += 1
            await trio.sleep(self.commands_rng.uniform(*self.config.command_gap))

    # -- chaos -----------------------------------------------------------------------

    async def chaos(self, until: float) -> None:
        rng = self.chaos_rng
        names = [name for name, _ in self.config.chaos_weights]
        weights = [weight for _, weight in self.config.chaos_weights]
        untried = rng.sample(names, len(names))  # every kind once first, then at random
        while True:
            await trio.sleep(rng.uniform(*self.config.chaos_gap))
            if trio.current_time() >= until:
                return
            fault = untried[0] if untried else rng.choices(names, weights)[0]
            if await getattr(self, f"_fault_{fault}")(rng):
                self.report.faults[fault] += 1
                if fault in untried:
                    untried.remove(fault)
            self.sweep_outcomes()

    async def _fault_relay_restart(self, rng: random.Random) -> bool:
        await self.relay.stop()
        await trio.sleep(rng.uniform(0.05, 1.0))  # down for a while
        await self.relay.start()
        return True

    async def _fault_orchestrator_kill(self, rng: random.Random) -> bool:
        assert self.orch is not None
        await self.orch.kill()
        await trio.sleep(rng.uniform(0.0, 1.0))
        await self.orch.start(self.nursery)
        return True

    async def _fault_agent_crash(self, rng: random.Random) -> bool:
        relay = self.relay.relay
        orch = relay.orchestrator(ORCH_ID) if relay is not None else None
        running = [a for a in (orch or {}).get("agents", []) if a.get("status") == "running"]
        if not running:
            return False
        pid = rng.choice(running).get("pid")
        if isinstance(pid, int) and kill_marked(pid, self.marker):
            self.crashed_pids.add(pid)
            return True
        return False

    async def _fault_relay_500(self, rng: random.Random) -> bool:
        return await self._fault_window(rng, "status", 500, None)

    async def _fault_relay_hang(self, rng: random.Random) -> bool:
        return await self._fault_window(rng, "hang", True, False)

    async def _fault_window(self, rng: random.Random, name: str, on: Any, off: Any) -> bool:
        relay = self.relay.relay
        if relay is None:
            return False
        setattr(relay.faults, name, on)
        await trio.sleep(rng.uniform(0.2, 1.5))
        setattr(relay.faults, name, off)
        return True

    def sweep_outcomes(self) -> None:
        """Remember each command's first outcome seen; any later change is a violation."""
        relay = self.relay.relay
        if relay is None:
            return
        for cid in self.issued:
            command = relay.get_command(cid)
            if command is None or command["status"] not in TERMINAL:
                continue
            outcome = (command["status"], json.dumps(command["result"], sort_keys=True),
                       command["error"])
            first = self.first_outcome.setdefault(cid, outcome)
            if first != outcome:
                self.report.violations.append(
                    f"command {cid} settled twice: first {first}, then {outcome}")
                self.first_outcome[cid] = outcome

    # -- the whole run ---------------------------------------------------------------

    async def run(self) -> SoakReport:
        cfg = self.config
        say = cfg.say
        await self.relay.start()
        self.orch = OrchestratorProcess(self.work, self.relay.url, cfg.heartbeat,
                                        provider={"compact_settle_seconds": 0.05})
        await self.orch.start(self.nursery)
        relay = self.relay.relay
        assert relay is not None
        with trio.fail_after(30):
            await relay.wait_for(lambda: relay.orchestrator(ORCH_ID) is not None)
        say(f"soak: seed {cfg.seed}, {cfg.agents} agent ids, storm {cfg.seconds:.0f} s, "
            f"work dir {self.work}")
        started = trio.current_time()
        until = started + cfg.seconds
        async with trio.open_nursery() as storm:
            storm.start_soon(self.issue_commands, until)
            storm.start_soon(self.chaos, until)
        say(f"soak: storm over: {sum(self.report.commands.values())} commands, "
            f"{sum(self.report.faults.values())} faults; catching up")
        await self.catch_up()
        self.check()
        return self.report

    async def catch_up(self) -> None:
        """Faults off, both up; bounded waits until everything has settled down."""
        assert self.orch is not None
        relay = self.relay.relay or await self.relay.start()
        relay.faults.status, relay.faults.hang = None, False
        if not self.orch.running:
            await self.orch.start(self.nursery)
        started = trio.current_time()
        deadline = started + self.config.catch_up
        remaining = set(self.issued)

        def all_settled() -> bool:
            for cid in list(remaining):
                command = relay.get_command(cid)
                if command is not None and command["status"] in TERMINAL:
                    remaining.discard(cid)
            return not remaining

        with trio.move_on_at(deadline):
            await relay.wait_for(all_settled)
        self.report.figures["catch-up: all settled after (s)"] = round(
            trio.current_time() - started, 2)
        # Agents' reports and the outbox come right behind: bounded polling.
        with trio.move_on_at(deadline):
            while self.agent_problems() or self.outbox_size():  # noqa: ASYNC110
                await trio.sleep(0.2)  # processes and a file: no event to wait on
        self.report.figures["catch-up: quiet after (s)"] = round(
            trio.current_time() - started, 2)
        self.sweep_outcomes()

    def outbox_size(self) -> int:
        assert self.orch is not None
        try:
            with self.orch.journal() as db:
                return int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])
        except sqlite3.Error:
            return -1

    def relay_agents(self) -> dict[str, dict[str, Any]]:
        relay = self.relay.relay
        assert relay is not None
        orch = relay.orchestrator(ORCH_ID) or {}
        return {a["agentId"]: a for a in orch.get("agents", [])}

    def agent_problems(self) -> list[str]:
        problems = []
        agents = self.relay_agents()
        known = set()
        for agent_id, agent in agents.items():
            status = agent.get("status")
            if status in ("starting", "stopping"):
                problems.append(f"agent {agent_id} still {status} at the end")
            if status == "running":
                known.add(agent.get("pid"))
                if not is_alive(agent.get("pid"), self.marker):
                    problems.append(f"relay believes {agent_id} running as pid "
                                    f"{agent.get('pid')}, which is not alive")
        for pid in marked_processes(self.marker):
            if pid not in known:
                problems.append(f"fake agent pid {pid} runs, and the relay does not know it"
                                f" ({self.origin(pid)})")
        return problems

    def origin(self, pid: int) -> str:
        """Which command started ``pid``, and how it ended (for a violation's text)."""
        relay = self.relay.relay
        for sp, pids in self.starts().items():
            if pid in pids:
                issued = next((i for i in self.issued.values() if i.spawn_request_id == sp),
                              None)
                if issued is None or relay is None:
                    return f"spawnRequestId {sp}"
                command = relay.get_command(issued.id) or {}
                agent = self.relay_agents().get(issued.agent_id, {})
                return (f"{issued.type} {issued.id} for {issued.agent_id}, {sp}: "
                        f"{command.get('status')} {command.get('result') or command.get('error')}"
                        f"; the relay has {issued.agent_id} {agent.get('status')} pid "
                        f"{agent.get('pid')} spawnRequestId {agent.get('spawnRequestId')}")
        return "no spawn recorded it"

    # -- the invariants --------------------------------------------------------------

    def starts(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for path in self.records.glob("*.rec"):
            pids = [int(line.split()[1]) for line in path.read_text().splitlines()
                    if line.startswith("started ")]
            out[path.stem] = pids
        return out

    def check(self) -> None:
        assert self.orch is not None
        relay = self.relay.relay
        assert relay is not None
        report, violations = self.report, self.report.violations
        # 1. settled, exactly once
        unsettled, recovered = [], 0
        for cid, issued in self.issued.items():
            command = relay.get_command(cid)
            status = command["status"] if command else "missing"
            report.outcomes[f"{issued.type} {status}"] += 1
            if status not in TERMINAL:
                unsettled.append(f"{cid} ({issued.type}) is {status}")
            elif status == "failed" and str(command["error"]).startswith(RECOVERED):
                recovered += 1
        violations += [f"command never settled: {u}" for u in unsettled]
        report.figures["settled by crash recovery"] = recovered
        refused = [m for m in self.orch.log_messages()
                   if "relay refused the outcome" in str(m.get("msg"))]
        violations += [f"orchestrator had an outcome refused: {m['msg']}" for m in refused]
        # 2. acted on at most once
        starts = self.starts()
        by_spawn = {i.spawn_request_id: i for i in self.issued.values() if i.spawn_request_id}
        total = sum(len(pids) for pids in starts.values())
        report.figures["agent processes started"] = total
        report.figures["spawn requests started twice"] = sum(len(p) > 1 for p in starts.values())
        no_start = 0
        for sp, issued in by_spawn.items():
            pids = starts.get(sp, [])
            command = relay.get_command(issued.id) or {}
            if len(pids) > 1:
                violations.append(f"{issued.type} {issued.id} ({sp}) started {len(pids)} "
                                  f"processes: {pids}")
            if command.get("status") == "failed" and pids and not str(
                    command.get("error")).startswith(RECOVERED):
                violations.append(f"{issued.type} {issued.id} failed "
                                  f"({command.get('error')}) yet started pid {pids}")
            if command.get("status") == "succeeded":
                pid = (command.get("result") or {}).get("pid")
                if pids and pid not in pids:
                    violations.append(f"{issued.type} {issued.id} reported pid {pid}, "
                                      f"but pid {pids} started for {sp}")
                if not pids:
                    no_start += 1  # ended (stopped or crashed) before it could say so
        report.figures["succeeded spawns ended before their first line"] = no_start
        # 3. the relay's belief and the processes agree
        problems = self.agent_problems()
        violations += problems
        agents = self.relay_agents()
        statuses = collections.Counter(a.get("status") for a in agents.values())
        report.figures["agents at the end (relay)"] = dict(sorted(statuses.items()))
        report.figures["fake agents alive at the end"] = len(marked_processes(self.marker))
        report.figures["agents crashed by chaos"] = len(self.crashed_pids)
        # 4. the journal and the relay agree
        violations += self.journal_disagreements(relay, agents)
        report.figures["orchestrator starts"] = self.orch.starts
        if self.orch.unexpected_exits:
            violations.append(f"orchestrator exited by itself: {self.orch.unexpected_exits}")
        report.figures["outcomes compared with the journal"] = self.compared
        self.sweep_outcomes()

    def journal_disagreements(self, relay: DevRelay,
                              agents: dict[str, dict[str, Any]]) -> list[str]:
        assert self.orch is not None
        out = []
        with self.orch.journal() as db:
            records = {r[0]: json.loads(r[1]) for r in
                       db.execute("SELECT agent_id, record FROM agents")}
            rows = db.execute("SELECT id, type, state, outcome FROM commands").fetchall()
            outbox = int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])
        if outbox:
            out.append(f"journal outbox still holds {outbox} items")
        for agent_id, record in records.items():
            mine = record.get("agent", {})
            theirs = agents.get(agent_id)
            if theirs is None:
                out.append(f"journal knows agent {agent_id}, the relay does not")
            elif (mine.get("status"), mine.get("pid")) != (theirs.get("status"),
                                                           theirs.get("pid")):
                out.append(f"agent {agent_id}: journal {mine.get('status')}/{mine.get('pid')}, "
                           f"relay {theirs.get('status')}/{theirs.get('pid')}")
        out += [f"relay knows agent {a}, the journal does not" for a in agents
                if a not in records]
        compared = 0
        for cid, ctype, state, outcome_text in rows:
            if cid not in self.issued:
                continue
            if state in ("claiming", "claimed", "done"):
                out.append(f"journal: command {cid} ({ctype}) left {state}")
                continue
            command = relay.get_command(cid)
            if state != "settled" or outcome_text is None or command is None:
                continue
            outcome = json.loads(outcome_text)
            compared += 1
            if outcome.get("status") != command["status"] or (
                    outcome.get("result") if command["status"] == "succeeded"
                    else outcome.get("error")) != (
                    command["result"] if command["status"] == "succeeded"
                    else command["error"]):
                out.append(f"command {cid}: journal says {outcome}, relay says "
                           f"{command['status']} {command['result'] or command['error']}")
        self.compared = compared
        return out

    async def teardown(self) -> None:
        """SIGTERM the orchestrator; SIGKILL this run's fake agents by pid; stop the relay."""
        if self.orch is not None:
            code = await self.orch.terminate()
            self.report.figures["orchestrator exit code on SIGTERM"] = code
        pids = {pid for pids in self.starts().values() for pid in pids}
        pids |= set(marked_processes(self.marker))
        killed = sum(kill_marked(pid, self.marker) for pid in sorted(pids))
        self.report.figures["fake agents killed at teardown"] = killed
        await self.relay.stop()


async def run_soak(config: SoakConfig) -> SoakReport:
    """One soak, from nothing to the report; everything it started is ended."""
    async with trio.open_nursery() as nursery:
        soak = Soak(config, nursery)
        try:
            report = await soak.run()
        finally:
            with trio.CancelScope(shield=True):
                await soak.teardown()
        nursery.cancel_scope.cancel()
    return report


def default_workdir(prefix: str = "relay-soak-") -> Path:
    """A new scratch dir under ``bench/.work`` (not /tmp: see ``bench/_common.py``)."""
    import tempfile

    from bench._common import WORK

    WORK.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=WORK))


__all__ = ["SoakConfig", "SoakReport", "default_workdir", "run_soak"]
