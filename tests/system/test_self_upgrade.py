"""Self-upgrade end to end under a real ``systemd --user`` (issue 6).

The test user installs the service as a runtime-prefix install at version A
(``install --systemd --runtime-root``), from wheels of this checkout built
for the session (A, B = A+1, and three broken ones), with the dependencies
in a local index: pip never leaves the machine. Three agents run throughout;
each step checks them (same pids, reported running) and the layout
(``current``, ``versions/``):

1. upgrade A -> B through the relay's action route: B registers, the relay
   settles the command ``succeeded``;
2. a downgrade without ``force``: refused by the relay's rails (409), and by
   the orchestrator itself when the command reaches it anyway;
3. a version that is not there: ``failed`` within seconds with pip's words,
   B still running, nothing left under ``versions/``;
4. a version whose package does not import at all: its entry point cannot
   answer ``--version``, so the install's verification refuses it before
   the switch: ``failed`` at once, B never restarted;
5. a version whose ``run`` cannot import what it needs (``--version`` works):
   its first start fails; at the second the stable entry's import check
   switches back to B, and B settles the command ``failed`` with the reason;
6. a version that imports but exits before registering: rolled back on its
   third start by the stable entry's count, the same way.
"""

from __future__ import annotations

import shutil
from typing import Any

import httpx
import pytest
import trio

from ..conftest import TOKEN
from ..supervisors.systemd_sandbox_support import SystemdUser
from .conftest import B_NO_IMPORT, B_RUN_EXITS, B_RUN_IMPORT, A, B
from .sandbox import (
    UNIT,
    ServiceLayout,
    UserHost,
    Wheelhouse,
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

AGENTS = 3
SETTLED = ("succeeded", "failed")
ROLLED_BACK_WITHIN = 60.0  # PROTOCOL.md 5.6
TEST_BUDGET = 240.0
CLEANUP_BUDGET = 60.0


class Upgrades:
    """One installed service, its relay and its agents, as the steps see them."""

    def __init__(self, relay: Any, host: UserHost, layout: ServiceLayout) -> None:
        self.relay = relay
        self.host = host
        self.layout = layout
        self.agents: dict[str, int] = {}  # agentId -> pid
        self.agent_units: list[str] = []

    @property
    def target(self) -> str:
        return f"orch:{self.layout.orch_id}"

    def orch(self) -> dict[str, Any]:
        return dict(self.relay.orchestrator(self.layout.orch_id) or {})

    def command(self, command_id: str) -> dict[str, Any]:
        return dict(self.relay.get_command(command_id) or {})

    def waiting(self, seconds: float, what: str) -> Any:
        return bounded(seconds, what, lambda: f"relay: {self.orch()}\n{self.host.log_tail(60)}")

    async def action(self, body: dict[str, Any]) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.relay.url,
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            return await client.post(f"/api/orchestrators/{self.layout.orch_id}/action",
                                     json=body)

    async def upgrade(self, version: str) -> tuple[dict[str, Any], float]:
        """The action route's upgrade, waited for until settled; (command, seconds)."""
        answer = await self.action({"action": "upgrade", "targetVersion": version})
        assert answer.status_code == 202, answer.text
        command_id = answer.json()["id"]
        started = trio.current_time()
        await self.relay.wait_for(lambda: self.command(command_id).get("status") in SETTLED)
        return self.command(command_id), trio.current_time() - started

    async def spawn_agents(self, count: int) -> None:
        ids = [
            self.relay.create_command(self.target, "agent.spawn",
                                      spawn_params(self.layout.base_dir, ["sleep", "1000"]))["id"]
            for _ in range(count)
        ]
        with self.waiting(30, "the spawns to settle"):
            await self.relay.wait_for(
                lambda: all(self.command(i).get("status") in SETTLED for i in ids))
        for command_id in ids:
            command = self.command(command_id)
            assert command["status"] == "succeeded", command
            pid = command["result"]["pid"]
            self.agents[command["result"]["agentId"]] = pid
            unit = unit_of(pid)
            assert unit is not None and unit != UNIT
            self.agent_units.append(unit)

    def check_agents(self) -> None:
        """The same agents, same pids, alive, and reported running by the orchestrator."""
        reported = {a["agentId"]: (a["pid"], a["status"]) for a in self.orch()["agents"]}
        assert reported == {agent: (pid, "running") for agent, pid in self.agents.items()}
        for pid in self.agents.values():
            assert alive(pid)

    async def running(self, version: str) -> int:
        """The unit's main process is the orchestrator the relay sees, at ``version``."""
        with self.waiting(30, f"version {version} registered with its agents"):
            await self.relay.wait_for(
                lambda: self.orch().get("version") == version
                and self.orch().get("status") == "online"
                and len(self.orch().get("agents") or []) == len(self.agents))
        props = await self.host.show(UNIT, "MainPID", "ActiveState")
        assert props["ActiveState"] == "active"
        assert int(props["MainPID"]) == self.orch()["pid"]
        return int(props["MainPID"])


async def test_self_upgrade_end_to_end(
    systemd_user: SystemdUser, relay: Any, wheelhouse: Wheelhouse
) -> None:
    host = UserHost(systemd_user)
    layout = ServiceLayout.create(host, "upgrade", TOKEN)
    up = Upgrades(relay, host, layout)
    installed = False
    try:
        with bounded(TEST_BUDGET, "the whole test", host.log_tail):
            installed = True
            await scenario(up, relay, host, layout, wheelhouse)
    finally:
        with trio.move_on_after(CLEANUP_BUDGET) as cleanup:
            cleanup.shield = True
            if installed:
                await host.cli("uninstall", check=False)
            await host.stop_units(up.agent_units)
        shutil.rmtree(layout.work, ignore_errors=True)


async def scenario(up: Upgrades, relay: Any, host: UserHost, layout: ServiceLayout,
                   wheelhouse: Wheelhouse) -> None:
    root = layout.runtime_root
    # -- install at A, as a runtime-prefix install from the wheelhouse
    with up.waiting(180, "install --runtime-root"):
        ran = await host.cli(
            "install", "--systemd", *layout.install_flags(relay.url),
            *layout.runtime_flags(wheelhouse),
        )  # fmt: skip
    assert f"{UNIT} is up" in ran.stdout
    assert layout.current() == A and layout.installed_versions() == [A]
    exec_start = (await host.show(UNIT, "ExecStart"))["ExecStart"]
    assert f"argv[]={root}/bin/relay-orchestrator run " in exec_start
    pid_a = await up.running(A)
    assert up.orch()["capabilities"]["selfUpgrade"] is True
    await up.spawn_agents(AGENTS)
    up.check_agents()

    # -- 1. A -> B: B registers, the relay settles it succeeded, agents untouched
    with up.waiting(120, f"the upgrade to {B} to settle"):
        command, took = await up.upgrade(B)
    assert (command["status"], command["error"]) == ("succeeded", None), command
    assert command["result"] == {"version": B, "fromVersion": A}
    pid_b = await up.running(B)
    assert pid_b != pid_a and not alive(pid_a)
    up.check_agents()
    assert layout.current() == B and layout.installed_versions() == sorted([A, B])
    assert not (root / "upgrade-pending").exists()
    assert up.orch()["upgrade"]["status"] == "succeeded"
    marker = layout.outcome_marker() or {}
    assert (marker.get("commandId"), marker.get("status")) == (command["id"], "succeeded")
    print(f"upgrade {A} -> {B}: succeeded in {took:.2f} s")

    # -- 2. back to A without force: the relay's rails refuse it, and so does the
    # orchestrator when the command reaches it all the same
    answer = await up.action({"action": "upgrade", "targetVersion": A})
    assert answer.status_code == 409
    assert f"refusing downgrade {B} -> {A}" in answer.text
    direct = relay.create_command(up.target, "orchestrator.upgrade", {
        "action": "upgrade", "orchestratorId": layout.orch_id, "targetVersion": A,
        "fromVersion": B, "providers": ["orchestrator"], "force": False})
    with up.waiting(20, "the downgrade to be refused"):
        await relay.wait_for(lambda: up.command(direct["id"]).get("status") in SETTLED)
    command = up.command(direct["id"])
    assert (command["status"], command["error"]) == (
        "failed", f"refusing downgrade {B} -> {A}; pass force to override")
    assert await host.main_pid() == pid_b
    assert layout.current() == B

    # -- 3. a version that does not exist: failed within seconds, with pip's words
    with up.waiting(60, "the upgrade to 9.9.9 to settle"):
        command, took = await up.upgrade("9.9.9")
    assert command["status"] == "failed", command
    assert "pip install relay-orchestrator==9.9.9 failed" in command["error"]
    assert "No matching distribution found for relay-orchestrator==9.9.9" in command["error"]
    assert took < 30, f"an install failure took {took:.1f} s to settle"
    assert await up.running(B) == pid_b  # never restarted
    up.check_agents()
    assert layout.current() == B
    assert "9.9.9" not in layout.installed_versions()
    assert not (root / "upgrade-pending").exists()
    print(f"upgrade to 9.9.9: failed in {took:.2f} s")

    # -- 4. a package that does not import: the verification refuses it, no restart
    with up.waiting(60, f"the upgrade to {B_NO_IMPORT} to settle"):
        command, took = await up.upgrade(B_NO_IMPORT)
    assert command["status"] == "failed", command
    assert command["error"].startswith("verify failed (exit 1): "), command["error"]
    assert "ImportError: broken on purpose (package)" in command["error"]
    assert await up.running(B) == pid_b
    up.check_agents()
    assert layout.current() == B
    assert B_NO_IMPORT not in layout.installed_versions()
    print(f"upgrade to {B_NO_IMPORT} (package import fails): refused in {took:.2f} s")

    # -- 5. `run` cannot import: the stable entry rolls it back at its second start
    with up.waiting(ROLLED_BACK_WITHIN, f"the upgrade to {B_RUN_IMPORT} to settle"):
        command, took = await up.upgrade(B_RUN_IMPORT)
    assert command["status"] == "failed", command
    assert command["error"].startswith(
        f"upgrade did not take effect: running {B}, wanted {B_RUN_IMPORT} "
        "(new version failed to start: "), command["error"]
    assert "ImportError: broken on purpose (run)" in command["error"]
    pid_b2 = await up.running(B)
    assert pid_b2 != pid_b
    up.check_agents()
    assert layout.current() == B
    assert not (root / "upgrade-pending").exists()
    assert not (root / "rollback-reason").exists()  # read by the process that came back
    assert up.orch()["upgrade"]["status"] == "failed"
    marker = layout.outcome_marker() or {}
    assert (marker.get("commandId"), marker.get("status")) == (command["id"], "failed")
    print(f"upgrade to {B_RUN_IMPORT} (run cannot import): rolled back in {took:.2f} s")

    # -- 6. imports, then exits before registering: rolled back by counting starts
    with up.waiting(ROLLED_BACK_WITHIN, f"the upgrade to {B_RUN_EXITS} to settle"):
        command, took = await up.upgrade(B_RUN_EXITS)
    assert command["status"] == "failed", command
    assert command["error"] == (
        f"upgrade did not take effect: running {B}, wanted {B_RUN_EXITS} "
        "(new version did not come up after 2 starts)")
    pid_b3 = await up.running(B)
    assert pid_b3 != pid_b2
    up.check_agents()
    assert layout.current() == B
    assert B in layout.installed_versions()  # the version to go back to is never pruned
    assert not (root / "upgrade-pending").exists()
    print(f"upgrade to {B_RUN_EXITS} (run exits): rolled back in {took:.2f} s")
