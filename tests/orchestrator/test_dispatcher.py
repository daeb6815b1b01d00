"""The dispatcher on its own (trio's MockClock: no real waiting), with a real
journal on disk and a relay client that records what it was asked.

What a user relies on: a command is acted on once, in its agent's order, a
slow agent does not hold up another, a claim the relay did not answer is
retried rather than dropped, and a command that is not ours is left alone.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from orchestrator._errors import RelayConflict, RelayNotFound, RelayUnavailable
from orchestrator.daemon._dispatcher import CLAIM_AHEAD, Dispatcher, Handler, Rejected
from orchestrator.daemon._journal import CommandState, Journal
from orchestrator.relay._backoff import Backoff
from orchestrator.relay._wire import Command, Outcome


class FakeRelay:
    """A relay client: claims answer from a script per command id, default ours."""

    def __init__(self) -> None:
        self.claims: list[tuple[float, str]] = []
        self.reads: list[str] = []
        self.script: dict[str, list[BaseException | None]] = {}
        self.status_at_relay: dict[str, str] = {}

    async def patch_command(self, command_id: str, body: dict[str, Any]) -> None:
        assert body == {"status": "running"}
        self.claims.append((trio.current_time(), command_id))
        answers = self.script.get(command_id)
        answer = answers.pop(0) if answers else None
        if answer is not None:
            raise answer

    async def get_command(self, command_id: str) -> dict[str, Any]:
        self.reads.append(command_id)
        if command_id not in self.status_at_relay:
            raise RelayNotFound("no such command", status=404)
        return {"id": command_id, "status": self.status_at_relay[command_id]}


def command(command_id: str, type_: str = "agent.stop", **params: Any) -> Command:
    return Command(id=command_id, type=type_, params=params)


class Harness:
    def __init__(self, journal: Journal, relay: FakeRelay) -> None:
        self.journal, self.relay = journal, relay
        self.handlers: dict[str, Handler] = {}
        self.dispatcher = Dispatcher(
            journal, relay, self.handlers, on_outcome=self._outcome,  # type: ignore[arg-type]
            backoff_factory=lambda: Backoff(rng=random.Random(7)),
        )
        self.acted: list[tuple[float, str]] = []
        self.outcomes = 0

    def _outcome(self) -> None:
        self.outcomes += 1

    def state(self, command_id: str) -> CommandState:
        entry = self.journal.command(command_id)
        assert entry is not None
        return entry.state

    def outcome(self, command_id: str) -> dict[str, Any] | None:
        entry = self.journal.command(command_id)
        assert entry is not None
        return entry.outcome


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    journal = Journal.open(tmp_path)
    h = Harness(journal, FakeRelay())
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(h.dispatcher.run)
            yield h
            nursery.cancel_scope.cancel()
    finally:
        journal.close()


def act_after(h: Harness, delays: dict[str, float]) -> Handler:
    """A handler that takes ``delays[id]`` seconds (0 by default) and succeeds."""

    async def handle(cmd: Command) -> Outcome:
        await trio.sleep(delays.get(cmd.id, 0.0))
        h.acted.append((trio.current_time(), cmd.id))
        return Outcome.succeeded({"id": cmd.id})

    return handle


async def settled(h: Harness) -> None:
    with trio.fail_after(3600):
        await h.dispatcher.wait_idle()


async def test_a_command_seen_twice_is_acted_on_once(
    harness: Harness, autojump_clock: trio.testing.MockClock,
) -> None:
    h = harness
    h.handlers["agent.stop"] = act_after(h, {})
    h.dispatcher.submit(command("c1", agentId="a"))
    h.dispatcher.submit(command("c1", agentId="a"))
    await settled(h)
    h.dispatcher.submit(command("c1", agentId="a"))  # again, after it was done
    await settled(h)
    assert [cid for _, cid in h.acted] == ["c1"]
    assert [cid for _, cid in h.relay.claims] == ["c1"]
    assert h.state("c1") is CommandState.DONE
    assert h.outcome("c1") == {"status": "succeeded", "result": {"id": "c1"}}
    assert h.outcomes == 1


async def test_one_agents_commands_keep_their_order_and_a_slow_agent_holds_up_no_other(
    harness: Harness, autojump_clock: trio.testing.MockClock,
) -> None:
    h = harness
    h.handlers["agent.stop"] = act_after(h, {"a1": 30.0, "a2": 1.0})
    h.dispatcher.submit(command("a1", agentId="slow"))
    h.dispatcher.submit(command("a2", agentId="slow"))
    h.dispatcher.submit(command("b1", agentId="quick"))
    await settled(h)
    order = [cid for _, cid in h.acted]
    assert order == ["b1", "a1", "a2"]
    times = dict((cid, t) for t, cid in h.acted)
    assert times["b1"] < 1.0  # not behind the slow agent's 30 s
    assert times["a2"] >= times["a1"] + 1.0  # one at a time within a lane


async def test_the_next_claims_leave_while_the_first_command_is_acted_on(
    harness: Harness, autojump_clock: trio.testing.MockClock,
) -> None:
    h = harness
    h.handlers["agent.stop"] = act_after(h, {"c0": 60.0})
    for n in range(CLAIM_AHEAD + 4):
        h.dispatcher.submit(command(f"c{n}", agentId="a"))
    await trio.sleep(30)  # the first is still being acted on
    claimed_early = {cid for _, cid in h.relay.claims}
    assert {f"c{n}" for n in range(CLAIM_AHEAD + 1)} <= claimed_early
    assert f"c{CLAIM_AHEAD + 3}" not in claimed_early  # bounded: not the whole queue
    assert [cid for _, cid in h.acted] == []
    await settled(h)
    assert [cid for _, cid in h.acted] == [f"c{n}" for n in range(CLAIM_AHEAD + 4)]


async def test_a_claim_the_relay_fails_is_retried_with_backoff_never_dropped(
    harness: Harness, autojump_clock: trio.testing.MockClock,
) -> None:
    h = harness
    h.handlers["agent.stop"] = act_after(h, {})
    h.relay.script["c1"] = [RelayUnavailable("HTTP 503", status=503)] * 6
    h.dispatcher.submit(command("c1", agentId="a"))
    await settled(h)
    times = [t for t, _ in h.relay.claims]
    assert len(times) == 7
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    # PROTOCOL 3.1's backoff: from 0.25 s, doubling, jittered to [1/2, 1] of each step.
    for n, gap in enumerate(gaps):
        assert 0.25 * 2**n / 2 <= gap <= 0.25 * 2**n
    assert [cid for _, cid in h.acted] == ["c1"]
    assert h.state("c1") is CommandState.DONE


async def test_a_command_the_relay_gave_to_another_is_left_alone(
    harness: Harness, autojump_clock: trio.testing.MockClock,
) -> None:
    h = harness
    h.handlers["agent.stop"] = act_after(h, {})
    h.relay.script["c1"] = [RelayConflict("already claimed", status=409)]
    h.relay.script["c2"] = [RelayNotFound("no such command", status=404)]
    h.dispatcher.submit(command("c1", agentId="a"))
    h.dispatcher.submit(command("c2", agentId="b"))
    await settled(h)
    assert h.acted == []
    assert h.state("c1") is CommandState.DROPPED
    assert h.state("c2") is CommandState.DROPPED
    assert h.outcomes == 0


async def test_a_claim_whose_answer_was_lost_is_read_back_before_it_counts_as_not_ours(
    harness: Harness, autojump_clock: trio.testing.MockClock,
) -> None:
    h = harness
    h.handlers["agent.stop"] = act_after(h, {})
    lost = RelayUnavailable("connection reset", status=None)
    # c1: our first claim took effect but its answer was lost; the retry sees 409.
    h.relay.script["c1"] = [lost, RelayConflict("already running", status=409)]
    h.relay.status_at_relay["c1"] = "running"
    # c2: lost too, but another orchestrator had it: the relay says succeeded.
    h.relay.script["c2"] = [lost, RelayConflict("already running", status=409)]
    h.relay.status_at_relay["c2"] = "succeeded"
    h.dispatcher.submit(command("c1", agentId="a"))
    h.dispatcher.submit(command("c2", agentId="b"))
    await settled(h)
    assert sorted(h.relay.reads) == ["c1", "c2"]
    assert [cid for _, cid in h.acted] == ["c1"]
    assert h.state("c2") is CommandState.DROPPED


async def test_a_rejected_command_fails_with_its_sentence_and_a_crash_names_only_an_error_id(
    harness: Harness, autojump_clock: trio.testing.MockClock,
) -> None:
    h = harness

    async def reject(cmd: Command) -> Outcome:
        raise Rejected("agentId must be a string")

    async def crash(cmd: Command) -> Outcome:
        raise RuntimeError("secret=hunter2 in /home/someone/path")

    h.handlers["agent.stop"] = reject
    h.handlers["agent.compact"] = crash
    h.dispatcher.submit(command("c1", agentId="a"))
    h.dispatcher.submit(command("c2", "agent.compact", agentId="b"))
    h.dispatcher.submit(command("c3", "agent.dance", agentId="c"))
    await settled(h)
    assert h.outcome("c1") == {"status": "failed", "error": "agentId must be a string"}
    crashed = h.outcome("c2")
    assert crashed is not None and crashed["status"] == "failed"
    assert "internal error while handling agent.compact (error err_" in crashed["error"]
    assert "hunter2" not in crashed["error"] and "/home" not in crashed["error"]
    assert h.outcome("c3") == {"status": "failed",
                               "error": "unsupported command type: agent.dance"}
    assert h.outcomes == 3


async def test_after_stop_accepting_new_commands_are_not_taken(
    harness: Harness, autojump_clock: trio.testing.MockClock,
) -> None:
    h = harness
    h.handlers["agent.stop"] = act_after(h, {})
    h.dispatcher.stop_accepting()
    h.dispatcher.submit(command("c1", agentId="a"))
    await settled(h)
    assert h.acted == [] and h.relay.claims == []
    assert h.journal.command("c1") is None  # not even an intent: the next process takes it
