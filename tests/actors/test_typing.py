"""Typing into an agent whose screen is followed: only when ready, never into
a question, Enter once more when the input stayed on the prompt line."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import trio
import trio.testing

from actors._activity import STARTUP_SETTLE, ActivityTracker
from actors._filewatch import FileWatch, Watched
from actors._params import CommandRejected
from actors._typing import TAKEN_WITHIN, Typist

FIXTURES = Path(__file__).parents[1] / "fixtures" / "screens" / "claude"


def screen(name: str) -> str:
    return (FIXTURES / f"{name}.txt").read_text()


def with_input(text: str) -> str:
    return screen("ready").replace("❯\u00a0", f"❯\u00a0{text}", 1)


class Agent:
    """A claude-like pane: what is typed either submits (busy) or stays on the line."""

    def __init__(self, watched: Watched, text: str, *, swallow_first_enter: bool) -> None:
        self.watched, self.text = watched, text
        self.swallow = swallow_first_enter
        self.sent: list[str] = []
        self.keys: list[str] = []

    def draw(self, text: str) -> None:
        self.text = text
        self.watched._touch()

    async def capture(self) -> str | None:
        return self.text

    async def send(self, text: str, *, enter_after: float = 0.0) -> None:
        self.sent.append(text)
        self.draw(with_input(text) if self.swallow else screen("busy"))

    async def send_keys(self, keys: Sequence[str]) -> None:
        self.keys += keys
        if keys == ["Enter"]:
            self.draw(screen("busy"))


async def setup(tmp_path: Path, text: str, *, swallow: bool = False
                ) -> tuple[Agent, ActivityTracker, Typist, trio.Event]:
    watched = Watched(FileWatch(), tmp_path / "output.log")
    agent = Agent(watched, text, swallow_first_enter=swallow)
    tracker = ActivityTracker(kind="claude", watched=watched, capture=agent.capture,
                              send_keys=agent.send_keys, answer=lambda s: None,
                              on_change=lambda s: None)
    ended = trio.Event()
    typist = Typist(agent_id="ag_t", session=agent, ended=ended,  # type: ignore[arg-type]
                    tracker=tracker, input_timeout=30.0)
    return agent, tracker, typist, ended


async def test_input_waits_for_ready_and_enter_is_pressed_again_if_it_stayed(
    tmp_path: Path, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    agent, tracker, typist, _ = await setup(tmp_path, screen("busy"), swallow=True)
    nursery.start_soon(tracker.run)
    await trio.sleep(1)

    async def later() -> None:
        await trio.sleep(5)
        agent.draw(screen("ready"))

    nursery.start_soon(later)
    start = trio.current_time()
    await typist.type("/compact")
    assert trio.current_time() - start >= 5  # not while busy
    assert agent.sent == ["/compact"]
    assert agent.keys == ["Enter"]  # it stayed on the prompt line: Enter once more
    assert trio.current_time() - start <= 5 + STARTUP_SETTLE + TAKEN_WITHIN + 1


async def test_input_taken_at_once_needs_no_second_enter(
    tmp_path: Path, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    agent, tracker, typist, _ = await setup(tmp_path, screen("ready"))
    nursery.start_soon(tracker.run)
    await trio.sleep(2)
    await typist.type("hello")
    assert agent.sent == ["hello"] and agent.keys == []


async def test_a_question_fails_at_once_and_nothing_is_typed(
    tmp_path: Path, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    agent, tracker, typist, _ = await setup(tmp_path, screen("permission"))
    nursery.start_soon(tracker.run)
    await trio.sleep(2)
    start = trio.current_time()
    with pytest.raises(CommandRejected, match="^agent is waiting for an answer: "):
        await typist.type("/compact")
    assert trio.current_time() == start and agent.sent == [] and agent.keys == []


async def test_an_agent_that_never_gets_ready_fails_after_the_timeout(
    tmp_path: Path, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    agent, tracker, typist, _ = await setup(tmp_path, screen("busy"))
    nursery.start_soon(tracker.run)
    with pytest.raises(CommandRejected, match="was not ready for input within 30 s .busy.$"):
        await typist.type("/compact")
    assert agent.sent == []
