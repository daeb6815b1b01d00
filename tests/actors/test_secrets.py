"""``params.env`` values reach the agent's environment, and nothing else."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import psutil
import pytest

from actors import CommandRejected

from .conftest import ORCHESTRATOR_TOKEN, Harness

SECRET = "s3cr3t-'quoted'-\"double\"-$HOME-`tick`-\nsecond-line"
SECRET_MARK = "s3cr3t-"


def every_cmdline() -> list[str]:
    lines = []
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            lines.append(path.read_bytes().decode(errors="replace"))
        except OSError:
            pass
    return lines


def files_holding(root: Path, needle: str) -> list[Path]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                if needle.encode() in path.read_bytes():
                    found.append(path)
            except OSError:
                pass
    return found


async def check_secret_handling(
    harness: Harness, session: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fleet = await harness.start(harness.config(session=session))
    record = harness.record()
    params = harness.spawn(
        "--env",
        "AGENT_RELAY_TOKEN",
        "--env",
        "RELAY_ORCHESTRATOR_TOKEN",
        "--env",
        "PLAIN_SETTING",
        record=record,
        agentId="ag_secret",
        env={"AGENT_RELAY_TOKEN": SECRET, "PLAIN_SETTING": "visible"},
    )
    result = await fleet.execute("agent.spawn", params, "c1")
    lines = await record.until(lambda line: line.startswith("started "))
    # The agent has it (the newline splits the recorded line in two) …
    assert f"env AGENT_RELAY_TOKEN={SECRET.splitlines()[0]}" in lines
    assert "env RELAY_ORCHESTRATOR_TOKEN unset" in lines
    assert "env PLAIN_SETTING=visible" in lines
    # … and no argv of any process does: the agent's, tmux's, anyone's.
    assert not [line for line in every_cmdline() if SECRET_MARK in line]
    assert not [line for line in every_cmdline() if ORCHESTRATOR_TOKEN in line]
    # Nor results, reports, errors, logs, or files in the state dir.
    failed = {**params, "agentId": "ag_secret2", "cwd": "/"}
    with pytest.raises(CommandRejected) as caught:
        await fleet.execute("agent.spawn", failed, "c2")
    assert SECRET_MARK not in str(caught.value)
    bad_env = {**params, "agentId": "ag_secret3", "env": {"A=B": SECRET, "K": SECRET + "\0"}}
    with pytest.raises(CommandRejected) as caught:
        await fleet.execute("agent.spawn", bad_env, "c3")
    assert SECRET_MARK not in str(caught.value)
    stopped = await fleet.execute("agent.stop", {"agentId": "ag_secret"}, "c4")
    assert SECRET_MARK not in json.dumps([result, stopped, fleet.agents()])
    assert SECRET_MARK not in json.dumps(harness.reporter.reports)
    assert SECRET_MARK not in caplog.text
    assert files_holding(harness.state, SECRET_MARK) == []
    # The journal is where it is kept (0600 by the lead's journal).
    assert harness.store.record("ag_secret")["params"]["env"]["AGENT_RELAY_TOKEN"] == SECRET  # type: ignore[index]


async def test_secrets_in_plain_sessions(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    await check_secret_handling(harness, "plain", caplog)
    spec = harness.launcher.specs[0]
    assert spec.env["AGENT_RELAY_TOKEN"] == SECRET  # the process environment
    assert "RELAY_ORCHESTRATOR_TOKEN" not in spec.env
    assert not any(SECRET_MARK in arg for arg in spec.argv)


@pytest.mark.slow
async def test_secrets_in_tmux_sessions(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    await check_secret_handling(harness, "tmux", caplog)
    (server,) = [spec for spec in harness.launcher.specs if spec.name.startswith("relay-tmux-")]
    assert "RELAY_ORCHESTRATOR_TOKEN" not in server.env
    server_pid = harness.launcher.started[0][0]
    environ = psutil.Process(server_pid).environ()
    assert not any(SECRET_MARK in value for value in environ.values())
    assert "RELAY_ORCHESTRATOR_TOKEN" not in environ
    # The launch file is gone once the agent started.
    agent_dir = harness.state / "agents" / "ag_secret"
    assert sorted(path.name for path in agent_dir.iterdir()) == ["output.log"]


@pytest.mark.slow
async def test_tmux_env_names_that_are_not_shell_words(harness: Harness) -> None:
    """Such names go through the Python launcher; values still never in argv."""
    fleet = await harness.start(harness.config(session="tmux"))
    record = harness.record()
    params = harness.spawn(
        "--env", "odd-name.x", record=record, env={"odd-name.x": SECRET}, agentId="ag_odd"
    )
    await fleet.execute("agent.spawn", params, "c1")
    lines = await record.until(lambda line: line.startswith("started "))
    assert f"env odd-name.x={SECRET.splitlines()[0]}" in lines
    assert not [line for line in every_cmdline() if SECRET_MARK in line]
    assert files_holding(harness.state, SECRET_MARK) == []
