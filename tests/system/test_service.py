"""``relay-orchestrator install --systemd`` under a real ``systemd --user`` (issues 5 and 4).

The test user installs the service against the dev relay that runs in the
test (loopback); the relay's view and the manager's view are checked at
every step: registered as a systemd service that can upgrade itself, stopped
cleanly, restarted by systemd when killed, agents that outlive every restart
of the orchestrator and are re-adopted, and an uninstall that removes what
install wrote. Both systemd backends run the whole path.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import trio

from orchestrator._version import current_version

from ..conftest import TOKEN
from ..supervisors.systemd_sandbox_support import SystemdUser, unavailable
from .sandbox import (
    OUR_DROPIN,
    UNIT,
    ServiceLayout,
    UserHost,
    alive,
    bounded,
    kill,
    spawn_params,
    unit_of,
)

pytestmark = [
    pytest.mark.systemd,
    pytest.mark.slow,
    pytest.mark.usefixtures("installed_service"),
]

RESTARTED_WITHIN = 15.0  # INTERFACE.md: a killed orchestrator is registered again within 15 s
TEST_BUDGET = 120.0
CLEANUP_BUDGET = 60.0


def require_backend(backend: str) -> None:
    if backend == "dbus":
        try:
            import pydbus  # noqa: F401
            from gi.repository import GLib  # noqa: F401
        except (ImportError, ValueError) as exc:
            unavailable(f"pydbus/PyGObject not importable (pip install '.[systemd]'): {exc}")


def agent_reported(relay: Any, orch_id: str, agent_id: str) -> dict[str, Any] | None:
    orch = relay.orchestrator(orch_id) or {}
    for agent in orch.get("agents") or []:
        if agent.get("agentId") == agent_id:
            return dict(agent)
    return None


async def registered_anew(relay: Any, layout: ServiceLayout, host: UserHost, old_pid: int,
                          agent: dict[str, Any]) -> int:
    """Wait for a registration by a new process that reports ``agent`` running, same pid."""

    def done() -> bool:
        orch = relay.orchestrator(layout.orch_id) or {}
        reported = agent_reported(relay, layout.orch_id, agent["agentId"]) or {}
        return (
            orch.get("pid") not in (None, old_pid)
            and orch.get("status") == "online"
            and (reported.get("status"), reported.get("pid")) == ("running", agent["pid"])
        )

    await relay.wait_for(done)
    pid = int((relay.orchestrator(layout.orch_id) or {})["pid"])
    props = await host.show(UNIT, "MainPID", "ActiveState")
    assert props == {"MainPID": str(pid), "ActiveState": "active"}
    return pid


@pytest.mark.parametrize("backend", ["dbus", "cli"])
async def test_installed_service_lifecycle(
    systemd_user: SystemdUser, relay: Any, backend: str
) -> None:
    require_backend(backend)
    host = UserHost(systemd_user)
    layout = ServiceLayout.create(host, f"svc-{backend}", TOKEN)
    dropin = host.dropin(OUR_DROPIN, {"RELAY_ORCHESTRATOR_SYSTEMD_BACKEND": backend})
    agent_units: list[str] = []
    installed = False
    try:
        with bounded(TEST_BUDGET, "the whole test", host.log_tail):
            installed = True
            await lifecycle(relay, host, layout, backend, dropin, agent_units)
            installed = False
    finally:
        with trio.move_on_after(CLEANUP_BUDGET) as cleanup:
            cleanup.shield = True
            if installed:
                await host.cli("uninstall", check=False)
            await host.remove_dropin(dropin)
            await host.stop_units(agent_units)
        shutil.rmtree(layout.work, ignore_errors=True)


async def lifecycle(relay: Any, host: UserHost, layout: ServiceLayout, backend: str,
                    dropin: Path, agent_units: list[str]) -> None:
    # -- install: returns once the unit is active (READY=1, after registering)
    ran = await host.cli("install", "--systemd", *layout.install_flags(relay.url))
    assert f"{UNIT} is up (systemd)" in ran.stdout
    assert TOKEN not in ran.stdout + ran.stderr
    props = await host.show(UNIT, "ActiveState", "SubState", "MainPID", "StatusText",
                            "Type", "KillMode", "Restart", "NRestarts", "WatchdogUSec")
    assert props["WatchdogUSec"] == "30s"
    with trio.fail_after(20):  # the loop's first "alive" reached systemd
        while (await host.show(UNIT, "WatchdogTimestampMonotonic"))[
                "WatchdogTimestampMonotonic"] in ("", "0"):
            await trio.sleep(0.2)
    assert (props["ActiveState"], props["SubState"], props["Type"]) == (
        "active", "running", "notify")
    assert (props["KillMode"], props["Restart"]) == ("process", "on-failure")
    assert props["StatusText"].startswith(f"connected to {relay.url}")
    first_pid = int(props["MainPID"])
    orch = relay.orchestrator(layout.orch_id)
    assert orch is not None, "install returned before the service registered"
    assert (orch["supervisor"], orch["selfUnit"], orch["pid"], orch["status"]) == (
        "systemd", UNIT, first_pid, "online")
    assert orch["capabilities"] == {"relayCommandBus": True, "selfUpgrade": True}
    assert orch["version"] == current_version()
    assert "command" in orch["providers"]
    # What install wrote: the unit, the token (0600, never in the unit), the settings.
    unit_file = host.unit_dir / UNIT
    token_env = host.config_dir / "token.env"
    assert TOKEN not in unit_file.read_text()
    assert token_env.stat().st_mode & 0o777 == 0o600
    assert (host.config_dir / "installed.env").exists()

    # -- status, as the user, with no flags: the settings install recorded
    status = json.loads((await host.cli("status", "--json")).stdout)
    assert (status["id"], status["version"], status["supervisor"], status["selfUnit"]) == (
        layout.orch_id, current_version(), "systemd", UNIT)
    assert (status["running"], status["pid"]) == (True, first_pid)
    assert status["relay"]["url"] == relay.url
    assert status["relay"]["connected"] is True

    # -- an agent through the relay, in a transient unit of its own
    spawn = relay.create_command(f"orch:{layout.orch_id}", "agent.spawn",
                                 spawn_params(layout.base_dir, ["sleep", "1000"]))
    with bounded(20, "the spawn to settle", host.log_tail):
        await relay.wait_for(lambda: (relay.get_command(spawn["id"]) or {}).get("status")
                             in ("succeeded", "failed"))
    settled = relay.get_command(spawn["id"]) or {}
    assert settled["status"] == "succeeded", settled
    agent = {"agentId": settled["result"]["agentId"], "pid": settled["result"]["pid"]}
    agent_unit = unit_of(agent["pid"])
    assert agent_unit is not None and agent_unit != UNIT
    agent_units.append(agent_unit)
    assert (await host.show(agent_unit, "MainPID", "ActiveState")) == {
        "MainPID": str(agent["pid"]), "ActiveState": "active"}
    # The backend that started it: systemd-run hands the environment over in a
    # file (EnvironmentFile=), D-Bus in the unit's Environment property.
    env_files = (await host.show(agent_unit, "EnvironmentFiles")).get("EnvironmentFiles", "")
    assert bool(env_files) == (backend == "cli"), env_files

    # -- systemctl stop: a clean exit (inactive, not failed); the agent stays
    await host.systemctl("stop", UNIT)
    props = await host.show(UNIT, "ActiveState", "Result", "ExecMainCode", "ExecMainStatus")
    assert props == {"ActiveState": "inactive", "Result": "success", "ExecMainCode": "1",
                     "ExecMainStatus": "0"}, props
    assert not alive(first_pid)
    assert alive(agent["pid"])

    # -- start again: registered anew, the agent re-adopted
    await host.systemctl("start", UNIT)
    with bounded(20, "the started service to register", host.log_tail):
        second_pid = await registered_anew(relay, layout, host, first_pid, agent)

    # -- SIGKILL: systemd restarts it; it registers again within 15 s
    restarts = int((await host.show(UNIT, "NRestarts"))["NRestarts"])
    kill(second_pid)
    with bounded(RESTARTED_WITHIN, "the killed service to be back on the bus", host.log_tail):
        third_pid = await registered_anew(relay, layout, host, second_pid, agent)
    assert int((await host.show(UNIT, "NRestarts"))["NRestarts"]) == restarts + 1

    # -- systemctl restart: the agent keeps its pid and is re-adopted (issue 4)
    await host.systemctl("restart", UNIT)
    with bounded(20, "the restarted service to register", host.log_tail):
        fourth_pid = await registered_anew(relay, layout, host, third_pid, agent)
    assert alive(agent["pid"]) and unit_of(agent["pid"]) == agent_unit
    status = json.loads((await host.cli("status", "--json")).stdout)
    assert [(a["agentId"], a["pid"], a["status"]) for a in status["agents"]] == [
        (agent["agentId"], agent["pid"], "running")]

    # -- uninstall: what install wrote is gone, the unit is not loaded, agents stay
    await host.remove_dropin(dropin)  # the test's own file, first
    ran = await host.cli("uninstall")
    assert f"{UNIT} removed" in ran.stdout
    assert "note:" not in ran.stderr, ran.stderr
    assert not unit_file.exists()
    assert not token_env.exists()
    assert not (host.config_dir / "installed.env").exists()
    assert (await host.show(UNIT, "LoadState", "ActiveState")) == {
        "LoadState": "not-found", "ActiveState": "inactive"}
    assert not alive(fourth_pid)
    assert alive(agent["pid"])
    assert (await host.show(agent_unit, "ActiveState"))["ActiveState"] == "active"
    assert layout.state_dir.exists()  # agents' state is kept without --purge


async def test_install_dry_run_shows_everything_and_changes_nothing(
    systemd_user: SystemdUser, relay: Any
) -> None:
    host = UserHost(systemd_user)
    layout = ServiceLayout.create(host, "dry-run", TOKEN)
    unit_file = host.unit_dir / UNIT
    recorded = [unit_file, host.config_dir / "token.env", host.config_dir / "installed.env"]
    before = {path: path.exists() for path in recorded}
    try:
        assert not any(before.values()), f"a service is installed already: {before}"
        with bounded(60, "install --dry-run"):
            ran = await host.cli(
                "install", "--systemd", "--dry-run", *layout.install_flags(relay.url),
                "--runtime-root", str(layout.runtime_root),
            )  # fmt: skip
            load_state = (await host.show(UNIT, "LoadState"))["LoadState"]
        out = ran.stdout
        assert TOKEN not in out + ran.stderr
        assert "RELAY_ORCHESTRATOR_TOKEN=<token: hidden>" in out
        for path in recorded:
            assert f"would write {path}" in out
        assert f"ExecStart={layout.runtime_root}/bin/relay-orchestrator run" in out
        assert f"would create {layout.runtime_root}/versions/{current_version()}" in out
        for command in ("systemctl --user daemon-reload",
                        f"systemctl --user enable {UNIT}",
                        f"systemctl --user restart {UNIT}"):
            assert f"would run: {command}" in out
        # Nothing was created, loaded or started.
        assert {path: path.exists() for path in recorded} == before
        assert not layout.state_dir.exists()
        assert not layout.runtime_root.exists()
        assert load_state == "not-found"
        assert relay.orchestrator(layout.orch_id) is None
    finally:
        shutil.rmtree(layout.work, ignore_errors=True)
