"""Self-upgrade under launchd: the restart is ``launchctl kickstart -k``, never ``bootout``.

There is no launchd here: the orchestrator runs in-process with
``--supervisor launchd`` and a label, against the dev relay, and a stand-in
``launchctl`` first on PATH records how it is called (with its session id).
The install is the non-prefix one: the stand-in ``relay-orchestrator`` on
PATH is the upgrade command. A second orchestrator on the same state dir
plays the process launchd starts again: not the wanted version, so it
settles the upgrade ``failed`` itself.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio

from orchestrator._version import current_version
from orchestrator.daemon._app import run_orchestrator

from ..conftest import TOKEN, make_settings
from ..supervisors.stand_ins import StandIns

LABEL = "com.example.relay-orchestrator"
TARGET = "9.0.0"
WAIT = 20


async def run_until_stopped(settings: Any, stopped: trio.Event, *,
                            task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
    await run_orchestrator(settings, task_status=task_status)
    stopped.set()


async def test_upgrade_restarts_through_a_detached_kickstart(
    tmp_path: Path, relay: Any, nursery: trio.Nursery, stand_ins: StandIns
) -> None:
    stand_ins.add("launchctl")
    stand_ins.add("relay-orchestrator")  # the non-prefix upgrade command: succeeds
    settings = make_settings(tmp_path, relay.url, supervisor="launchd", self_unit=LABEL,
                             id="orch-launchd", heartbeat_interval="1")
    stopped = trio.Event()
    orch = await nursery.start(partial(run_until_stopped, settings, stopped))
    registered = relay.orchestrator(orch.id) or {}
    assert (registered["supervisor"], registered["selfUnit"]) == ("launchd", LABEL)
    assert registered["capabilities"]["selfUpgrade"] is True

    async with httpx.AsyncClient(base_url=relay.url,
                                 headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        answer = await client.post(f"/api/orchestrators/{orch.id}/action",
                                   json={"action": "upgrade", "targetVersion": TARGET})
    assert answer.status_code == 202, answer.text
    command_id = answer.json()["id"]
    with trio.fail_after(WAIT):
        await stopped.wait()  # the old process ends by itself once the restart is asked for

    # The detached helper records itself when it runs: a file another process
    # writes, polled at short intervals (no event to wait on).
    with trio.fail_after(WAIT):
        while len(calls := stand_ins.calls()) < 2:  # noqa: ASYNC110
            await trio.sleep(0.01)
    upgrade, kickstart = calls
    assert upgrade["argv"] == ["relay-orchestrator", "upgrade", "--version", TARGET,
                               "--no-restart"]
    assert kickstart["argv"] == ["launchctl", "kickstart", "-k", f"gui/{os.getuid()}/{LABEL}"]
    assert kickstart["sid"] == kickstart["pid"] != os.getsid(0)  # detached: its own session
    with trio.fail_after(WAIT):  # nobody reaps it in production; here the test does
        await trio.to_thread.run_sync(os.waitpid, kickstart["pid"], 0, abandon_on_cancel=True)
    assert not any("bootout" in call["argv"] for call in calls)
    assert (relay.get_command(command_id) or {})["status"] == "running"  # left to the relay

    # launchd starts the job again: here the same version comes back, so that
    # process settles the upgrade failed itself, right after registering.
    await nursery.start(run_orchestrator, settings)
    with trio.fail_after(WAIT):
        await relay.wait_for(
            lambda: (relay.get_command(command_id) or {}).get("status") == "failed")
    command = relay.get_command(command_id) or {}
    assert command["error"] == (
        f"upgrade did not take effect: running {current_version()}, wanted {TARGET}")
    assert (relay.orchestrator(orch.id) or {})["upgrade"]["status"] == "failed"


async def test_a_restart_that_cannot_be_asked_for_fails_the_upgrade(
    tmp_path: Path, relay: Any, nursery: trio.Nursery, stand_ins: StandIns
) -> None:
    stand_ins.add("relay-orchestrator")  # installs fine; there is no launchctl to restart with
    settings = make_settings(tmp_path, relay.url, supervisor="launchd", self_unit=LABEL,
                             id="orch-launchd-norestart")
    stopped = trio.Event()
    orch = await nursery.start(partial(run_until_stopped, settings, stopped))
    command = relay.create_command(f"orch:{orch.id}", "orchestrator.upgrade",
                                   {"action": "upgrade", "targetVersion": TARGET})
    with trio.fail_after(WAIT):
        await relay.wait_for(
            lambda: (relay.get_command(command["id"]) or {}).get("status") == "failed")
    error = (relay.get_command(command["id"]) or {})["error"]
    assert error.startswith(f"could not restart to run {TARGET}: cannot run launchctl"), error
    assert not stopped.is_set()  # it carries on, registered as it was
    assert (relay.orchestrator(orch.id) or {})["status"] == "online"
    assert orch.journal.get_meta("pending_upgrade") is None
