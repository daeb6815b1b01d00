"""tmux calls made together share one tmux client, and each still gets its own answer.

A real tmux server on a socket of the test's own. A tmux client process costs
more than the commands it carries, so calls queued while one runs go out in
the next client; tmux stops at the first command that fails, so the calls
after a failing one must run again, and a call over the command size limit
goes out in a client of its own.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from actors._tmux import TmuxError, TmuxServer
from supervisors._launch import DirectLauncher

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


class CountingServer(TmuxServer):
    """The real server, counting the tmux client processes it runs."""

    clients = 0

    async def _client(self, args: Any, stdin: bytes = b"") -> Any:
        self.clients += 1
        return await super()._client(args, stdin)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[CountingServer]:
    socket = f"relay-test-{uuid.uuid4().hex[:12]}"
    tmux_dir = Path(tempfile.mkdtemp(prefix="rt-"))  # a socket path must be short
    env = {**os.environ, "TMUX_TMPDIR": str(tmux_dir)}
    env.pop("TMUX", None)
    srv = CountingServer(socket=socket, launcher=DirectLauncher(), env=env, state_dir=tmp_path)
    try:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(10):
                await srv.ensure(nursery)
                # a session keeps the server up between the test's calls
                await srv.command("new-session", "-d", "-s", "keep", "--", "sleep", "1000")
            yield srv
            nursery.cancel_scope.cancel()
    finally:
        await srv.command("kill-server", check=False)
        shutil.rmtree(tmux_dir, ignore_errors=True)


async def test_concurrent_calls_share_clients_and_each_gets_its_own_answer(
    server: CountingServer,
) -> None:
    answers: dict[int, str] = {}
    errors: dict[int, str] = {}
    unchecked: dict[int, str] = {}

    async def call(i: int) -> None:
        if i % 4 == 3:  # fails: tmux stops there, the calls after it run again
            try:
                await server.command("has-session", "-t", f"=nope-{i}")
            except TmuxError as exc:
                errors[i] = str(exc)
        elif i % 4 == 2:
            unchecked[i] = await server.command("has-session", "-t", f"=nope-{i}", check=False)
        else:
            answers[i] = await server.command("display-message", "-p", f"answer-{i}",
                                              ";", "display-message", "-p", f"second-{i}")

    before = server.clients
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for i in range(60):
                nursery.start_soon(call, i)
    assert answers == {i: f"answer-{i}\nsecond-{i}\n" for i in range(60) if i % 4 in (0, 1)}
    assert sorted(errors) == [i for i in range(60) if i % 4 == 3]
    for i, message in errors.items():
        assert f"nope-{i}" in message  # its own error, not a neighbour's
    assert unchecked == {i: "" for i in range(60) if i % 4 == 2}
    # Fewer clients than calls: each failure costs one, the rest are shared.
    assert server.clients - before < 60


async def test_calls_beyond_the_size_limit_go_out_in_several_clients(
    server: CountingServer,
) -> None:
    values = {i: f"{i:03d}" + "x" * 2000 for i in range(30)}  # 60 kB in all; tmux takes 16 kB
    seen: dict[int, str] = {}

    async def call(i: int) -> None:
        seen[i] = await server.command("set-option", "-g", f"@v{i}", values[i],
                                       ";", "show-options", "-gv", f"@v{i}")

    before = server.clients
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for i in values:
                nursery.start_soon(call, i)
    assert seen == {i: value + "\n" for i, value in values.items()}
    assert 5 <= server.clients - before < 30


async def test_a_call_cancelled_while_it_waits_never_runs(server: CountingServer) -> None:
    ran: list[str] = []

    async def blocker() -> None:  # holds the client: run-shell waits for its command
        await server.command("run-shell", "sleep 0.5")
        ran.append("blocker")

    async def cancelled() -> None:
        with trio.move_on_after(0.1):
            await server.command("set-option", "-g", "@cancelled", "yes")
            ran.append("cancelled")

    async def patient() -> None:
        await server.command("set-option", "-g", "@patient", "yes")
        ran.append("patient")

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(blocker)
            await trio.sleep(0.05)  # the blocker's client is under way
            nursery.start_soon(cancelled)
            nursery.start_soon(patient)
    assert sorted(ran) == ["blocker", "patient"]
    assert (await server.command("show-options", "-gv", "@patient")).strip() == "yes"
    assert (await server.command("show-options", "-gqv", "@cancelled")).strip() == ""


async def test_a_cancelled_caller_does_not_cut_short_the_client_that_carries_others(
    server: CountingServer, tmp_path: Path
) -> None:
    """The caller running a shared client is cancelled while it runs: the calls
    it carries for others still get their answers, and none runs twice."""
    marks = tmp_path / "marks"
    answers: dict[str, str] = {}
    leader_scope = trio.CancelScope()

    async def blocker() -> None:  # holds the client, so the next calls queue up
        await server.command("run-shell", "sleep 0.3")

    async def leader() -> None:  # first in the queue: runs the next client
        with leader_scope:
            await server.command("display-message", "-p", "leader")

    async def carried() -> None:  # rides in the leader's client, after the leader's call
        await server.command("run-shell", f"echo ran >> {marks}; sleep 0.5")
        answers["carried"] = await server.command("display-message", "-p", "after")

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(blocker)
            while not server._batch._running:  # noqa: ASYNC110 - the blocker's client is under way
                await trio.sleep(0.01)
            nursery.start_soon(leader)
            await trio.sleep(0.02)
            nursery.start_soon(carried)
            while not marks.exists():  # noqa: ASYNC110 - the shared client runs the carried call
                await trio.sleep(0.01)
            leader_scope.cancel()
    assert answers["carried"] == "after\n"  # answered, no error
    assert marks.read_text() == "ran\n"  # once


async def test_a_client_that_does_not_answer_in_time_fails_its_calls_once(
    server: CountingServer, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    server._batch.CLIENT_TIMEOUT = 0.5
    errors: list[str] = []

    async def hung() -> None:
        try:
            await server.command("run-shell", f"echo ran >> {marks}; sleep 1.5")
        except TmuxError as exc:
            errors.append(str(exc))

    with trio.fail_after(30):
        await hung()
    assert errors == ["tmux did not answer within 0.5 s"]
    assert marks.read_text() == "ran\n"  # not run again
    # the server still answers the next client (once its run-shell is over)
    server._batch.CLIENT_TIMEOUT = 30
    with trio.fail_after(30):
        assert await server.command("display-message", "-p", "next") == "next\n"
