"""The chaos soak, CI-sized (under a minute): ``bench/soak.py`` runs it for minutes.

One dev relay (with a state file) and one orchestrator subprocess take a
random mix of spawn/stop/restart/compact commands over tens of agents while
the relay is killed and restarted from its state file, the orchestrator is
SIGKILLed and restarted, agents are crashed, and the relay answers 500 or
hangs. Every invariant of ``bench/_soak_driver.py`` must hold afterwards.

The seed is fixed (``RELAY_SOAK_SEED`` overrides it) and printed with the
report, so a failure can be replayed: ``python bench/soak.py --seed N``.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest
import trio

from actors import CommandRejected
from bench._soak_driver import SoakConfig, run_soak

SEED = int(os.environ.get("RELAY_SOAK_SEED", "20261127"))
STORM = 20.0  # seconds of faults; the catch-up after it is bounded by CATCH_UP
CATCH_UP = 30.0  # reconnect backoff may have reached its 15 s cap in the storm


@pytest.mark.slow  # a real-time storm of its own length
async def test_chaos_soak_loses_nothing_and_acts_once(tmp_path: Path) -> None:
    config = SoakConfig(seconds=STORM, seed=SEED, workdir=tmp_path, agents=20,
                        catch_up=CATCH_UP, chaos_gap=(0.3, 1.5), say=print)
    with trio.fail_after(STORM + CATCH_UP + 40):
        report = await run_soak(config)
    text = report.render()
    print(text)
    assert not report.violations, text
    # The storm really happened: commands of every kind, and faults of every kind.
    assert set(report.commands) == {"agent.spawn", "agent.stop", "agent.restart",
                                    "agent.compact"}, text
    assert sum(report.commands.values()) >= 150, text
    assert report.faults["relay_restart"] and report.faults["orchestrator_kill"], text
    assert report.faults["agent_crash"], text
    assert report.faults["relay_500"] + report.faults["relay_hang"], text
    assert report.figures["agent processes started"] > 0, text
    assert report.figures["orchestrator exit code on SIGTERM"] == 0, text


class _CrashAfterStart:
    """A launcher whose caller dies right after the start, before any record
    (what a SIGKILL of the orchestrator at that moment leaves behind)."""

    def __init__(self) -> None:
        self.pids: list[int] = []

    async def launch(self, spec: Any) -> Any:
        from supervisors._launch import DirectLauncher

        launched = await DirectLauncher().launch(spec)
        self.pids.append(launched.pid)
        raise RuntimeError("the orchestrator died here")


class _Reports:
    def agent_changed(self, agent: dict[str, Any]) -> None:
        pass


async def test_an_agent_started_but_never_recorded_is_ended_by_the_next_orchestrator(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """A soak find: a crash between an agent's start and its record left a
    process nobody knew, running for ever beside the agent's next start."""
    from actors import AgentFleet, FleetConfig, MemoryStore, provider_config_from_table
    from supervisors._launch import DirectLauncher

    from .conftest import FAKE_AGENT

    (tmp_path / "base").mkdir()
    config = FleetConfig(
        base_dir=tmp_path / "base", state_dir=tmp_path / "state",
        providers={"command": provider_config_from_table(
            "command", {"enabled": True, "session": "plain"})})
    store, crashing = MemoryStore(), _CrashAfterStart()
    params = {"provider": "command", "agentId": "ag_orphan",
              "providerArgs": [sys.executable, FAKE_AGENT, "--term", "ignore"]}

    async def serve(fleet: AgentFleet, scope: trio.CancelScope, *,
                    task_status: trio.TaskStatus[None]) -> None:
        with scope:
            await fleet.run(task_status=task_status)

    first, first_scope = AgentFleet(config, store=store, reporter=_Reports(),
                                    launcher=crashing), trio.CancelScope()
    await nursery.start(serve, first, first_scope)
    with pytest.raises(CommandRejected):
        await first.execute("agent.spawn", params, "cmd_1")
    first_scope.cancel()
    [orphan] = crashing.pids
    assert psutil.Process(orphan).status() != psutil.STATUS_ZOMBIE

    second = AgentFleet(config, store=store, reporter=_Reports(), launcher=DirectLauncher())
    second_scope, started = trio.CancelScope(), [orphan]
    try:
        await nursery.start(serve, second, second_scope)  # adoption ends the orphan
        assert await _ended(orphan) == signal.SIGKILL  # our child here: reaped by us
        # and the agent can be started again, and stopped
        result = await second.execute("agent.spawn", params, "cmd_2")
        started.append(result["pid"])
        await second.execute("agent.stop", {"agentId": "ag_orphan", "graceful": False}, "cmd_3")
        await _ended(result["pid"])  # reaped by the fleet
    finally:
        second_scope.cancel()
        for pid in started:  # whatever went wrong: our own agents, by pid
            _kill_if_ours(pid, tmp_path)


async def _ended(pid: int) -> int | None:
    """Wait (bounded) until ``pid`` has ended; reap it if nobody did; its signal, if known."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None  # ended, and reaped already
    try:
        with trio.fail_after(10):
            await trio.lowlevel.wait_readable(pidfd)
    finally:
        os.close(pidfd)
    try:
        _, status = os.waitpid(pid, os.WNOHANG)  # noqa: ASYNC222 - it has ended
    except ChildProcessError:
        return None
    return os.WTERMSIG(status) if os.WIFSIGNALED(status) else None


def _kill_if_ours(pid: int, tmp_path: Path) -> None:
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE or not proc.cwd().startswith(str(tmp_path)):
            return
        proc.kill()
        proc.wait(5)
    except psutil.Error:
        pass
