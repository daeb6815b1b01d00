"""What an agent uses: CPU, memory and tasks of its whole process tree.

Sampled when the orchestrator is about to report (heartbeat, registration),
never in a loop of its own; ``AgentFleet.refresh_usage`` samples every
running agent in one worker thread. Reported on the agent as::

    "usage": {"cpuPercent": 12.5, "memoryRss": 73400320, "memoryPeak": 80000000, "tasks": 9}

``cpuPercent`` is per core (200 = two cores) since the previous sample (since
the process started, at the first); ``memoryPeak`` is the largest memory
seen, or the kernel's own peak where it keeps one.

Where an agent has a systemd unit of its own (a plain session under the
systemd supervisor), the figures are its unit's: read from the unit's
cgroup, the very files the manager answers ``MemoryCurrent``,
``MemoryPeak``, ``CPUUsageNSec`` and ``TasksCurrent`` from, without a D-Bus
round trip per agent per heartbeat. A cgroup without the memory or pids
controller (a host with the controllers on the legacy hierarchy) has its
processes (``cgroup.procs``) summed instead.

Elsewhere, the tree is the agent's process and its descendants. On Linux it
is read from ``/proc`` (``stat`` and ``task/<pid>/children`` of each
process, kept open between samples, the numbers psutil would give) at a few
microseconds per process; psutil elsewhere. The tree is walked through the
children of each process's main thread: a child forked by another thread
that did not exec through the main one is not seen.

Probes hold descriptors; a worker thread samples while the actor may close
its probe, so each probe has a lock, held for one sample at most.
"""

from __future__ import annotations

import functools
import os
import resource
import threading
import time
from pathlib import Path
from typing import Any

import attrs
import psutil

from ._process import _boot_time

_LINUX = os.path.exists("/proc/self/stat")
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_READ = 4096


@attrs.frozen(kw_only=True)
class Usage:
    cpu_percent: float = 0.0
    memory_rss: int = 0
    memory_peak: int = 0
    tasks: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "cpuPercent": round(self.cpu_percent, 1),
            "memoryRss": self.memory_rss,
            "memoryPeak": self.memory_peak,
            "tasks": self.tasks,
        }

    @classmethod
    def from_json(cls, data: object) -> Usage | None:
        if not isinstance(data, dict):
            return None
        try:
            return cls(
                cpu_percent=float(data.get("cpuPercent") or 0.0),
                memory_rss=int(data.get("memoryRss") or 0),
                memory_peak=int(data.get("memoryPeak") or 0),
                tasks=int(data.get("tasks") or 0),
            )
        except (TypeError, ValueError):
            return None

    def ended(self) -> Usage:
        """What an agent that has ended uses: nothing, its peak kept."""
        return Usage(memory_peak=self.memory_peak)


@functools.cache
def cgroup2_root() -> Path | None:
    """Where the unified cgroup hierarchy is mounted, if it is."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as file:
            for line in file:
                left, _, right = line.partition(" - ")
                if right.split(" ", 1)[0] == "cgroup2":
                    return Path(left.split(" ")[4])
    except OSError:
        pass
    return None


def unit_cgroup(pid: int, unit: str) -> Path | None:
    """The cgroup directory of ``unit``, found through its process ``pid``."""
    root = cgroup2_root()
    if root is None:
        return None
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8") as file:
            lines = file.read().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("0::"):
            relative = line[3:].strip().lstrip("/")
            path = root / relative
            if path.name == unit and path.is_dir():
                return path
    return None


def _pread(fd: int) -> bytes:
    return os.pread(fd, _READ, 0)


def _open(path: str | Path) -> int | None:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


def _stat_fields(data: bytes) -> list[bytes]:
    """``/proc/<pid>/stat`` from field 3 (state) on: index = field number - 3."""
    return data[data.rfind(b")") + 2 :].split()


_held = [0]  # descriptors all probes keep open


@functools.cache
def _held_budget() -> int:
    """How many descriptors probes may keep: half the process's limit."""
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ValueError, OSError):
        return 0
    return 1 << 20 if soft == resource.RLIM_INFINITY else soft // 2


def _read_path(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.pread(fd, _READ, 0)
    finally:
        os.close(fd)


@attrs.define(eq=False)
class _Proc:
    """One process of an agent's tree, between samples.

    Its ``stat`` and ``children`` stay open (a read then costs one
    ``pread``) while probes hold fewer descriptors than half the limit;
    past that they are opened for each read, and the start time is checked.
    """

    pid: int
    start: bytes  # start time (clock ticks since boot): which process this is
    walk: bool  # whether its children are read
    stat: int | None = None
    children: int | None = None
    data: bytes = b""  # its stat at the last sample
    figures: tuple[int, int, int] = (0, 0, 0)  # CPU ticks, memory bytes, threads

    def hold(self) -> None:
        wanted = 2 if self.walk else 1
        if _held[0] + wanted > _held_budget():
            return
        self.stat = _open(f"/proc/{self.pid}/stat")
        if self.walk:
            self.children = _open(f"/proc/{self.pid}/task/{self.pid}/children")
        _held[0] += (self.stat is not None) + (self.children is not None)

    def read(self) -> None:
        """Read its stat again (parsed only when it changed: idle agents cost a read)."""
        if self.stat is not None:
            data = os.pread(self.stat, _READ, 0)
        else:
            data = _read_path(f"/proc/{self.pid}/stat")
        if data != self.data:
            # utime, stime, and the waited-for children's (a reaped child's time
            # moves to its parent: the total goes on); threads; RSS pages.
            f = data[data.rfind(b")") + 2 :].split(maxsplit=22)
            if self.stat is None and f[19] != self.start:
                raise ProcessLookupError(self.pid)  # the pid is another process's now
            ticks = int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
            self.figures = ticks, int(f[21]) * _PAGE, int(f[17])
            self.data = data

    def kids(self) -> bytes:
        if not self.walk:
            return b""
        if self.children is not None:
            return os.pread(self.children, _READ, 0)
        return _read_path(f"/proc/{self.pid}/task/{self.pid}/children")

    def close(self) -> None:
        for fd in (self.stat, self.children):
            if fd is not None:
                os.close(fd)
                _held[0] -= 1
        self.stat = self.children = None


# (CPU seconds, memory bytes, tasks) of one sample.
_Figures = tuple[float, int, int]


class UsageProbe:
    """Samples one agent; made when it starts, closed when it ends."""

    def __init__(self, pid: int, *, create_time: float, unit: str | None = None) -> None:
        self.pid = pid
        self._create_time = create_time
        self._lock = threading.Lock()
        self._closed = False
        self._procs: dict[int, _Proc] = {}
        self._cgroup: dict[str, int] = {}
        self._last: tuple[float, float] | None = None  # (monotonic time, cpu seconds)
        self._last_usage: Usage | None = None
        self._peak = 0
        self.cgroup: Path | None = None
        # Which limits the agent's own unit has the kernel enforce.
        self.kernel_limits: frozenset[str] = frozenset()
        if unit is not None and _LINUX:
            self.cgroup = unit_cgroup(pid, unit)
            if self.cgroup is not None:
                self._open_cgroup(self.cgroup)

    def _open_cgroup(self, path: Path) -> None:
        for name in ("memory.current", "memory.peak", "cpu.stat", "pids.current",
                     "memory.events", "cgroup.procs"):  # fmt: skip
            fd = _open(path / name)
            if fd is not None:
                self._cgroup[name] = fd
                _held[0] += 1
        limits = set()
        for limit, name in (("memory", "memory.max"), ("cpu", "cpu.max"), ("tasks", "pids.max")):
            try:
                value = (path / name).read_text().split()
            except OSError:
                continue  # no such controller for this cgroup
            if value and value[0] != "max":
                limits.add(limit)
        self.kernel_limits = frozenset(limits)

    # -- sampling (in a worker thread) ----------------------------------------

    def sample(self, now: float | None = None, wall: float | None = None) -> Usage | None:
        """The agent's usage now; None once it has gone (or the probe is closed).

        ``now`` (``time.monotonic()``) and ``wall`` (``time.time()``) may be
        given once for many probes.
        """
        with self._lock:
            if self._closed:
                return None
            try:
                figures = self._figures()
            except (OSError, IndexError, ValueError):
                figures = None
            if figures is None:
                return None
            cpu_seconds, memory, tasks = figures
            now = time.monotonic() if now is None else now
            last = self._last_usage
            if (
                last is not None
                and self._last is not None
                and cpu_seconds == self._last[1]
                and last.cpu_percent == 0.0
                and last.memory_rss == memory
                and last.tasks == tasks
            ):
                self._last = (now, cpu_seconds)
                return last  # idle, as it was: the same figures
            if self._last is None:
                elapsed = (time.time() if wall is None else wall) - self._create_time
                cpu = cpu_seconds / max(elapsed, 1e-3)
            else:
                cpu = max(0.0, cpu_seconds - self._last[1]) / max(now - self._last[0], 1e-3)
            self._last = (now, cpu_seconds)
            if memory > self._peak:
                self._peak = memory
            self._last_usage = Usage(
                cpu_percent=cpu * 100, memory_rss=memory, memory_peak=self._peak, tasks=tasks
            )
            return self._last_usage

    def _figures(self) -> _Figures | None:
        if self._cgroup:
            return self._unit_figures()
        if _LINUX:
            return self._tree_figures(self._tree())
        return _psutil_figures(self.pid, self._create_time)

    def _unit_figures(self) -> _Figures | None:
        fds = self._cgroup
        procs = fds.get("cgroup.procs")
        members = [int(pid) for pid in _pread(procs).split()] if procs is not None else []
        if not members:
            return None  # the unit is empty, or gone
        tree = None
        if "memory.current" not in fds or "pids.current" not in fds:
            tree = self._tree_figures(self._members(members))
        memory = int(_pread(fds["memory.current"])) if "memory.current" in fds else None
        if memory is not None and "memory.peak" in fds:
            self._peak = max(self._peak, int(_pread(fds["memory.peak"])))
        cpu = None
        if "cpu.stat" in fds:
            for line in _pread(fds["cpu.stat"]).splitlines():
                if line.startswith(b"usage_usec "):
                    cpu = int(line.split()[1]) / 1e6
        tasks = int(_pread(fds["pids.current"])) if "pids.current" in fds else None
        return (
            cpu if cpu is not None else (tree[0] if tree else 0.0),
            memory if memory is not None else (tree[1] if tree else 0),
            tasks if tasks is not None else (tree[2] if tree else 0),
        )

    def _proc(self, pid: int, *, parent: int | None, children: bool) -> _Proc | None:
        """``pid``'s handle, its stat read now; None if it is not (or no longer) ours.

        A process met for the first time is checked: the agent by its start
        time, a descendant by its parent (``parent``; None: a member of the
        unit, which its cgroup vouches for).
        """
        proc = self._procs.get(pid)
        if proc is not None:
            try:
                proc.read()
            except (OSError, IndexError, ValueError):
                self._forget(pid)
                return None
            return proc
        return self._new_proc(pid, parent=parent, children=children)

    def _new_proc(self, pid: int, *, parent: int | None, children: bool) -> _Proc | None:
        proc = None
        try:
            data = _read_path(f"/proc/{pid}/stat")
            fields = _stat_fields(data)
            if pid == self.pid:
                started = int(fields[19]) / _TICKS + _boot_time()
                if self._create_time and abs(started - self._create_time) > 0.011:
                    return None  # another process has its pid now
            elif parent is not None and int(fields[1]) != parent:
                return None
            proc = _Proc(pid=pid, start=fields[19], walk=children)
            proc.hold()
            proc.read()  # through the descriptor now held: still that process?
            if _stat_fields(proc.data)[19] != proc.start:
                raise ProcessLookupError(pid)
        except (OSError, IndexError, ValueError):
            if proc is not None:
                proc.close()
            return None
        self._procs[pid] = proc
        return proc

    def _tree(self) -> list[_Proc]:
        """The agent's process and each of its descendants, read now."""
        procs = self._procs
        found = []
        stack: list[tuple[int, int | None]] = [(self.pid, None)]
        while stack:
            pid, parent = stack.pop()
            proc = procs.get(pid)
            try:
                if proc is None:
                    proc = self._new_proc(pid, parent=parent, children=True)
                    if proc is None:
                        continue
                else:
                    proc.read()
                kids = proc.kids()
            except (OSError, IndexError, ValueError):
                self._forget(pid)
                continue
            found.append(proc)
            if kids:
                stack.extend((int(kid), pid) for kid in kids.split())
        if len(found) != len(procs):
            for pid in set(procs) - {proc.pid for proc in found}:
                self._forget(pid)
        return found

    def _members(self, pids: list[int]) -> list[_Proc]:
        """Each process of the unit, read now."""
        found = [proc for pid in pids if (proc := self._proc(pid, parent=None, children=False))]
        if len(found) != len(self._procs):
            for pid in set(self._procs) - set(pids):
                self._forget(pid)
        return found

    @staticmethod
    def _tree_figures(procs: list[_Proc]) -> _Figures | None:
        if not procs:
            return None
        ticks = memory = tasks = 0
        for proc in procs:
            proc_ticks, proc_memory, proc_tasks = proc.figures
            ticks += proc_ticks
            memory += proc_memory
            tasks += proc_tasks
        return ticks / _TICKS, memory, tasks

    def _forget(self, pid: int) -> None:
        proc = self._procs.pop(pid, None)
        if proc is not None:
            proc.close()

    # -- at the end --------------------------------------------------------------

    def oom_kills(self) -> int | None:
        """How many processes of the agent's unit the kernel's OOM killer ended."""
        with self._lock:
            fd = self._cgroup.get("memory.events")
            if fd is None or self._closed:
                return None
            try:
                data = _pread(fd)
            except OSError:
                return None
        for line in data.splitlines():
            if line.startswith(b"oom_kill "):
                return int(line.split()[1])
        return None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for pid in list(self._procs):
                self._forget(pid)
            for fd in self._cgroup.values():
                os.close(fd)
                _held[0] -= 1
            self._cgroup.clear()


def _psutil_figures(pid: int, create_time: float) -> _Figures | None:
    """The same figures through psutil (hosts without ``/proc``)."""
    try:
        root = psutil.Process(pid)
        if create_time and abs(root.create_time() - create_time) > 0.011:
            return None
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    cpu = 0.0
    memory = tasks = 0
    for proc in procs:
        try:
            with proc.oneshot():
                times = proc.cpu_times()
                cpu += times.user + times.system + times.children_user + times.children_system
                memory += proc.memory_info().rss
                tasks += proc.num_threads()
        except psutil.Error:
            continue
    return cpu, memory, tasks


def sample_all(probes: list[UsageProbe]) -> list[Usage | None]:
    """Sample each probe (blocking: run it in a worker thread)."""
    now, wall = time.monotonic(), time.time()
    return [probe.sample(now, wall) for probe in probes]
