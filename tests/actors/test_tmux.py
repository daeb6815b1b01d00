"""tmux sessions: a real tmux server on a socket of the test's own."""

from __future__ import annotations

import os
import shutil

import psutil
import pytest
import trio

from actors import CommandRejected

from .conftest import WAIT, Harness

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]


async def tmux(harness: Harness, *args: str) -> str:
    result = await trio.run_process(
        ["tmux", "-L", harness.tmux_socket, *args],
        env=harness.env,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    return result.stdout.decode()


async def test_spawn_compact_stop_in_tmux(harness: Harness) -> None:
    fleet = await harness.start(harness.config(session="tmux"))
    record = harness.record()
    (harness.base / "NOTES.md").write_text("line one\nline two\n")
    result = await fleet.execute(
        "agent.spawn",
        harness.spawn(
            "--term", "exit", "--print", "hello from the pane", record=record, agentId="ag_t"
        ),
        "c1",
    )
    assert result["tmuxSession"] == "relay-ag_t"
    assert await record.started() == result["pid"]
    sessions = await tmux(harness, "list-sessions", "-F", "#{session_name} #{pane_pid}")
    assert f"relay-ag_t {result['pid']}" in sessions.splitlines()
    report = harness.reporter.reports[-1]
    assert report["tmuxSession"] == report["sessionName"] == "relay-ag_t"
    assert report["meta"]["session"] == "tmux"
    # The server was started through the launcher, in the foreground.
    (server,) = [spec for spec in harness.launcher.specs if spec.name.startswith("relay-tmux-")]
    assert list(server.argv) == ["tmux", "-L", harness.tmux_socket, "-D"]

    compact = await fleet.execute(
        "agent.compact",
        {"tmuxSession": "relay-ag_t", "memory": {"alwaysReload": ["NOTES.md"]}},
        "c2",
    )
    assert compact == {"agentId": "ag_t", "compacted": None, "reloaded": ["NOTES.md"]}
    assert await record.lines(4) == ["/compact", "@NOTES.md", "line one", "line two"]

    stopped = await fleet.execute("agent.stop", {"agentId": "ag_t"}, "c3")
    assert stopped == {"agentId": "ag_t", "exitCode": 0, "signal": None}
    assert await record.line() == "term"
    report = harness.reporter.reports[-1]
    assert report["status"] == "stopped"
    assert "hello from the pane" in report["exit"]["lastOutput"]
    assert "Pane is dead" not in report["exit"]["lastOutput"]
    assert "relay-ag_t" not in await tmux(harness, "list-sessions", "-F", "#{session_name}")
    # pipe-pane wrote the pane's output to the agent's log.
    log = harness.state / "agents" / "ag_t" / "output.log"
    with trio.fail_after(WAIT):
        while "hello from the pane" not in log.read_text():  # noqa: ASYNC110 (a file)
            await trio.sleep(0.02)


async def test_exit_code_and_signal_come_from_tmux(harness: Harness) -> None:
    fleet = await harness.start(harness.config(session="tmux"))
    record = harness.record()
    await fleet.execute("agent.spawn", harness.spawn("--exit", "5", agentId="ag_5"), "c1")
    report = await harness.reporter.wait_for("ag_5", "exited")
    assert report["exit"]["exitCode"] == 5
    assert "exiting on request" in report["exit"]["lastOutput"]
    result = await fleet.execute("agent.spawn", harness.spawn(record=record, agentId="ag_k"), "c2")
    await record.started()
    os.kill(result["pid"], 9)
    report = await harness.reporter.wait_for("ag_k", "exited")
    assert report["exit"] == {**report["exit"], "exitCode": None, "signal": "SIGKILL"}
    # Their sessions are gone once their ends were read.
    sessions = await tmux(harness, "list-sessions", "-F", "#{session_name}")
    assert "relay-ag_5" not in sessions and "relay-ag_k" not in sessions


async def test_sigterm_ignoring_agent_in_tmux_is_killed(harness: Harness) -> None:
    fleet = await harness.start(harness.config(session="tmux"))
    record = harness.record()
    await fleet.execute(
        "agent.spawn", harness.spawn("--term", "ignore", record=record, agentId="ag_i"), "c1"
    )
    pid = await record.started()
    result = await fleet.execute("agent.stop", {"agentId": "ag_i", "timeoutMs": 200}, "c2")
    assert result == {"agentId": "ag_i", "exitCode": None, "signal": "SIGKILL"}
    assert await record.line() == "term"
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


async def test_restart_in_tmux_reuses_the_session_name(harness: Harness) -> None:
    fleet = await harness.start(harness.config(session="tmux"))
    first, second = harness.record("first"), harness.record("second")
    spawned = await fleet.execute("agent.spawn", harness.spawn(record=first, agentId="ag_rt"), "c1")
    await first.started()
    result = await fleet.execute(
        "agent.restart",
        {"agentId": "ag_rt", "restartSpawn": harness.spawn(record=second, agentId="ag_rt")},
        "c2",
    )
    assert await second.started() == result["pid"]
    assert result["previousPid"] == spawned["pid"]
    sessions = await tmux(harness, "list-sessions", "-F", "#{session_name} #{pane_pid}")
    assert sessions.splitlines() == [f"relay-ag_rt {result['pid']}"]


async def test_quit_input_is_typed_before_sigterm(harness: Harness) -> None:
    config = harness.config(session="tmux", command={"quit_input": "crash 0"})
    fleet = await harness.start(config)
    record = harness.record()
    await fleet.execute(
        "agent.spawn", harness.spawn("--term", "ignore", record=record, agentId="ag_q"), "c1"
    )
    await record.started()
    result = await fleet.execute("agent.stop", {"agentId": "ag_q", "timeoutMs": 10_000}, "c2")
    assert await record.line() == "crash 0"  # it quit on its own: no SIGTERM needed
    assert result == {"agentId": "ag_q", "exitCode": 0, "signal": None}


async def test_stale_session_of_the_same_name_is_replaced(harness: Harness) -> None:
    fleet = await harness.start(harness.config(session="tmux"))
    await fleet.execute("agent.spawn", harness.spawn("--exit", "0", agentId="ag_warm"), "c0")
    await harness.reporter.wait_for("ag_warm", "exited")
    await tmux(harness, "new-session", "-d", "-s", "relay-ag_st", "sleep", "30")
    record = harness.record()
    result = await fleet.execute("agent.spawn", harness.spawn(record=record, agentId="ag_st"), "c1")
    assert await record.started() == result["pid"]
    with pytest.raises(CommandRejected, match="^agent already running: ag_st$"):
        await fleet.execute("agent.spawn", harness.spawn(agentId="ag_st"), "c2")


async def test_the_servers_own_environment_never_leaks_the_token(harness: Harness) -> None:
    fleet = await harness.start(harness.config(session="tmux"))
    await fleet.execute("agent.spawn", harness.spawn("--exit", "0", agentId="ag_w"), "c0")
    await harness.reporter.wait_for("ag_w", "exited")
    # A server someone else started may carry anything in its global environment.
    await tmux(harness, "set-environment", "-g", "RELAY_ORCHESTRATOR_TOKEN", "leaked")
    record = harness.record()
    params = harness.spawn("--env", "RELAY_ORCHESTRATOR_TOKEN", "--env", "TERM", record=record)
    await fleet.execute("agent.spawn", params, "c1")
    lines = await record.until(lambda line: line.startswith("started "))
    assert "env RELAY_ORCHESTRATOR_TOKEN unset" in lines
    assert any(line.startswith(("env TERM=screen", "env TERM=tmux")) for line in lines)
