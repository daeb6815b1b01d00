"""What an agent in tmux is doing, from its screen, after its output.

The tracker of one agent waits for its ``output.log`` to be written to
(``_filewatch.py``), lets the output settle briefly (``QUIET``, at most
``MAX_DELAY`` while it keeps flowing), then reads the pane once and hands
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
from ._screens import Activity, Screen, recognize

log = logging.getLogger("actors")

QUIET = 0.04  # output settles this long before the screen is read
MAX_DELAY = 0.15  # … but output that keeps flowing is read this often
ANSWER_LIMIT = 3  # a question answered this often and still there is left to a person

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
        self.reads = 0
        self._changed = trio.Event()
        self._answered: dict[str, int] = {}
        self._answered_text: str | None = None  # the screen last answered
        self.closed = False

    async def run(self) -> None:
        try:
            await self.refresh()
            while True:
                await self._watched.wait()
                await self._settle()
                await self.refresh()
        finally:
            self._watched.close()

    async def _settle(self) -> None:
        deadline = trio.current_time() + MAX_DELAY
        while trio.current_time() < deadline:
            with trio.move_on_after(QUIET) as quiet:
                await self._watched.wait()
            if quiet.cancelled_caught:
                return

    async def refresh(self) -> Screen:
        """Read the screen now; report and answer what it shows."""
        text = await self._capture()
        if text is None:  # the pane is gone
            return self.screen
        self.reads += 1
        self.text = text
        seen = recognize(self._kind, text)
        if seen is None:  # a screen no rule knows: what it was doing goes on
            seen = self.screen
            if seen.activity is Activity.READY:  # it changed, so it is at work
                seen = Screen(activity=Activity.BUSY)
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
        if screen.topic is None or screen.activity is not Activity.ASKING:
            return
        if self.text == self._answered_text:  # not taken yet: one press each time
            return
        keys = self._answer(screen)
        if not keys:
            return
        count = self._answered.get(screen.topic, 0)
        if count >= ANSWER_LIMIT:
            return
        self._answered[screen.topic] = count + 1
        self._answered_text = self.text
        log.info("answering the %s question (%s)", screen.topic, self._kind)
        await self._send_keys(keys)

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
