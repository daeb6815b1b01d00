"""What a restart settles for a command a crash left claimed (``_app._recover``),
and what a handler that crashes settles (``Dispatcher._act``).

The crash is real (SIGKILL of ``relay-orchestrator run``); the state it left
is the one the journal holds when a spawn was claimed and the process died
before its outcome was written: the command ``running`` at the relay, and
``claimed`` in the journal.
"""

from __future__ import annotations

import logging
import re
import signal
from pathlib import Path
from typing import Any

import httpx
import trio

from orchestrator.daemon._dispatcher import Handler
from orchestrator.daemon._journal import CommandState, Journal
from orchestrator.relay._wire import Command, Outcome

from .e2e import OrchProcess, registered, settle, spawn_params, wait_lines

TARGET = "orch:orch-crash"


async def claimed_at_a_crash(relay: Any, state_dir: Path, params: dict[str, Any]) -> str:
    """A spawn the dead orchestrator had claimed and not finished: its command id."""
    command = relay.create_command(TARGET, "agent.spawn", params)
    async with httpx.AsyncClient(base_url=relay.url, trust_env=False) as http:
        answer = await http.patch(f"/api/commands/{command['id']}", json={"status": "running"},
                                  headers={"Authorization": f"Bearer {relay.token}"})
    assert answer.status_code == 200, answer.text
    journal = Journal.open(state_dir)
    try:
        assert journal.record_intent(command["id"], "agent.spawn", params)
        journal.set_state(command["id"], CommandState.CLAIMED)
        journal.make_durable()
    finally:
        journal.close()
    return str(command["id"])


async def test_a_spawn_in_flight_at_a_crash_is_never_settled_with_another_agent(
    relay: Any, orch_process: OrchProcess
) -> None:
    """Before: a spawn without ``spawnRequestId`` matched any running agent
    without one (``None == None``) and was settled ``succeeded`` with its pid."""
    orch_process.start()
    await registered(relay, 1)
    base = orch_process.base
    first = await settle(relay, relay.create_command(
        TARGET, "agent.spawn", spawn_params(base, "ag_a", base / "a.rec", "--term", "exit")))
    assert first["status"] == "succeeded", first["error"]
    kept = await settle(relay, relay.create_command(TARGET, "agent.spawn", spawn_params(
        base, "ag_k", base / "k.rec", "--term", "exit", spawnRequestId="sr_k")))
    assert kept["status"] == "succeeded", kept["error"]
    await wait_lines(base / "a.rec", "started")
    await wait_lines(base / "k.rec", "started")
    assert orch_process.proc is not None
    orch_process.proc.send_signal(signal.SIGKILL)
    orch_process.proc.wait()

    state = orch_process.tmp / "state"
    no_request_id = await claimed_at_a_crash(
        relay, state, spawn_params(base, "ag_b", base / "b.rec"))
    other_agent = await claimed_at_a_crash(  # the same request id, another agent named
        relay, state, spawn_params(base, "ag_c", base / "c.rec", spawnRequestId="sr_k"))
    took_effect = await claimed_at_a_crash(  # it did start ag_k before the crash
        relay, state, spawn_params(base, "ag_k", base / "k.rec", spawnRequestId="sr_k"))
    orch_process.start()
    await registered(relay, 2)
    for command_id in (no_request_id, other_agent):
        settled = await settle(relay, relay.get_command(command_id) or {"id": command_id})
        assert settled["status"] == "failed", settled
        assert settled["error"] == "orchestrator restarted before completing agent.spawn"
    settled = await settle(relay, relay.get_command(took_effect) or {"id": took_effect})
    assert settled["status"] == "succeeded", settled
    assert settled["result"]["agentId"] == "ag_k"
    assert settled["result"]["pid"] == kept["result"]["pid"]


async def test_a_crashed_handler_settles_a_fixed_sentence_with_the_error_id_of_its_log_line(
    relay: Any, start_orchestrator: Any, caplog: Any
) -> None:
    def crashing(orch: Any) -> Handler:
        async def handle(command: Command) -> Outcome:
            raise RuntimeError(f"cannot open /home/u/secret with env {command.params}")

        return handle

    caplog.set_level(logging.ERROR, logger="relay_orchestrator.daemon")
    logger = logging.getLogger("relay_orchestrator")
    propagate, logger.propagate = logger.propagate, True
    try:
        orch = await start_orchestrator(extra_handlers={"test.crash": crashing})
        with trio.fail_after(10):
            done = await settle(relay, relay.create_command(
                orch.agent_id, "test.crash", {"env": {"API_KEY": "sk-very-secret"}}))
    finally:
        logger.propagate = propagate
    assert done["status"] == "failed"
    error = done["error"]
    assert "secret" not in error and "/home" not in error and "RuntimeError" not in error
    match = re.fullmatch(r"internal error while handling test\.crash \(error (err_[0-9a-f]{12}); "
                         r"the orchestrator's log has the details\)", error)
    assert match, error
    logged = [r for r in caplog.records if "crashed its handler" in r.getMessage()]
    assert len(logged) == 1 and match[1] in logged[0].getMessage()
    assert logged[0].exc_info is not None  # the details are in the log
