"""What an agent started, found from one read of the process table shared by
every stop that asks at the same time, and ended with it."""

from __future__ import annotations

import subprocess
import sys

import psutil
import trio
import trio.testing

from actors._process import (
    ProcessTables,
    _read_proc,
    _read_psutil,
    end_tree,
    read_process_table,
    tree_of,
)

# A parent that starts a child in a session of its own (as codex's background
# server does) and a grandchild under that child, then waits.
TREE = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c",
    "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
    "'import time; time.sleep(120)']); time.sleep(120)"], start_new_session=True)
print(child.pid, flush=True)
time.sleep(120)
"""


def start_tree() -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE, text=True)


def end(parent: subprocess.Popen[str]) -> None:
    """The parent and whatever of its tree is left."""
    for pid, _ in tree_of(parent.pid, read_process_table()):
        try:
            psutil.Process(pid).kill()
        except psutil.Error:
            pass
    parent.kill()
    parent.wait()
    if parent.stdout is not None:
        parent.stdout.close()


async def test_the_tree_holds_what_left_the_session_and_ending_it_leaves_nothing() -> None:
    parent = start_tree()
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        with trio.fail_after(30):
            while not psutil.Process(child).children():
                await trio.sleep(0.02)
        grandchild = psutil.Process(child).children()[0].pid
        members = tree_of(parent.pid, read_process_table())
        assert {pid for pid, _ in members} == {child, grandchild}
        parent.kill()  # as a stop does: the agent first, then what outlived it
        parent.wait()
        assert end_tree(members, grace=5.0) == 2
        for pid in (child, grandchild):
            assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
    finally:
        end(parent)


async def test_callers_asking_together_share_reads_and_each_sees_what_preceded_its_ask() -> None:
    tables = ProcessTables()
    parents = [start_tree() for _ in range(3)]
    try:
        seen: list[bool] = []

        async def ask(pid: int) -> None:
            seen.append(pid in await tables.current())

        async with trio.open_nursery() as nursery:
            for n in range(200):
                nursery.start_soon(ask, parents[n % 3].pid)
        assert seen == [True] * 200
        assert 1 <= tables.reads <= 2  # not one read per caller
        # A later ask reads again: a process started since is in its table.
        late = start_tree()
        parents.append(late)
        assert late.pid in await tables.current()
        assert tables.reads <= 3
    finally:
        for p in parents:
            end(p)


async def test_a_cancelled_caller_does_not_strand_the_callers_that_joined_its_read() -> None:
    tables = ProcessTables()
    results: list[str] = []

    async def owner(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            task_status.started(scope)
            await tables.current()
            results.append("owner")

    async def joiner() -> None:
        assert await tables.current()
        results.append("joiner")

    async with trio.open_nursery() as nursery:
        lock = tables._one_at_a_time
        await lock.acquire()  # a read under way: the next callers wait for theirs
        scope = await nursery.start(owner)  # it owns the waiting read
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(joiner)  # it joins that read
        await trio.testing.wait_all_tasks_blocked()
        scope.cancel()  # the owner gives up before its read starts
        await trio.testing.wait_all_tasks_blocked()
        lock.release()
    assert results == ["joiner"]
    assert tables.reads == 1


def test_the_linux_reading_agrees_with_psutils_on_every_process() -> None:
    parent = start_tree()
    try:
        ours, theirs = _read_proc(), _read_psutil()
        both = ours.keys() & theirs.keys()
        assert parent.pid in both and len(both) >= 0.9 * len(theirs)
        for pid in both:
            assert ours[pid][0] == theirs[pid][0], pid
            assert abs(ours[pid][1] - theirs[pid][1]) <= 0.011, pid  # to the clock tick
    finally:
        end(parent)
