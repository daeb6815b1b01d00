"""Backoff and stream timing, on trio's mock clock."""

from __future__ import annotations

import random

import trio
import trio.testing

from orchestrator.relay._backoff import Backoff


def test_delays_grow_double_jittered_and_cap() -> None:
    b = Backoff(rng=random.Random(1))
    delays = [b.next_delay() for _ in range(12)]
    for n, d in enumerate(delays):
        base = min(15.0, 0.25 * 2**n)
        assert base * 0.5 <= d <= base
    assert max(delays) <= 15.0
    assert delays[-1] >= 7.5
    b.success()
    assert b.next_delay() <= 0.25


async def test_reset_only_after_a_healthy_minute(autojump_clock: trio.testing.MockClock) -> None:
    b = Backoff(rng=random.Random(2))
    for _ in range(6):
        b.next_delay()
    b.healthy()
    await trio.sleep(30)
    b.healthy()
    assert b.failures == 6
    await trio.sleep(31)
    b.healthy()
    assert b.failures == 0


class SilentStreamClient:
    """Stands in for RelayClient.stream: connects, then says nothing, ever."""

    base_url = "http://relay.test"

    def __init__(self) -> None:
        self.opened: list[float] = []

    def stream(self, target: str) -> object:
        client = self

        class _Ctx:
            async def __aenter__(self) -> object:
                client.opened.append(trio.current_time())

                async def lines() -> object:
                    await trio.sleep_forever()
                    yield ""  # pragma: no cover

                return lines()

            async def __aexit__(self, *exc: object) -> None:
                return None

        return _Ctx()


async def test_silent_stream_is_dropped_after_45s_and_reopened(
    autojump_clock: trio.testing.MockClock,
) -> None:
    from orchestrator.daemon._feed import CommandFeed

    client = SilentStreamClient()
    feed = CommandFeed(client, lambda: "orch:x", lambda c: None,  # type: ignore[arg-type]
                       backoff=Backoff(rng=random.Random(3)))
    with trio.move_on_after(200):
        await feed.run()
    gaps = [b - a for a, b in zip(client.opened, client.opened[1:], strict=False)]
    assert len(client.opened) >= 3
    # each gap is the 45 s silence plus a jittered backoff of at most 15 s
    assert all(45 <= g <= 45 + 15 for g in gaps)


class NoStreamClient:
    """A relay without a command stream (404) that answers the pending list."""

    base_url = "http://relay.test"

    def __init__(self, pending: list[dict[str, object]]) -> None:
        self.pending = pending
        self.polls = 0

    def stream(self, target: str) -> object:
        from orchestrator._errors import RelayNotFound

        class _Ctx:
            async def __aenter__(self) -> object:
                raise RelayNotFound("GET /api/commands/stream: 404", status=404)

            async def __aexit__(self, *exc: object) -> None:
                return None

        return _Ctx()

    async def pending_commands(self, target: str) -> list[dict[str, object]]:
        self.polls += 1
        return list(self.pending)


async def test_relay_without_stream_is_polled(autojump_clock: trio.testing.MockClock) -> None:
    from orchestrator.daemon._feed import CommandFeed

    client = NoStreamClient([{"id": "cmd_1", "type": "agent.stop", "status": "pending"}])
    seen: list[str] = []
    feed = CommandFeed(client, lambda: "orch:x", lambda c: seen.append(c.id),  # type: ignore[arg-type]
                       poll_interval=1.0)
    with trio.move_on_after(10.5):
        await feed.run()
    assert feed.mode == "poll"
    assert 9 <= client.polls <= 12  # once a second
    assert set(seen) == {"cmd_1"}  # the dispatcher dedupes the repeats via the journal
