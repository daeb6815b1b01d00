"""``ctl`` against the dev relay and ``status`` as a person reads them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

from ..conftest import FAKE_AGENT, TOKEN, cli_env
from .e2e import settle


async def ctl(relay_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "orchestrator", "ctl", args[0], "--relay-url", relay_url,
            *args[1:]]
    return await trio.to_thread.run_sync(lambda: subprocess.run(
        argv, capture_output=True, text=True, timeout=60,
        env=cli_env(RELAY_ORCHESTRATOR_TOKEN=TOKEN, XDG_CONFIG_HOME="/nonexistent")))


async def test_ctl_spawn_agents_commands_stop(
    relay: Any, start_orchestrator: Any, tmp_path: Path,
) -> None:
    orch = await start_orchestrator()
    base = str((tmp_path / "base").resolve())
    out = await ctl(relay.url, "spawn", orch.id, "--provider", "command", "--cwd", base,
                    "--agent-id", "ag_ctl", "--label", "worker", "--json", "--",
                    sys.executable, FAKE_AGENT)
    assert out.returncode == 0, out.stderr
    created = json.loads(out.stdout)
    assert created["type"] == "agent.spawn"
    done = await settle(relay, created)
    assert done["status"] == "succeeded", done["error"]
    with trio.fail_after(10):
        await relay.wait_for(lambda: any(a["status"] == "running"
                                         for a in relay.orchestrator(orch.id)["agents"]))
    table = await ctl(relay.url, "agents")
    assert table.returncode == 0, table.stderr
    assert orch.id in table.stdout and "online" in table.stdout
    lines = table.stdout.splitlines()
    header, row = [line for line in lines if "ag_ctl" in line or "AGENT" in line]
    assert header.split()[:4] == ["AGENT", "LABEL", "STATUS", "PID"]
    assert row.split()[:4] == ["ag_ctl", "worker", "running", str(done["result"]["pid"])]
    cmds = await ctl(relay.url, "commands", "--json")
    assert any(c["id"] == created["id"] and c["status"] == "succeeded"
               for c in json.loads(cmds.stdout))
    stop = await ctl(relay.url, "stop", "ag_ctl")
    assert stop.returncode == 0 and "agent.stop command" in stop.stdout


async def test_ctl_shows_relay_errors_as_one_line(relay: Any, start_orchestrator: Any) -> None:
    await start_orchestrator()
    out = await ctl(relay.url, "stop", "ag_nobody")
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and "relay answered 404" in out.stderr
    out = await ctl("http://127.0.0.1:9", "agents")
    assert out.returncode == 1 and "unreachable" in out.stderr


async def test_status_reads_like_a_person_expects(
    relay: Any, start_orchestrator: Any, tmp_path: Path,
) -> None:
    orch = await start_orchestrator(id="orch-status")
    base = str((tmp_path / "base").resolve())
    await settle(relay, relay.create_command(orch.agent_id, "agent.spawn", {
        "provider": "command", "agentId": "ag_st", "label": "reviewer", "cwd": base,
        "providerArgs": [sys.executable, FAKE_AGENT]}))
    orch.status_writer.changed()
    state = str(orch.settings.state_dir)

    def status(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "orchestrator", "status", "--state-dir", state,
                               "--config", str(tmp_path / "config.toml"), *extra],
                              capture_output=True, text=True, timeout=30, env=cli_env())

    with trio.fail_after(10):
        while True:
            data = json.loads((await trio.to_thread.run_sync(status, "--json")).stdout)
            if data.get("agents"):
                break
            await trio.sleep(0.05)
    assert data["id"] == "orch-status" and data["running"] is True
    assert data["supervisor"] == "none" and data["relay"]["connected"] is True
    assert data["relay"]["url"] == relay.url
    assert data["agents"][0]["agentId"] == "ag_st"
    text = (await trio.to_thread.run_sync(status)).stdout
    lines = text.splitlines()
    assert lines[0].startswith("orchestrator orch-status") and lines[0].endswith("running")
    assert "\x1b[" not in text  # colour only on a terminal
    assert any(line.startswith("relay") and "connected" in line for line in lines)
    row = next(line for line in lines if "reviewer" in line)
    assert row.split()[:2] == ["reviewer", "running"]
