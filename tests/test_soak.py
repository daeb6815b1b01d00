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
from pathlib import Path

import trio

from bench._soak_driver import SoakConfig, run_soak

SEED = int(os.environ.get("RELAY_SOAK_SEED", "20261127"))
STORM = 20.0  # seconds of faults; the catch-up after it is bounded by CATCH_UP
CATCH_UP = 25.0


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
