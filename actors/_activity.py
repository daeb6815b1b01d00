"""What an agent in tmux is doing, from its screen, after its output.

The tracker of one agent waits for its ``output.log`` to be written to
(``_filewatch.py``), lets the output settle briefly (``QUIET``; output that
keeps flowing, a spinner say, is read after ``MAX_DELAY``, then less often
while the screen says the same), then reads the pane once and hands
the text to the provider's recognizer (``_screens.py``). A new activity or
question is reported through ``on_change``; a question the provider's
policy answers (folder trust, the environment's API key) is answered
through ``answer``. A quiet agent costs nothing: nothing is read until it
prints.

``wait_for`` lets the actor wait, bounded, for an activity (typing only
into a ``ready`` agent, a compaction's end).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

import trio

from ._filewatch import Watched
from ._params import CommandRejected
from ._screens import Activity, Screen, recognize

log = logging.getLogger("relay_orchestrator.actors")

QUIET = 0.04  # output settles this long before the screen is read
MAX_DELAY = 0.15  # … but output that keeps flowing is read this soon
FLOWING_MAX = 1.0  # … and, while what it shows stays the same, less often, down to this
ANSWER_LIMIT = 8  # keys pressed for one question; still there after them, it is left to a person
STARTUP_SETTLE = 0.8  # a prompt at start-up holds still this long before it counts as ready
ANSWER_SETTLE = 0.6  # a question's screen holds still this long before a key is pressed
ANSWER_RECHECK = 1.5  # a key that changed nothing this long is pressed again

Capture = Callable[[], Awaitable[str | None]]
Answer = Callable[[Screen], Sequence[str] | None]


class ActivityTracker:
    """Follows one agent's screen while its process runs (``run``)."""

    def __init__(
        self,
        *,
        kind: str,
        watched: Watched,
        capture: Capture,
        send_keys: Callable[[Sequence[str]], Awaitable[None]],
        answer: Answer,
        on_change: Callable[[Screen], None],
    ) -> None:
        self._kind = kind
        self._watched = watched
        self._capture = capture
        self._send_keys = send_keys
        self._answer = answer
        self._on_change = on_change
        self.screen = Screen(activity=Activity.STARTING)
        self.text = ""
        self._changed = trio.Event()
        self._answered: dict[str, int] = {}
        self._since = 0.0  # when the screen last changed
        self._pressed: tuple[str | None, float] = (None, 0.0)  # the screen a key was pressed on
        self._recheck_at: float | None = None  # a question's screen is read again then
        self.closed = False

    async def run(self) -> None:
        try:
            await self.refresh()
            streak = 0  # reads in a row of output still flowing that changed nothing
            while True:
                flowing = False
                with trio.move_on_at(self._recheck_at or float("inf")):
                    await self._watched.wait()
                    flowing = await self._settle(min(MAX_DELAY * 2**streak, FLOWING_MAX))
                before = self.screen.activity
                await self.refresh()
                streak = streak + 1 if flowing and self.screen.activity is before else 0
        finally:
            self._watched.close()

    async def _settle(self, longest: float) -> bool:
        """Until the output has been quiet for QUIET, at most ``longest``;
        whether it was still flowing then (a spinner, a stream of text)."""
        deadline = trio.current_time() + longest
        while trio.current_time() < deadline:
            with trio.move_on_after(QUIET) as quiet:
                await self._watched.wait()
            if quiet.cancelled_caught:
                return False
        return True

    async def refresh(self) -> Screen:
        """Read the screen now; report and answer what it shows."""
        text = await self._capture()
        if text is None:  # the pane is gone
            return self.screen
        self._recheck_at = None
        if text != self.text:
            self.text = text
            self._since = trio.current_time()
        seen = recognize(self._kind, text)
        if seen is None:  # a screen no rule knows: what it was doing goes on
            seen = self.screen
            if seen.activity is Activity.READY:  # it changed, so it is at work
                seen = Screen(activity=Activity.BUSY)
        elif (
            self.screen.activity is Activity.STARTING
            and seen.activity is Activity.READY
            and trio.current_time() < self._since + STARTUP_SETTLE
        ):
            # A CLI may draw its prompt, then a first-run question over it:
            # ready at start-up only once the prompt has held still.
            self._recheck_at = self._since + STARTUP_SETTLE
            seen = self.screen
        if seen.activity is not self.screen.activity or seen.question != self.screen.question:
            self.screen = seen
            self._on_change(seen)
        else:
            self.screen = seen
        self._changed.set()
        self._changed = trio.Event()
        await self._maybe_answer(seen)
        return seen

    async def _maybe_answer(self, screen: Screen) -> None:
        """One key towards the policy's answer, once the question has held still.

        A CLI may draw a dialog, then draw it again from scratch (its
        selection back to the first option) as its start-up goes on: a key
        pressed in between would be lost, or an Enter would confirm what the
        screen no longer shows. So each key waits until the screen has not
        changed for ANSWER_SETTLE, and one that changed nothing is pressed
        again after ANSWER_RECHECK.
        """
        if screen.topic is None or screen.activity is not Activity.ASKING:
            return
        keys = self._answer(screen)
        if not keys:
            return
        count = self._answered.get(screen.topic, 0)
        if count >= ANSWER_LIMIT:
            return
        now = trio.current_time()
        # (Deadlines compared as computed: the recheck wakes exactly at them.)
        pressed_text, pressed_at = self._pressed
        if self.text == pressed_text and now < pressed_at + ANSWER_RECHECK:
            self._recheck_at = pressed_at + ANSWER_RECHECK  # the last key changed nothing yet
            return
        if now < self._since + ANSWER_SETTLE:
            self._recheck_at = self._since + ANSWER_SETTLE
            return
        self._answered[screen.topic] = count + 1
        self._pressed = (self.text, now)
        self._recheck_at = now + ANSWER_RECHECK
        log.info("answering the %s question (%s): %s", screen.topic, self._kind, keys[0])
        try:
            await self._send_keys(keys[:1])
        except CommandRejected:  # the pane is gone: its end is reported elsewhere
            pass

    def close(self) -> None:
        """The agent ended: whoever waits for a screen stops waiting."""
        self.closed = True
        self._changed.set()

    async def changed(self) -> None:
        """Until the next read of the screen (or the tracker's close)."""
        if not self.closed:
            await self._changed.wait()

    async def wait_for(
        self, accept: Callable[[Screen], bool], within: float, *, stop: Callable[[Screen], bool]
    ) -> Screen:
        """The first screen ``accept`` takes, or one ``stop`` takes, within
        ``within`` seconds (then the last one seen)."""
        screen = self.screen
        with trio.move_on_after(within):
            while not (accept(screen) or stop(screen) or self.closed):
                await self.changed()
                screen = self.screen
        return screen
