"""The command feed on its own (trio's MockClock: no real waiting): bytes of
the event stream in, commands out; a silent stream is dropped and reopened."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.testing

from orchestrator._errors import RelayUnavailable
from orchestrator.daemon._feed import MAX_EVENT_LINE, CommandFeed
from orchestrator.relay._backoff import Backoff
from orchestrator.relay._wire import Command


def event(command_id: str) -> bytes:
    body = {"id": command_id, "type": "agent.stop", "params": {"agentId": "a"},
            "status": "pending", "futureField": 1}  # unknown keys are tolerated
    return b"event: command\ndata: " + json.dumps(body).encode() + b"\n\n"


class ScriptedRelay:
    """A relay client whose streams play scripts: bytes, pauses (seconds), an error."""

    def __init__(self, *scripts: list[Any]) -> None:
        self.scripts = list(scripts)
        self.targets: list[str] = []

    @asynccontextmanager
    async def stream(self, target: str) -> AsyncIterator[AsyncIterator[bytes]]:
        self.targets.append(target)
        script = self.scripts.pop(0) if self.scripts else [3600.0]

        async def play() -> AsyncIterator[bytes]:
            for step in script:
                if isinstance(step, float):
                    await trio.sleep(step)
                elif isinstance(step, Exception):
                    raise step
                else:
                    yield step

        yield play()


async def run_feed(relay: ScriptedRelay, until: int, *, silence: float = 45.0) -> list[Command]:
    got: list[Command] = []
    done = trio.Event()

    def deliver(command: Command) -> None:
        got.append(command)
        if len(got) == until:
            done.set()

    feed = CommandFeed(relay, lambda: "orch:o1", deliver,  # type: ignore[arg-type]
                       silence_timeout=silence, backoff=Backoff(start=0.25, cap=1.0))
    async with trio.open_nursery() as nursery:
        await nursery.start(feed.run)
        with trio.fail_after(600):
            await done.wait()
        nursery.cancel_scope.cancel()
    return got


async def test_events_cut_anywhere_become_commands_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stream = b": keepalive\r\n" + event("c1") + b"event: other\ndata: {}\n\n" + event("c2")
    pieces = [stream[i:i + 7] for i in range(0, len(stream), 7)]
    got = await run_feed(ScriptedRelay(pieces), until=2)
    assert [c.id for c in got] == ["c1", "c2"]
    assert got[0].params == {"agentId": "a"}


async def test_keepalives_hold_a_quiet_stream_and_silence_drops_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    keepalives = [b": keepalive\n", 10.0] * 5  # 50 s, never 45 s without a byte
    relay = ScriptedRelay([*keepalives, event("c1"), 100.0], [event("c2")])
    started = trio.current_time()
    got = await run_feed(relay, until=2, silence=45.0)
    assert [c.id for c in got] == ["c1", "c2"]
    assert len(relay.targets) == 2  # reopened once, after 45 s of silence
    assert trio.current_time() - started >= 50.0 + 45.0


async def test_a_broken_stream_is_reopened_after_a_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    relay = ScriptedRelay([event("c1"), RelayUnavailable("cut")],
                          [b"data: " + b"x" * (MAX_EVENT_LINE + 1)],  # a line over the limit
                          [b"event: command\ndata: {"],  # closed half way through an event
                          [event("c2")])
    got = await run_feed(relay, until=2)
    assert [c.id for c in got] == ["c1", "c2"]
    assert relay.targets == ["orch:o1"] * 4
