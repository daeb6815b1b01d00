"""Exponential backoff with jitter (PROTOCOL.md 3.1: 0.25 s → 15 s cap).

Time comes only from ``trio.current_time()``, so ``MockClock`` drives it.
"""

from __future__ import annotations

import random

import attrs
import trio

START = 0.25
CAP = 15.0
HEALTHY_RESET = 60.0
_JITTER = random.Random()  # one for all: seeding a new one reads os.urandom


@attrs.define
class Backoff:
    start: float = START
    cap: float = CAP
    healthy_reset: float = HEALTHY_RESET
    rng: random.Random = attrs.field(factory=lambda: _JITTER)  # tests pass their own
    failures: int = 0
    _healthy_since: float | None = None

    def next_delay(self) -> float:
        """The delay before the next attempt: grows ×2 per failure, jittered to [½, 1]."""
        base = min(self.cap, self.start * (2 ** min(self.failures, 32)))
        self.failures += 1
        self._healthy_since = None
        return float(base * self.rng.uniform(0.5, 1.0))

    async def sleep(self) -> float:
        delay = self.next_delay()
        await trio.sleep(delay)
        return delay

    def success(self) -> None:
        """Record a success; the count resets at once."""
        self.failures = 0

    def healthy(self) -> None:
        """For long-lived connections: reset only after a healthy minute."""
        now = trio.current_time()
        if self._healthy_since is None:
            self._healthy_since = now
        elif now - self._healthy_since >= self.healthy_reset:
            self.failures = 0
