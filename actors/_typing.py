"""Input into one running agent: only when it is ready, checked as taken.

For an agent whose screens are known (an ``ActivityTracker`` follows it),
everything typed waits until it is ``ready`` (at most ``input_timeout``); an
agent that is ``asking`` or ``needs-login`` is never typed into; after the
paste and its Enter, the input must leave the prompt line (or the agent get
busy) within ``TAKEN_WITHIN``, or Enter is pressed once more. Without a
tracker (a plain session, a ``command`` provider) input goes in as it comes.

A compaction is followed on the screen: until it has begun (or the CLI said
it will not), then until the agent is ready again.
"""

from __future__ import annotations

import logging

import attrs
import trio

from ._activity import ActivityTracker
from ._params import CommandRejected
from ._screens import Activity, Screen
from ._session import Session

log = logging.getLogger("relay_orchestrator.actors")

TAKEN_WITHIN = 3.0  # typed input leaves the prompt line this soon, or Enter is pressed again
COMPACT_BEGIN = 5.0  # a compaction shows on the screen this soon, or the CLI did none


def waiting_error(screen: Screen) -> CommandRejected:
    return CommandRejected(f"agent is waiting for an answer: {screen.question or ''}")


@attrs.frozen(kw_only=True)
class Typist:
    agent_id: str
    session: Session
    ended: trio.Event  # the agent's process ended
    tracker: ActivityTracker | None
    input_timeout: float
    enter_after: float = 0.0

    async def type(self, text: str) -> None:
        """Type ``text`` and Enter, when the agent is ready for it."""
        if self.ended.is_set():
            raise CommandRejected(f"agent {self.agent_id} ended before it took its input")
        tracker = self.tracker
        if tracker is not None:
            await self._until_ready(tracker)
        with trio.move_on_after(self.input_timeout) as scope:
            await self.session.send(text, enter_after=self.enter_after)
        if scope.cancelled_caught:
            raise CommandRejected(
                f"agent {self.agent_id} did not take its input within {self.input_timeout:g} s"
            )
        if tracker is not None:
            await self._confirm_taken(tracker, text)

    async def ready(self) -> bool:
        """Whether the agent is at its prompt now (always, when nothing tells)."""
        return self.tracker is None or (await self.tracker.refresh()).activity is Activity.READY

    async def _until_ready(self, tracker: ActivityTracker) -> None:
        screen = await tracker.refresh()
        if not (screen.activity is Activity.READY or screen.waiting):
            screen = await tracker.wait_for(
                lambda s: s.activity is Activity.READY,
                self.input_timeout,
                stop=lambda s: s.waiting,
            )
            if self.ended.is_set():
                raise CommandRejected(f"agent {self.agent_id} ended before it took its input")
            if not (screen.activity is Activity.READY or screen.waiting):
                raise CommandRejected(
                    f"agent {self.agent_id} was not ready for input within "
                    f"{self.input_timeout:g} s ({screen.activity.value})"
                )
        if screen.waiting:
            raise waiting_error(screen)

    async def _confirm_taken(self, tracker: ActivityTracker, text: str) -> None:
        head = text.strip().split("\n", 1)[0][:24].strip()

        def taken(screen: Screen) -> bool:
            return screen.activity is not Activity.READY or head not in screen.input_line

        with trio.move_on_after(TAKEN_WITHIN):
            while True:
                await tracker.changed()
                if tracker.closed or taken(tracker.screen):
                    return
        if not taken(await tracker.refresh()):
            log.info("agent %s: its input was not submitted; pressing Enter again", self.agent_id)
            await self.session.send_keys(["Enter"])

    async def compaction(self, within: float) -> bool:
        """After the compaction input: until it has begun (or the CLI refused
        it), then until the agent is ready again (at most ``within``).
        Whether it compacted: a CLI that said no, or that showed no
        compaction within COMPACT_BEGIN, did not."""
        tracker = self.tracker
        assert tracker is not None
        screen = await tracker.wait_for(
            lambda s: s.activity is Activity.BUSY or s.compact_refused or s.compact_done,
            COMPACT_BEGIN,
            stop=lambda s: s.waiting,
        )
        began = screen.activity is Activity.BUSY or screen.compact_done
        if began and not screen.compact_refused:
            screen = await tracker.wait_for(
                lambda s: s.activity is Activity.READY, within, stop=lambda s: s.waiting
            )
        if self.ended.is_set():
            raise CommandRejected(f"agent {self.agent_id} ended while compacting")
        if screen.waiting:
            raise waiting_error(screen)
        if screen.activity is not Activity.READY:
            raise CommandRejected(
                f"agent {self.agent_id} did not finish compacting within {within:g} s"
            )
        return began and not screen.compact_refused
