"""The outbox: what goes to the relay first, and in which order, seen on the wire."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import trio
import trio.testing

from orchestrator.daemon._journal import CommandState, Journal
from orchestrator.daemon._outbox import IDLE_FLUSH, MAX_IN_FLIGHT, Outbox

from .scripted_server import WAIT, Reply, Server, answer, relay_client


async def test_an_agent_report_goes_ahead_of_settles_waiting_to_go(
    server: Server,
    tmp_path: Path,
    nursery: trio.Nursery,
) -> None:
    settles = 3 * MAX_IN_FLIGHT
    gate = trio.Event()  # nothing is answered before the first batch is all in
    server.script(*[Reply(pieces=(answer({}),), gate=gate) for _ in range(settles + 1)])
    journal = Journal.open(tmp_path)
    try:
        async with relay_client(server.base) as client:
            outbox = Outbox(journal, client, "orch-1")
            # A burst of outcomes, then an agent crashes: all journaled before
            # the outbox gets to run.
            for n in range(settles):
                journal.record_intent(f"cmd_{n}", "agent.spawn", {"agentId": f"ag_{n}"})
                journal.record_outcome(f"cmd_{n}", {"status": "succeeded", "result": {}},
                                       order=(f"lane:agentId=ag_{n}",))
            journal.enqueue_report("ag_x", {"agentId": "ag_x", "status": "exited"})
            await nursery.start(outbox.run)
            await server.wait_until(lambda: len(server.requests) == MAX_IN_FLIGHT)
            first_batch = [seen.line.decode() for seen in server.requests]
            gate.set()
            await server.wait_until(lambda: len(server.requests) == settles + 1)
            with trio.fail_after(WAIT):
                await outbox.flush()
    finally:
        journal.close()
    # It goes in the first batch sent side by side, not behind the 48 settles
    # journaled before it.
    assert "PUT /api/orchestrators/orch-1/agents/ag_x HTTP/1.1" in first_batch
    lines = sorted(seen.line.decode() for seen in server.requests)
    assert lines == sorted(
        ["PUT /api/orchestrators/orch-1/agents/ag_x HTTP/1.1"]
        + [f"PATCH /api/commands/cmd_{n} HTTP/1.1" for n in range(settles)]
    )


async def test_reports_of_one_agent_keep_their_order_behind_its_settle(
    server: Server,
    tmp_path: Path,
    nursery: trio.Nursery,
) -> None:
    server.script(*[answer({}) for _ in range(2)])
    journal = Journal.open(tmp_path)
    try:
        async with relay_client(server.base) as client:
            outbox = Outbox(journal, client, "orch-1")
            journal.record_intent("cmd_1", "agent.stop", {"agentId": "ag_1"})
            journal.record_outcome("cmd_1", {"status": "succeeded", "result": {}},
                                   order=("lane:agentId=ag_1", "agent:ag_1"))
            journal.enqueue_report("ag_1", {"agentId": "ag_1", "status": "running"})
            await nursery.start(outbox.run)
            await server.wait_until(lambda: len(server.requests) == 2)
            with trio.fail_after(WAIT):
                await outbox.flush()
    finally:
        journal.close()
    # The report came after the settle that names the same agent: it waits its turn.
    assert [seen.line for seen in server.requests] == [
        b"PATCH /api/commands/cmd_1 HTTP/1.1",
        b"PUT /api/orchestrators/orch-1/agents/ag_1 HTTP/1.1",
    ]
    assert json.loads(server.requests[1].body)["status"] == "running"


@pytest.fixture
def slow_autojump() -> trio.testing.MockClock:
    # Jumps only once every task has waited 50 ms of real time: loopback
    # requests finish long before, so only the outbox's quiet wait is skipped.
    return trio.testing.MockClock(autojump_threshold=0.05)


async def test_delivered_marks_are_committed_once_the_outbox_is_quiet(
    server: Server,
    tmp_path: Path,
    nursery: trio.Nursery,
    slow_autojump: trio.testing.MockClock,
) -> None:
    server.script(answer({}))
    journal = Journal.open(tmp_path)
    try:
        async with relay_client(server.base) as client:
            outbox = Outbox(journal, client, "orch-1")
            journal.record_intent("cmd_1", "agent.stop", {"agentId": "ag_1"})
            journal.record_outcome("cmd_1", {"status": "succeeded", "result": {}})
            await nursery.start(outbox.run)
            with trio.fail_after(WAIT):
                await outbox.flush()
            # Delivered, but the mark waits: no commit for it alone.
            assert state_on_disk(journal.path, "cmd_1") == CommandState.DONE.value
            await trio.sleep(IDLE_FLUSH * 2)
            assert state_on_disk(journal.path, "cmd_1") == CommandState.SETTLED.value
    finally:
        journal.close()


def state_on_disk(path: Path, command_id: str) -> str:
    other = sqlite3.connect(path)
    try:
        [(state,)] = other.execute("SELECT state FROM commands WHERE id=?", (command_id,))
        return str(state)
    finally:
        other.close()


async def test_a_report_goes_out_while_settles_fill_every_slot(
    server: Server,
    tmp_path: Path,
    nursery: trio.Nursery,
) -> None:
    settles = MAX_IN_FLIGHT + 4
    gate = trio.Event()  # the settles in flight get no answer until the report is in
    server.script(*[Reply(pieces=(answer({}),), gate=gate) for _ in range(MAX_IN_FLIGHT)],
                  answer({}), *[answer({}) for _ in range(settles - MAX_IN_FLIGHT)])
    journal = Journal.open(tmp_path)
    try:
        async with relay_client(server.base) as client:
            outbox = Outbox(journal, client, "orch-1")
            for n in range(settles):
                journal.record_intent(f"cmd_{n}", "agent.spawn", {"agentId": f"ag_{n}"})
                journal.record_outcome(f"cmd_{n}", {"status": "succeeded", "result": {}},
                                       order=(f"lane:agentId=ag_{n}",))
            await nursery.start(outbox.run)
            await server.wait_until(lambda: len(server.requests) == MAX_IN_FLIGHT)
            journal.enqueue_report("ag_x", {"agentId": "ag_x", "status": "exited"})
            await server.wait_until(lambda: len(server.requests) == MAX_IN_FLIGHT + 1)
            assert server.requests[-1].line == (
                b"PUT /api/orchestrators/orch-1/agents/ag_x HTTP/1.1"
            )
            gate.set()
            with trio.fail_after(WAIT):
                await outbox.flush()
    finally:
        journal.close()
    assert len(server.requests) == settles + 1
