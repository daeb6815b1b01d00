"""The commands that act on an installed launchd agent — ``install --launchd``,
``status``, ``logs``, ``restart``, ``uninstall`` — run as a user would, with a
stand-in ``launchctl`` first on PATH that also plays launchd: it starts the
plist's program as launchd would, its output appended to the plist's log
path (``launchd_stand_in.py``). The orchestrator runs against the dev relay;
its agent must outlive the restart and be adopted by the new process.
"""

from __future__ import annotations

import json
import os
import plistlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import trio

from orchestrator._version import current_version

from ..conftest import FAKE_AGENT, TOKEN, cli_env, kill_agents
from . import launchd_stand_in
from .sandbox import alive

pytestmark = pytest.mark.slow

WAIT = 30
LABEL = "relay-orchestrator"
ORCH = "orch-launchd-svc"


class Host:
    """A home with a launchd stand-in, and the CLI run in it as its user would."""

    def __init__(self, tmp_path: Path) -> None:
        self.home = tmp_path / "home"
        self.home.mkdir()
        self.launchd = tmp_path / "launchd"
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        launchctl = self.bin / "launchctl"
        launchctl.write_text(f'#!/bin/sh\nexec {sys.executable} {launchd_stand_in.__file__} "$@"\n')
        launchctl.chmod(0o755)
        self.work = tmp_path / "work"
        self.work.mkdir()
        # Where the quick start has a person keep it: the folder install writes to.
        self.token = self.home / ".config" / "relay-orchestrator" / "token"
        self.token.parent.mkdir(parents=True)
        self.token.write_text(TOKEN + "\n")
        self.token.chmod(0o600)
        self.config = self.work / "config.toml"
        self.config.write_text('[providers.command]\nenabled = true\nsession = "plain"\n')
        self.state = self.work / "state"
        self.base = self.work / "base"
        self.base.mkdir()
        self.log = self.home / "Library" / "Logs" / "relay-orchestrator" / "orchestrator.log"

    @property
    def env(self) -> dict[str, str]:
        return cli_env(HOME=str(self.home), XDG_CONFIG_HOME=str(self.home / ".config"),
                       PATH=f"{self.bin}{os.pathsep}{os.environ['PATH']}",
                       LAUNCHD_STAND_IN_DIR=str(self.launchd))

    async def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv, env = [sys.executable, "-m", "orchestrator", *args], self.env
        return await trio.to_thread.run_sync(lambda: subprocess.run(
            argv, capture_output=True, text=True, timeout=120, env=env, cwd=self.work))

    def calls(self) -> list[list[str]]:
        path = self.launchd / "calls.jsonl"
        if not path.exists():
            return []
        return [json.loads(line)["argv"] for line in path.read_text().splitlines()]


@pytest.fixture
def host(tmp_path: Path, relay: Any) -> Iterator[Host]:
    h = Host(tmp_path)
    yield h
    launchd_stand_in.stop_all(h.launchd)  # the jobs it started, by pid and start time
    kill_agents((relay.orchestrator(ORCH) or {}).get("agents") or [])


def registered_by_another(relay: Any, old_pid: int | None) -> bool:
    orch = relay.orchestrator(ORCH) or {}
    return orch.get("status") == "online" and orch.get("pid") not in (None, old_pid)


async def test_status_logs_restart_of_an_installed_launchd_agent(relay: Any, host: Host) -> None:
    uid = os.getuid()
    installed = await host.cli(
        "install", "--launchd", "--relay-url", relay.url, "--token-file", str(host.token),
        "--state-dir", str(host.state), "--base-dir", str(host.base), "--config",
        str(host.config), "--id", ORCH, "--heartbeat-interval", "1")
    assert installed.returncode == 0, installed.stderr
    assert host.calls() == [["launchctl", "bootout", f"gui/{uid}/{LABEL}"],
                            ["launchctl", "bootstrap", f"gui/{uid}",
                             str(host.home / "Library" / "LaunchAgents" / f"{LABEL}.plist")]]
    with trio.fail_after(WAIT):
        await relay.wait_for(lambda: registered_by_another(relay, None))
    first_pid = int((relay.orchestrator(ORCH) or {})["pid"])
    assert (relay.orchestrator(ORCH) or {})["supervisor"] == "launchd"
    # The job runs with the PATH of the shell that installed it (launchd's own
    # holds only the system's folders, where npm's agent CLIs are not).
    plist = plistlib.loads((host.home / "Library" / "LaunchAgents" / f"{LABEL}.plist")
                           .read_bytes())
    assert plist["EnvironmentVariables"]["PATH"] == host.env["PATH"]
    assert psutil.Process(first_pid).environ()["PATH"] == host.env["PATH"]

    spawn = relay.create_command(f"orch:{ORCH}", "agent.spawn", {
        "provider": "command", "agentId": "ag_kept", "cwd": str(host.base),
        "providerArgs": [sys.executable, FAKE_AGENT]})
    with trio.fail_after(WAIT):
        await relay.wait_for(lambda: (relay.get_command(spawn["id"]) or {}).get("status")
                             in ("succeeded", "failed"))
    settled = relay.get_command(spawn["id"]) or {}
    assert settled["status"] == "succeeded", settled
    agent_pid = settled["result"]["pid"]

    # -- status: no flags (what install recorded), running, where the log is
    def agent_row(lines: list[str]) -> bool:
        return any(line.startswith("  ag_kept ") and " running " in line for line in lines)

    with trio.fail_after(WAIT):  # its status file: written at most once a second
        while not agent_row((status := await host.cli("status")).stdout.splitlines()):
            await trio.sleep(0.1)
    assert status.returncode == 0
    lines = status.stdout.splitlines()
    assert f"supervisor   launchd ({LABEL})" in lines
    assert f"log          {host.log}" in lines

    # -- restart: kickstart -k, then the new process is there; the agent kept
    restarted = await host.cli("restart")
    assert restarted.returncode == 0, restarted.stderr
    assert host.calls()[-1] == ["launchctl", "kickstart", "-k", f"gui/{uid}/{LABEL}"]
    assert not any(call[1] == "bootout" for call in host.calls()[1:])
    second_pid = json.loads((host.state / "status.json").read_text())["pid"]
    assert second_pid != first_pid
    assert restarted.stdout == (f"restarted gui/{uid}/{LABEL} (launchd): "
                                f"pid {first_pid} → {second_pid}\n")
    with trio.fail_after(WAIT):
        await relay.wait_for(lambda: registered_by_another(relay, first_pid) and any(
            a["agentId"] == "ag_kept" and a["status"] == "running" and a["pid"] == agent_pid
            for a in (relay.orchestrator(ORCH) or {}).get("agents") or []))
    assert alive(agent_pid) and not alive(first_pid)

    # -- logs: launchd's file, both processes' lines in it
    out = await host.cli("logs", "-n", "500")
    assert out.returncode == 0, out.stderr
    messages = [json.loads(line)["msg"] for line in out.stdout.splitlines()]
    assert sum(m.startswith(f"orchestrator {ORCH} ") and " up " in m for m in messages) == 2
    assert "received SIGTERM; stopping" in messages

    # -- upgrade (to the version installed: pip has nothing to fetch): the
    # service restarted the same way, the agent kept
    upgraded = await host.cli("upgrade", "--version", current_version())
    assert upgraded.returncode == 0, upgraded.stderr
    assert host.calls()[-1] == ["launchctl", "kickstart", "-k", f"gui/{uid}/{LABEL}"]
    third_pid = json.loads((host.state / "status.json").read_text())["pid"]
    assert upgraded.stdout == (f"installed {current_version()}\n"
                               f"restarted gui/{uid}/{LABEL} (launchd): "
                               f"pid {second_pid} → {third_pid}\n")
    with trio.fail_after(WAIT):
        await relay.wait_for(lambda: registered_by_another(relay, second_pid) and any(
            a["agentId"] == "ag_kept" and a["pid"] == agent_pid
            for a in (relay.orchestrator(ORCH) or {}).get("agents") or []))
    second_pid = third_pid

    # -- uninstall: the job ends (bootout), the agent stays
    removed = await host.cli("uninstall")
    assert removed.returncode == 0, removed.stderr
    assert host.calls()[-1] == ["launchctl", "bootout", f"gui/{uid}/{LABEL}"]
    assert host.token.read_text() == TOKEN + "\n"  # the person's own file: kept
    assert not (host.token.parent / "launchd.token").exists()  # install's copy: removed
    with trio.fail_after(WAIT):
        while alive(second_pid):  # noqa: ASYNC110 (another process: no event to wait on)
            await trio.sleep(0.05)
    assert alive(agent_pid)
    assert (await host.cli("status")).returncode == 3
    out = await host.cli("restart")
    assert out.returncode == 1 and out.stderr.count("\n") == 1
    assert "no systemd unit or launchd agent of relay-orchestrator is installed" in out.stderr
