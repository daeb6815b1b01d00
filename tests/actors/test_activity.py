"""The activity tracker: reads a screen only after output, answers by policy
one key at a time once a question holds still, ready at start-up only once
the prompt holds still (trio's MockClock: no real waiting)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest
import trio
import trio.testing

from actors._activity import (
    ANSWER_LIMIT,
    ANSWER_RECHECK,
    ANSWER_SETTLE,
    STARTUP_SETTLE,
    ActivityTracker,
)
from actors._filewatch import FileWatch, Watched
from actors._screens import Activity, Screen

FIXTURES = Path(__file__).parents[1] / "fixtures" / "screens" / "claude"


class Pane:
    """A screen the test draws; the tracker reads it through ``capture``."""

    def __init__(self, watched: Watched, text: str) -> None:
        self.watched = watched
        self.text = text
        self.reads = 0
        self.keys: list[str] = []

    async def capture(self) -> str | None:
        self.reads += 1
        return self.text

    async def send_keys(self, keys: Sequence[str]) -> None:
        self.keys += keys

    def draw(self, text: str) -> None:
        self.text = text
        self.watched._touch()  # as the pane's output reaching its log would


def tracker_for(pane: Pane, answers: bool = True) -> tuple[ActivityTracker, list[Screen]]:
    changes: list[Screen] = []
    tracker = ActivityTracker(
        kind="claude",
        watched=pane.watched,
        capture=pane.capture,
        send_keys=pane.send_keys,
        answer=lambda screen: screen.answer if answers else None,
        on_change=changes.append,
    )
    return tracker, changes


@pytest.fixture
def watched(tmp_path: Path) -> Watched:
    return Watched(FileWatch(), tmp_path / "output.log")  # touched by the test itself


def screen(name: str) -> str:
    return (FIXTURES / f"{name}.txt").read_text()


async def test_quiet_agent_is_read_once_and_ready_only_after_holding_still(
    watched: Watched, autojump_clock: trio.testing.MockClock
) -> None:
    pane = Pane(watched, screen("ready"))
    tracker, changes = tracker_for(pane)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tracker.run)
        await trio.sleep(STARTUP_SETTLE / 2)
        assert tracker.screen.activity is Activity.STARTING  # not yet: it may be redrawn
        await trio.sleep(STARTUP_SETTLE)
        assert [c.activity for c in changes] == [Activity.READY]
        reads = pane.reads
        await trio.sleep(3600)  # an hour of nothing printed: nothing read
        assert pane.reads == reads
        pane.draw(screen("busy"))
        await trio.sleep(0.2)
        assert [c.activity for c in changes] == [Activity.READY, Activity.BUSY]
        nursery.cancel_scope.cancel()


async def test_output_that_keeps_flowing_is_read_a_few_times_a_second(
    watched: Watched, autojump_clock: trio.testing.MockClock
) -> None:
    pane = Pane(watched, screen("busy"))
    tracker, _ = tracker_for(pane)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tracker.run)
        await trio.sleep(1)
        start = pane.reads
        for _ in range(1000):  # a spinner: output every 10 ms for 10 s
            watched._touch()
            await trio.sleep(0.01)
        assert 10 <= pane.reads - start <= 20  # about once a second: still busy
        pane.draw(screen("ready"))  # the spinner stops: read at once
        await trio.sleep(0.1)
        assert tracker.screen.activity is Activity.READY
        nursery.cancel_scope.cancel()


async def test_a_question_is_answered_one_key_at_a_time_once_it_holds_still(
    watched: Watched, autojump_clock: trio.testing.MockClock
) -> None:
    trust = screen("trust")
    pane = Pane(watched, trust)
    tracker, changes = tracker_for(pane)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tracker.run)
        await trio.sleep(ANSWER_SETTLE / 2)
        assert changes[-1].activity is Activity.ASKING and pane.keys == []  # still settling
        await trio.sleep(ANSWER_SETTLE)
        assert pane.keys == ["Down"]  # a move: never Enter on "No, exit"
        # The CLI redraws the dialog from scratch: the selection is back on "No".
        pane.draw(trust)
        await trio.sleep(ANSWER_RECHECK + ANSWER_SETTLE)
        assert pane.keys == ["Down", "Down"]
        moved = trust.replace("❯ No, exit", "  No, exit").replace(
            "   Yes, I trust this folder", " ❯ Yes, I trust this folder")
        pane.draw(moved)
        await trio.sleep(ANSWER_SETTLE * 2)
        assert pane.keys == ["Down", "Down", "Enter"]  # Enter only once "Yes" shows selected
        pane.draw(screen("ready"))
        await trio.sleep(1)
        assert tracker.screen.activity is Activity.READY
        nursery.cancel_scope.cancel()


async def test_a_question_that_never_goes_is_left_to_a_person(
    watched: Watched, autojump_clock: trio.testing.MockClock
) -> None:
    pane = Pane(watched, screen("trust"))
    tracker, _ = tracker_for(pane)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tracker.run)
        await trio.sleep(600)
        assert len(pane.keys) == ANSWER_LIMIT
        nursery.cancel_scope.cancel()


async def test_no_policy_no_keys(
    watched: Watched, autojump_clock: trio.testing.MockClock
) -> None:
    pane = Pane(watched, screen("trust"))
    tracker, changes = tracker_for(pane, answers=False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tracker.run)
        await trio.sleep(60)
        assert pane.keys == []
        assert changes[-1].activity is Activity.ASKING
        assert "Yes, I trust this folder" in (changes[-1].question or "")
        nursery.cancel_scope.cancel()


async def test_wait_for_ends_on_the_screen_a_stop_or_a_close(
    watched: Watched, autojump_clock: trio.testing.MockClock
) -> None:
    pane = Pane(watched, screen("busy"))
    tracker, _ = tracker_for(pane)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tracker.run)
        await trio.sleep(1)
        async def redraw() -> None:
            pane.draw(screen("ready"))

        nursery.start_soon(redraw)
        seen = await tracker.wait_for(lambda s: s.activity is Activity.READY, 10,
                                      stop=lambda s: s.waiting)
        assert seen.activity is Activity.READY
        seen = await tracker.wait_for(lambda s: s.activity is Activity.BUSY, 10,
                                      stop=lambda s: s.waiting)
        assert seen.activity is Activity.READY  # bounded: the last screen
        tracker.close()
        with trio.fail_after(1):
            await tracker.wait_for(lambda s: False, 100, stop=lambda s: False)
        nursery.cancel_scope.cancel()


async def test_file_watch_wakes_a_watcher_when_its_file_is_written(tmp_path: Path) -> None:
    path = tmp_path / "output.log"
    path.touch()
    files = FileWatch()
    assert files.uses_inotify  # Linux: the kernel says when
    watched = files.watch(path)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(files.run)
        with trio.move_on_after(0.2) as idle:
            await watched.wait()
        assert idle.cancelled_caught  # nothing written: no wake-up
        with open(path, "ab") as f:
            f.write(b"hello\n")
        with trio.fail_after(5):
            await watched.wait()
        watched.close()
        nursery.cancel_scope.cancel()


async def test_file_watch_without_inotify_compares_sizes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("actors._filewatch._libc", lambda: None)
    path = tmp_path / "output.log"
    path.touch()
    files = FileWatch()
    assert not files.uses_inotify
    watched = files.watch(path)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(files.run)
        with trio.fail_after(5):
            await watched.wait()  # the first look sets its size
        os.truncate(path, 0)
        with open(path, "ab") as f:
            f.write(b"more\n")
        with trio.fail_after(5):
            await watched.wait()
        nursery.cancel_scope.cancel()
