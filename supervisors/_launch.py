"""Starting a process outside the orchestrator's own teardown.

Every agent process (or the tmux server that holds it) is started through a
``ProcessLauncher`` that the host supervisor provides:

- ``DirectLauncher`` (foreground, launchd): a child in its own session and
  process group, so a signal to the orchestrator's group never reaches it and
  the orchestrator's exit leaves it running.
- the systemd adapter: a transient unit of its own, outside the
  orchestrator unit's cgroup (see ``_systemd.py``).

Secrets never travel in argv: ``LaunchSpec.env`` is handed over as the
process environment (direct) or through a 0600 file that is removed once the
process has started (systemd).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import attrs


@attrs.frozen(kw_only=True)
class LaunchSpec:
    """What to start, and where its input and output go."""

    name: str  # a stable name, e.g. "relay-ag_12"; the systemd unit is "<name>.service"
    argv: Sequence[str]
    cwd: Path
    env: Mapping[str, str]  # the *whole* environment of the process
    stdin_path: Path | None = None  # a FIFO the caller keeps open read-write, or None for /dev/null
    stdout_path: Path | None = None  # appended to (stdout and stderr), or None for /dev/null
    # systemd resource-control syntax ("4G", "200%", "512"); None = unlimited.
    memory_max: str | None = None
    cpu_quota: str | None = None
    tasks_max: str | None = None


@attrs.frozen(kw_only=True)
class Launched:
    pid: int
    unit: str | None = None  # the transient unit that holds it, when there is one
    # When the process started, on the CLOCK_BOOTTIME clock (seconds), if the
    # launcher knows it to within a clock tick; None: read it from /proc.
    started_boottime: float | None = None


class ProcessLauncher(Protocol):
    async def launch(self, spec: LaunchSpec) -> Launched: ...


def _open_stdio(spec: LaunchSpec) -> tuple[int, int]:
    if spec.stdin_path is not None:
        # O_RDWR on a FIFO never blocks and never sees EOF while we hold it.
        stdin = os.open(spec.stdin_path, os.O_RDWR | os.O_CLOEXEC)
    else:
        stdin = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    if spec.stdout_path is not None:
        stdout = os.open(
            spec.stdout_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
    else:
        stdout = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    return stdin, stdout


def launch_direct_sync(spec: LaunchSpec) -> Launched:
    """Start ``spec`` as a child in a new session; the caller reaps nothing.

    The returned process is not waited on through ``subprocess``: callers
    watch it by pid (pidfd) like an adopted agent, so a restarted
    orchestrator watches it the same way.
    """
    stdin, stdout = _open_stdio(spec)
    try:
        before = _boottime()
        proc = subprocess.Popen(
            list(spec.argv),
            cwd=spec.cwd,
            env=dict(spec.env),
            stdin=stdin,
            stdout=stdout,
            stderr=stdout,
            start_new_session=True,
            close_fds=True,
        )
        after = _boottime()
    finally:
        os.close(stdin)
        os.close(stdout)
    # Popen keeps a handle only for reaping; the watcher reaps by pid.
    proc.returncode = 0  # tell Popen.__del__ not to track it
    # The child's start time lies between the two readings. When they are
    # less than a clock tick apart the first one is its start time to the tick
    # (what /proc/<pid>/stat tells), without reading /proc while the child is
    # still in execve, which can take longer than the start itself.
    started = before if before is not None and after is not None and (
        after - before < _START_SLACK) else None
    return Launched(pid=proc.pid, started_boottime=started)


_START_SLACK = 0.005  # half a 100 Hz clock tick


def _boottime() -> float | None:
    clock = getattr(time, "CLOCK_BOOTTIME", None)  # Linux only
    return time.clock_gettime(clock) if clock is not None else None


class DirectLauncher:
    """Foreground and launchd: own session and process group, same host."""

    async def launch(self, spec: LaunchSpec) -> Launched:
        return launch_direct_sync(spec)


__all__ = ["DirectLauncher", "LaunchSpec", "Launched", "ProcessLauncher", "launch_direct_sync"]
