"""An agent's process: who it is, whether it lives, how it ends.

A process is the agent only if its pid, its start time (to the clock tick)
and its command line all match what was recorded when it was started: a
reused pid is never mistaken for the agent. A zombie counts as dead.

Exit is awaited, never polled, on Linux: a pidfd (``os.pidfd_open``) turns
readable when the process ends, whoever its parent is. When the agent is our
own child, ``waitpid`` reaps it and tells its exit code or signal; an agent
started by another launcher (a systemd unit) or adopted after a restart is
not our child, so its exit status is unknown here. Where pidfds do not exist
a psutil check every ``POLL_INTERVAL`` stands in.
"""

from __future__ import annotations

import enum
import errno
import functools
import os
import signal
from collections.abc import Sequence
from typing import Any

import attrs
import psutil
import trio

POLL_INTERVAL = 0.25  # only without pidfds
_TICK = 0.011  # start times are kept to the clock tick (10 ms)


class Liveness(enum.Enum):
    ALIVE = "alive"
    ZOMBIE = "zombie"  # ended, not yet reaped: dead
    GONE = "gone"  # no such process, or another process with that pid


@attrs.frozen(kw_only=True)
class ProcessIdentity:
    pid: int
    create_time: float
    cmdline: tuple[str, ...]  # the argv the agent was started with

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "createTime": self.create_time, "cmdline": list(self.cmdline)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProcessIdentity:
        return cls(
            pid=int(data["pid"]),
            create_time=float(data["createTime"]),
            cmdline=tuple(str(arg) for arg in data["cmdline"]),
        )


@attrs.frozen(kw_only=True)
class ExitStatus:
    exit_code: int | None = None
    signal: str | None = None  # "SIGKILL"

    @classmethod
    def from_wait_status(cls, status: int) -> ExitStatus:
        code = os.waitstatus_to_exitcode(status)
        if code < 0:
            return cls(signal=signal_name(-code))
        return cls(exit_code=code)


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"SIG{number}"


def identify(
    pid: int, argv: Sequence[str], *, started_boottime: float | None = None
) -> ProcessIdentity | None:
    """The identity of the process just started as ``pid``; None if already gone.

    ``started_boottime``: when the launcher saw it start (CLOCK_BOOTTIME, to
    within a tick), which spares reading ``/proc`` on the spawn path.
    """
    if started_boottime is not None:
        ticks = int(started_boottime * _CLOCK_TICKS)
        return ProcessIdentity(
            pid=pid, create_time=ticks / _CLOCK_TICKS + _boot_time(), cmdline=tuple(argv)
        )
    try:
        create_time = start_time(pid)
    except psutil.Error:
        return None
    return ProcessIdentity(pid=pid, create_time=create_time, cmdline=tuple(argv))


@functools.cache
def _boot_time() -> float:
    return float(psutil.boot_time())


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def start_time(pid: int) -> float:
    """When ``pid`` started, as psutil's ``create_time()`` tells it.

    On Linux read straight from ``/proc/<pid>/stat`` (the spawn path is hot);
    the same formula as psutil's, so the two always agree.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            data = file.read()
    except FileNotFoundError:
        raise psutil.NoSuchProcess(pid) from None
    except OSError:
        return float(psutil.Process(pid).create_time())
    fields = data[data.rfind(b")") + 2 :].split()
    return int(fields[19]) / _CLOCK_TICKS + _boot_time()


def _cmdline_matches(recorded: Sequence[str], current: Sequence[str]) -> bool:
    if list(recorded) == list(current):
        return True
    if not recorded or not current:
        return False
    # Interpreters (`node /usr/bin/claude …`, `python agent.py`) and programs
    # that retitle themselves (`claude`) still name the program near the front.
    program = os.path.basename(recorded[0])
    return any(os.path.basename(arg) == program for arg in current[:3])


def liveness(identity: ProcessIdentity) -> Liveness:
    """Whether the recorded process still runs: pid, start time and cmdline."""
    try:
        process = psutil.Process(identity.pid)
        if abs(start_time(identity.pid) - identity.create_time) > _TICK:
            return Liveness.GONE
        if process.status() == psutil.STATUS_ZOMBIE:
            return Liveness.ZOMBIE
        cmdline = process.cmdline()
    except psutil.ZombieProcess:
        return Liveness.ZOMBIE
    except psutil.NoSuchProcess:
        return Liveness.GONE
    except psutil.AccessDenied:
        return Liveness.ALIVE  # same pid and start time: it is ours
    return Liveness.ALIVE if _cmdline_matches(identity.cmdline, cmdline) else Liveness.GONE


def reap(pid: int) -> ExitStatus | None:
    """Reap ``pid`` if it is our ended child: its exit status, else None."""
    try:
        waited, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    if waited == 0:
        return None
    return ExitStatus.from_wait_status(status)


def _open_pidfd(pid: int) -> int | None:
    if not hasattr(os, "pidfd_open"):
        return None
    try:
        return os.pidfd_open(pid)
    except OSError as exc:
        if exc.errno == errno.ESRCH:
            raise ProcessLookupError(pid) from None
        return None  # ENOSYS and friends: fall back to polling


class ProcessWatch:
    """Owns the means to watch and signal one agent process until it ends."""

    def __init__(self, identity: ProcessIdentity, pidfd: int | None) -> None:
        self.identity = identity
        self._pidfd = pidfd
        self.status: ExitStatus | None = None
        self.ended = trio.Event()

    @property
    def pid(self) -> int:
        return self.identity.pid

    @classmethod
    def open(cls, identity: ProcessIdentity) -> ProcessWatch | None:
        """A watch on ``identity``, or None if that process is no longer alive."""
        try:
            pidfd = _open_pidfd(identity.pid)
        except ProcessLookupError:
            return None
        # Checked after opening: the pidfd now pins that very process.
        if liveness(identity) is not Liveness.ALIVE:
            if pidfd is not None:
                os.close(pidfd)
            return None
        return cls(identity, pidfd)

    @classmethod
    def open_started(cls, identity: ProcessIdentity) -> ProcessWatch:
        """A watch on a process we just started (it may have ended already)."""
        try:
            return cls(identity, _open_pidfd(identity.pid))
        except ProcessLookupError:
            watch = cls(identity, None)
            watch._finish(reap(identity.pid) or ExitStatus())
            return watch

    async def wait(self) -> ExitStatus:
        """Wait until the process ends; reap it when it is our child."""
        if not self.ended.is_set():
            if self._pidfd is not None:
                await trio.lowlevel.wait_readable(self._pidfd)
            else:
                while liveness(self.identity) is Liveness.ALIVE:  # noqa: ASYNC110 (no pidfd)
                    await trio.sleep(POLL_INTERVAL)
            self._finish(reap(self.identity.pid) or ExitStatus())
        assert self.status is not None
        return self.status

    def _finish(self, status: ExitStatus) -> None:
        self.status = status
        self.ended.set()

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the agent's process group (to the process if it leads none)."""
        if self.ended.is_set():
            return
        pid = self.identity.pid
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            elif self._pidfd is not None:
                signal.pidfd_send_signal(self._pidfd, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            pass

    def close(self) -> None:
        if self._pidfd is not None:
            trio.lowlevel.notify_closing(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None


# A process an agent started: (pid, start time), so that a reused pid is spared.
TreeMember = tuple[int, float]


# Every process on the host: pid → (parent pid, start time).
ProcessTable = dict[int, tuple[int, float]]


def read_process_table() -> ProcessTable:
    """Every process's parent and start time, read once (blocking: run it in a thread)."""
    return _read_proc() if os.path.isdir("/proc/self/task") else _read_psutil()


def _read_psutil() -> ProcessTable:
    table: ProcessTable = {}
    for process in psutil.process_iter(["ppid", "create_time"]):
        info = process.info
        if info["ppid"] is not None and info["create_time"] is not None:
            table[process.pid] = (info["ppid"], info["create_time"])
    return table


def _read_proc() -> ProcessTable:
    """Linux: one read of ``/proc/<pid>/stat`` a process (psutil's way to a
    start time reads more files than that); start times as psutil gives them."""
    boot, ticks = psutil.boot_time(), os.sysconf("SC_CLK_TCK")
    table: ProcessTable = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as stat:
                raw = stat.read()
        except OSError:
            continue  # ended meanwhile
        # After the command name (in parentheses, which it may itself hold):
        # state, ppid, … starttime is the 20th field after the name.
        fields = raw[raw.rfind(b")") + 2:].split()
        try:
            table[int(name)] = (int(fields[1]), boot + int(fields[19]) / ticks)
        except (IndexError, ValueError):
            continue
    return table


def tree_of(pid: int, table: ProcessTable) -> list[TreeMember]:
    """Every process ``pid`` started (children, theirs, …), as ``table`` saw them."""
    children: dict[int, list[int]] = {}
    for child, (parent, _) in table.items():
        children.setdefault(parent, []).append(child)
    members, todo = [], list(children.get(pid, ()))
    while todo:
        child = todo.pop()
        members.append((child, table[child][1]))
        todo.extend(children.get(child, ()))
    return members


@attrs.define(eq=False)
class _Read:
    done: trio.Event = attrs.field(factory=trio.Event)
    table: ProcessTable | None = None


class ProcessTables:
    """The process table for many callers at once: reading it costs a pass over
    every process on the host, so callers that ask while a read is waiting to
    start share that read (it starts after each of them asked, so it sees what
    they see), and one read runs at a time. Stopping a fleet reads the table a
    few times, not once per agent."""

    def __init__(self) -> None:
        self._waiting: _Read | None = None
        self._one_at_a_time = trio.Lock()
        self.reads = 0

    async def current(self) -> ProcessTable:
        while True:
            read = self._waiting
            if read is not None:
                await read.done.wait()
                if read.table is not None:
                    return read.table
                continue  # the caller that owned it was cancelled: read again
            read = self._waiting = _Read()
            try:
                async with self._one_at_a_time:
                    self._waiting = None  # later callers wait for the next read
                    read.table = await trio.to_thread.run_sync(read_process_table)
                    self.reads += 1
            finally:
                if self._waiting is read:
                    self._waiting = None
                read.done.set()
            return read.table


def end_tree(members: Sequence[TreeMember], grace: float) -> int:
    """End what is left of ``members`` (SIGTERM, SIGKILL after ``grace``); how many were left."""
    alive = []
    for pid, created in members:
        try:
            process = psutil.Process(pid)
            if abs(process.create_time() - created) > _TICK or (
                process.status() == psutil.STATUS_ZOMBIE
            ):
                continue
            process.terminate()
            alive.append(process)
        except psutil.Error:
            continue
    if alive:
        _, still = psutil.wait_procs(alive, timeout=grace)
        for process in still:
            try:
                process.kill()
            except psutil.Error:
                pass
    return len(alive)
