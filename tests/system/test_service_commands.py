"""The commands that act on the installed systemd unit — ``status``, ``logs``,
``restart``, ``doctor``, ``attach`` — run as its user would, under a real ``systemd --user`` (the
sandbox), against the dev relay: exit statuses as ``systemctl status``'s,
where the log is, ``restart`` through the manager with the agent kept and
adopted by the new process. The sandbox has no journald: ``logs`` is checked
by the command line it hands to a stand-in ``journalctl``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import trio

from ..conftest import FAKE_AGENT, TOKEN
from ..supervisors.stand_ins import StandIns
from ..supervisors.systemd_sandbox_support import SystemdUser
from .sandbox import (
    OUR_DROPIN,
    UNIT,
    ServiceLayout,
    UserHost,
    alive,
    bounded,
    spawn_params,
    unit_of,
)

pytestmark = [
    pytest.mark.systemd,
    pytest.mark.slow,
    pytest.mark.usefixtures("installed_service"),
]

TEST_BUDGET = 120.0
CLEANUP_BUDGET = 60.0


def adopted_by(relay: Any, orch_id: str, pid: int, agent: dict[str, Any]) -> bool:
    orch = relay.orchestrator(orch_id) or {}
    return orch.get("pid") == pid and orch.get("status") == "online" and any(
        (a["agentId"], a["status"], a["pid"]) == (agent["agentId"], "running", agent["pid"])
        for a in orch.get("agents") or [])


async def test_status_logs_and_restart_of_the_installed_unit(
    systemd_user: SystemdUser, relay: Any
) -> None:
    host = UserHost(systemd_user)
    layout = ServiceLayout.create(host, "commands", TOKEN)
    dropin = host.dropin(OUR_DROPIN, {"RELAY_ORCHESTRATOR_SYSTEMD_BACKEND": "cli"})
    agent_units: list[str] = []
    installed = False
    try:
        with bounded(TEST_BUDGET, "the whole test", host.log_tail):
            installed = True
            await commands(relay, host, layout, agent_units)
    finally:
        with trio.move_on_after(CLEANUP_BUDGET) as cleanup:
            cleanup.shield = True
            await host.remove_dropin(dropin)
            if installed:
                await host.cli("uninstall", check=False)
            await host.stop_units(agent_units)
        shutil.rmtree(layout.work, ignore_errors=True)


async def commands(relay: Any, host: UserHost, layout: ServiceLayout,
                   agent_units: list[str]) -> None:
    await host.cli("install", "--systemd", *layout.install_flags(relay.url))
    first_pid = await host.main_pid()
    spawn = relay.create_command(f"orch:{layout.orch_id}", "agent.spawn",
                                 spawn_params(layout.base_dir, ["sleep", "1000"]))
    with bounded(20, "the spawn to settle", host.log_tail):
        await relay.wait_for(lambda: (relay.get_command(spawn["id"]) or {}).get("status")
                             in ("succeeded", "failed"))
    settled = relay.get_command(spawn["id"]) or {}
    assert settled["status"] == "succeeded", settled
    agent = {"agentId": settled["result"]["agentId"], "pid": settled["result"]["pid"]}
    agent_unit = unit_of(agent["pid"])
    assert agent_unit is not None
    agent_units.append(agent_unit)

    # -- status, with no flags (install's settings): 0, the unit, the journal
    with bounded(20, "the agent in status"):
        while f"  {agent['agentId']} " not in (status := await host.cli("status")).stdout:
            await trio.sleep(0.1)  # its status file: written at most once a second
    lines = status.stdout.splitlines()
    assert lines[0].endswith("  running") and "\033[" not in status.stdout
    assert f"process      pid {first_pid}  up " in status.stdout
    assert f"supervisor   systemd ({UNIT})" in lines
    assert f"unit         {UNIT}  active (running)  restarts 0" in lines
    assert f"log          journalctl --user -u {UNIT}" in lines

    # -- doctor, with no flags: the installed unit and its PATH, the token install
    # stored (0600), the relay reached with it; --json says the same
    ran = await host.cli("doctor", "--json", check=False)
    checks = {c["check"]: c for c in json.loads(ran.stdout)["checks"]}
    for name in ("service", "path", "token", "state-dir", "relay", "provider:command"):
        assert checks[name]["status"] == "PASS", checks[name]
    assert checks["service"]["what"].startswith(
        f"installed as a systemd user service ({host.unit_dir / UNIT}): ")
    assert "token.env" in checks["token"]["what"] and "(mode 0600)" in checks["token"]["what"]
    assert checks["linger"]["status"] in ("PASS", "WARN")  # as logind says, or its file
    ran = await host.cli("doctor", check=False)
    assert ran.returncode == (1 if any(c["status"] == "FAIL" for c in checks.values()) else 0)
    assert len(ran.stdout.splitlines()) == len(checks)

    # -- logs with no agent: the unit's journal, -n and -f passed on
    bin_dir = layout.work / "bin"
    bin_dir.mkdir()
    host.chown(bin_dir)
    journalctl = StandIns(bin_dir, layout.work / "journalctl-calls.jsonl")
    journalctl.add("journalctl", stdout="a journal line\n")
    ran = await host.run([host.user.python, "-m", "orchestrator", "logs", "-n", "5", "-f"],
                         extra_env={"PATH": f"{bin_dir}:{host.user.env['PATH']}"})
    assert ran.stdout == "a journal line\n"
    assert journalctl.argvs() == [["journalctl", "--user", "-u", UNIT, "-n", "5", "--no-pager",
                                   "-f"]]

    # -- restart: through the manager; the agent keeps its pid, adopted anew
    ran = await host.cli("restart")
    second_pid = await host.main_pid()
    assert second_pid != first_pid
    assert ran.stdout == f"restarted {UNIT} (systemd): pid {first_pid} → {second_pid}\n"
    with bounded(20, "the restarted service to adopt the agent", host.log_tail):
        await relay.wait_for(lambda: adopted_by(relay, layout.orch_id, second_pid, agent))
    assert alive(agent["pid"]) and unit_of(agent["pid"]) == agent_unit
    assert (await host.show(UNIT, "NRestarts"))["NRestarts"] == "0"  # asked for, not a crash

    # -- stopped: status exits 3; restart starts it again
    await host.systemctl("stop", UNIT)
    status = await host.cli("status", check=False)
    assert status.returncode == 3, status
    assert status.stdout.splitlines()[0].endswith("  not running")
    assert f"unit         {UNIT}  inactive (dead)  restarts 0" in status.stdout
    ran = await host.cli("restart")
    third_pid = await host.main_pid()
    assert ran.stdout == f"restarted {UNIT} (systemd): pid {third_pid}\n"
    with bounded(20, "the started service to adopt the agent", host.log_tail):
        await relay.wait_for(lambda: adopted_by(relay, layout.orch_id, third_pid, agent))
    assert (await host.cli("status", check=False)).returncode == 0
    assert Path(f"/proc/{agent['pid']}").exists()


GREETING = "hello from the agent under systemd"


async def test_attach_to_an_agent_of_the_installed_unit(
    systemd_user: SystemdUser, relay: Any
) -> None:
    """``attach`` as the unit's user, in a terminal of a tmux server of the test's
    own (run as that user): the agent's screen shows, through the fleet's tmux."""
    host = UserHost(systemd_user)
    layout = ServiceLayout.create(host, "attach", TOKEN)
    host.write_file(layout.config, '[providers.command]\nenabled = true\nsession = "tmux"\n')
    outer = f"relay-test-outer-{layout.orch_id}"
    agent_units: list[str] = []
    installed = False
    try:
        with bounded(TEST_BUDGET, "the whole test", host.log_tail):
            await host.cli("install", "--systemd", *layout.install_flags(relay.url))
            installed = True
            spawn = relay.create_command(
                f"orch:{layout.orch_id}", "agent.spawn",
                spawn_params(layout.base_dir, [host.user.python, FAKE_AGENT, "--print",
                                               GREETING], agentId="ag_seen", label="seen"))
            with bounded(20, "the spawn to settle", host.log_tail):
                await relay.wait_for(lambda: (relay.get_command(spawn["id"]) or {})
                                     .get("status") in ("succeeded", "failed"))
            settled = relay.get_command(spawn["id"]) or {}
            assert settled["status"] == "succeeded", settled.get("error")
            unit = unit_of(settled["result"]["pid"])
            if unit:
                agent_units.append(unit)
            await host.run(["tmux", "-L", outer, "-f", "/dev/null", "new-session", "-d",
                            "-x", "120", "-y", "30", "--", host.user.python, "-m",
                            "orchestrator", "attach", "--read-only", "seen"])
            with bounded(20, "the agent's screen in the attached terminal", host.log_tail):
                while GREETING not in (screen := (await host.run(
                        ["tmux", "-L", outer, "capture-pane", "-p"], check=False)).stdout):
                    await trio.sleep(0.05)
            assert "relay-orchestrator" not in screen.splitlines()[0]  # the agent's, not an error
    finally:
        with trio.move_on_after(CLEANUP_BUDGET) as cleanup:
            cleanup.shield = True
            await host.run(["tmux", "-L", outer, "kill-server"], check=False)
            if installed:
                await host.cli("uninstall", check=False)
            await host.stop_units(agent_units)
        shutil.rmtree(layout.work, ignore_errors=True)
