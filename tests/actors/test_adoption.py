"""A new orchestrator process takes over the agents the last one left running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

import psutil
import pytest
import trio

from actors import CommandRejected

from .conftest import Harness, wait_dead


async def test_a_second_fleet_adopts_running_agents_and_sees_dead_ones(harness: Harness) -> None:
    first = await harness.start()
    keep, doomed = harness.record("keep"), harness.record("doomed")
    kept = await first.execute(
        "agent.spawn", harness.spawn("--term", "exit", record=keep, agentId="ag_keep"), "c1"
    )
    lost = await first.execute("agent.spawn", harness.spawn(record=doomed, agentId="ag_lost"), "c2")
    await keep.started()
    await doomed.started()
    await harness.stop(first)  # the orchestrator goes away; its agents stay
    assert psutil.Process(kept["pid"]).status() != psutil.STATUS_ZOMBIE
    os.kill(lost["pid"], signal.SIGKILL)  # dies while no one watches (a zombie of ours)
    await wait_dead(lost["pid"])
    mark = harness.reporter.mark()

    second = await harness.start()
    agents = {agent["agentId"]: agent for agent in second.agents()}
    assert agents["ag_keep"]["status"] == "running"
    assert agents["ag_keep"]["pid"] == kept["pid"]
    assert agents["ag_lost"]["status"] == "exited"
    assert agents["ag_lost"]["exit"]["signal"] == "SIGKILL"  # reaped: it was our child
    assert harness.reporter.statuses("ag_lost", mark) == ["exited"]
    # Compact still reaches the adopted agent through its FIFO.
    (harness.base / "NOTES.md").write_text("carry on")
    result = await second.execute(
        "agent.compact", {"agentId": "ag_keep", "memory": {"alwaysReload": ["NOTES.md"]}}, "c3"
    )
    assert result == {"agentId": "ag_keep", "compacted": None, "reloaded": ["NOTES.md"]}
    assert await keep.lines(3) == ["/compact", "@NOTES.md", "carry on"]
    # And its exit is watched.
    os.kill(kept["pid"], signal.SIGKILL)
    report = await harness.reporter.wait_for("ag_keep", "exited", since=mark)
    assert report["pid"] == kept["pid"]


async def test_adopted_agents_can_be_stopped_and_restarted(harness: Harness) -> None:
    first = await harness.start()
    record = harness.record()
    spawned = await first.execute(
        "agent.spawn", harness.spawn("--term", "exit", record=record, agentId="ag_a"), "c1"
    )
    await record.started()
    await harness.stop(first)
    second = await harness.start()
    result = await second.execute("orchestrator.restart", {}, "c2")
    assert result == {"restarted": ["ag_a"]}
    assert await record.line() == "term"
    new_pid = await record.started()
    assert new_pid != spawned["pid"]
    await harness.stop(second)
    third = await harness.start()
    assert third.agents()[0]["pid"] == new_pid
    assert third.agents()[0]["restartCount"] == 1
    assert await third.execute("agent.stop", {"agentId": "ag_a"}, "c3") == {
        "agentId": "ag_a",
        "exitCode": 0,
        "signal": None,
    }


def _forge(
    harness: Harness, agent_id: str, process: dict[str, Any], status: str = "running"
) -> None:
    """A stored record as an earlier orchestrator would have left it."""
    harness.store.save_agent(
        agent_id,
        {
            "version": 1,
            "agent": {
                "agentId": agent_id,
                "provider": "command",
                "status": status,
                "pid": process["pid"],
                "cwd": str(harness.base),
                "restartCount": 0,
                "startedAt": 1,
                "lastSpawnAt": 1,
            },
            "params": harness.spawn(agentId=agent_id),
            "process": process,
            "session": {
                "kind": "plain",
                "fifo": str(harness.tmp / f"{agent_id}.none"),
                "log": str(harness.tmp / f"{agent_id}.log"),
                "unit": None,
            },
        },
    )


async def test_a_reused_pid_is_never_mistaken_for_the_agent(harness: Harness) -> None:
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)  # noqa: ASYNC220
    try:
        created = psutil.Process(bystander.pid).create_time()
        # Same pid, another start time: pid reuse.
        _forge(
            harness,
            "ag_old",
            {"pid": bystander.pid, "createTime": created - 100, "cmdline": ["sleep", "60"]},
        )
        # Same pid and start time, another program: not the agent either.
        _forge(
            harness,
            "ag_other",
            {"pid": bystander.pid, "createTime": created, "cmdline": ["claude", "--x"]},
        )
        # A stop in progress when the last orchestrator went: it ended as asked.
        _forge(
            harness,
            "ag_stopping",
            {"pid": bystander.pid, "createTime": 5.0, "cmdline": ["x"]},
            "stopping",
        )
        # Our own test process: alive, but surely not the agent.
        _forge(harness, "ag_self", {"pid": os.getpid(), "createTime": 5.0, "cmdline": ["python"]})
        fleet = await harness.start()
        agents = {agent["agentId"]: agent for agent in fleet.agents()}
        assert {name: agent["status"] for name, agent in agents.items()} == {
            "ag_old": "exited",
            "ag_other": "exited",
            "ag_stopping": "stopped",
            "ag_self": "exited",
        }
        assert agents["ag_old"]["exit"] == {
            "exitCode": None,
            "signal": None,
            "lastOutput": "",
            "at": agents["ag_old"]["exit"]["at"],
        }
        with pytest.raises(CommandRejected, match="^agent is not running: ag_old"):
            await fleet.execute("agent.compact", {"agentId": "ag_old"}, "c1")
        assert bystander.poll() is None  # never signalled
        await fleet.execute("orchestrator.shutdown", {}, "c2")
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


async def test_the_same_store_record_identity_matches_after_retitling(harness: Harness) -> None:
    """A program that rewrites its argv (``claude`` does) is still recognised."""
    script = harness.tmp / "retitle.py"
    script.write_text(
        "import sys, ctypes\n"
        "sys.stdout.write('ok\\n'); sys.stdout.flush()\n"
        "libc = ctypes.CDLL(None)\n"
        "libc.prctl(15, b'retitled', 0, 0, 0)\n"
        "import time; time.sleep(60)\n"
    )
    first = await harness.start()
    spawned = await first.execute(
        "agent.spawn",
        {"provider": "command", "providerArgs": [sys.executable, str(script)], "agentId": "ag_t"},
        "c1",
    )
    await harness.stop(first)
    second = await harness.start()
    assert second.agents()[0]["status"] == "running"
    assert second.agents()[0]["pid"] == spawned["pid"]


@pytest.mark.slow
async def test_tmux_agents_are_adopted_too(harness: Harness) -> None:
    config = harness.config(session="tmux")
    first = await harness.start(config)
    keep, doomed = harness.record("keep"), harness.record("doomed")
    kept = await first.execute("agent.spawn", harness.spawn(record=keep, agentId="ag_tk"), "c1")
    lost = await first.execute(
        "agent.spawn", harness.spawn("--print", "last words", record=doomed, agentId="ag_tl"), "c2"
    )
    await keep.started()
    await doomed.started()
    await harness.stop(first)
    await type_into_pane(harness, "relay-ag_tl", "crash 4")
    await wait_dead(lost["pid"])

    second = await harness.start(config)
    agents = {agent["agentId"]: agent for agent in second.agents()}
    assert agents["ag_tk"]["status"] == "running"
    assert agents["ag_tk"]["pid"] == kept["pid"]
    assert agents["ag_tk"]["tmuxSession"] == "relay-ag_tk"
    # The pane stayed after its agent (remain-on-exit): the exit code is known.
    assert agents["ag_tl"]["status"] == "exited"
    assert agents["ag_tl"]["exit"]["exitCode"] == 4, agents["ag_tl"]
    assert "last words" in agents["ag_tl"]["exit"]["lastOutput"]
    result = await second.execute("agent.compact", {"tmuxSession": "relay-ag_tk"}, "c3")
    assert result == {"agentId": "ag_tk", "compacted": None, "reloaded": []}
    assert await keep.line() == "/compact"


async def type_into_pane(harness: Harness, session: str, text: str) -> None:
    """Type into a tmux agent's pane from outside, as a person would."""
    await trio.run_process(
        ["tmux", "-L", harness.tmux_socket, "send-keys", "-t", f"={session}:", text, "Enter"],
        env=harness.env,
    )


async def test_dead_agents_resume_their_session_when_configured(harness: Harness) -> None:
    config = harness.config(
        command={
            "resume_dead_agents": "always",
            "session_id_args": ["--print", "session={sessionId}"],
            "resume_args": ["--print", "resume={sessionId}"],
        }
    )
    first = await harness.start(config)
    record = harness.record()
    spawned = await first.execute(
        "agent.spawn", harness.spawn(record=record, agentId="ag_res"), "c1"
    )
    await record.started()
    session_id = first.agents()[0]["providerSessionId"]
    assert list(harness.launcher.specs[-1].argv[-2:]) == ["--print", f"session={session_id}"]
    await harness.stop(first)
    os.kill(spawned["pid"], signal.SIGKILL)
    await wait_dead(spawned["pid"])
    mark = harness.reporter.mark()

    second = await harness.start(config)
    # The resume is stored (starting) before its process starts.
    assert harness.reporter.statuses("ag_res", mark) == ["exited", "starting", "running"]
    (agent,) = second.agents()
    assert agent["status"] == "running"
    assert agent["restartCount"] == 1
    assert agent["providerSessionId"] == session_id
    assert agent["meta"]["resumedFrom"]["pid"] == spawned["pid"]
    assert agent["meta"]["resumedFrom"]["providerSessionId"] == session_id
    assert await record.started() == agent["pid"] != spawned["pid"]
    assert list(harness.launcher.specs[-1].argv[-2:]) == ["--print", f"resume={session_id}"]
    # An agent that was asked to stop stays stopped.
    await second.execute("agent.stop", {"agentId": "ag_res"}, "c2")
    await harness.stop(second)
    third = await harness.start(config)
    assert third.agents()[0]["status"] == "stopped"
