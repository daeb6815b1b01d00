"""Presence on its own (trio's MockClock: no real waiting): registration,
heartbeats on their interval, start-up through a relay outage, and a relay
that forgot us."""

from __future__ import annotations

import trio
import trio.testing

from orchestrator._errors import RelayNotFound, RelayUnavailable
from orchestrator.daemon._presence import Identity, Presence
from orchestrator.relay._wire import Heartbeat, Registration, RegistrationAnswer


class FakeRelay:
    """A relay client that records what it was sent, down until ``up_at``."""

    base_url = "http://relay.test"

    def __init__(self, *, up_at: float = 0.0) -> None:
        self.up_at = up_at
        self.calls: list[tuple[float, str]] = []
        self.forget_next_heartbeat = False

    def _answer(self, what: str) -> None:
        now = trio.current_time()
        self.calls.append((now, what))
        if now < self.up_at:
            raise RelayUnavailable("connection refused")

    async def register(self, registration: Registration) -> RegistrationAnswer:
        self._answer("register")
        return RegistrationAnswer(id=registration.id, agent_id=f"orch:{registration.id}")

    async def heartbeat(self, orchestrator_id: str, heartbeat: Heartbeat) -> None:
        self._answer("heartbeat")
        if self.forget_next_heartbeat:
            self.forget_next_heartbeat = False
            raise RelayNotFound("unknown orchestrator", status=404)


def presence(relay: FakeRelay, statuses: list[str]) -> Presence:
    identity = Identity(id="o1", version="1.0.0", base_dir="/srv", supervisor="none",
                        self_unit=None, self_upgrade=False, providers=["command"])
    return Presence(identity, relay, lambda: [], heartbeat_interval=15.0,  # type: ignore[arg-type]
                    on_status=statuses.append)


async def test_registers_then_beats_on_its_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    relay, statuses = FakeRelay(), []
    async with trio.open_nursery() as nursery:
        p = await nursery.start(presence(relay, statuses).run)
        assert p.agent_id == "orch:o1" and p.connected
        await trio.sleep(50)
        nursery.cancel_scope.cancel()
    assert relay.calls == [(0.0, "register"), (15.0, "heartbeat"), (30.0, "heartbeat"),
                           (45.0, "heartbeat")]
    assert statuses == ["connected to http://relay.test; 0 agents"]


async def test_a_relay_outage_delays_the_start_by_the_ready_timeout_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    relay, statuses = FakeRelay(up_at=60.0), []
    async with trio.open_nursery() as nursery:
        p = await nursery.start(presence(relay, statuses).run)
        started = trio.current_time()
        assert not p.connected
        assert "unreachable (connection refused)" in p.status_line()
        with trio.fail_after(120):
            await p.registered.wait()
        nursery.cancel_scope.cancel()
    assert 10.0 <= started < 20.0  # the ready timeout, then the next attempt's backoff
    assert trio.current_time() >= 60.0
    assert statuses[-1] == "connected to http://relay.test; 0 agents"


async def test_a_relay_that_forgot_us_is_registered_with_again_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    relay, statuses = FakeRelay(), []
    async with trio.open_nursery() as nursery:
        p = await nursery.start(presence(relay, statuses).run)
        relay.forget_next_heartbeat = True
        await trio.sleep(20)
        nursery.cancel_scope.cancel()
    assert relay.calls[:3] == [(0.0, "register"), (15.0, "heartbeat"), (15.0, "register")]
    assert p.registrations == 2
