"""An agent's process is known by pid, start time and command line.

The direct launcher tells when it started the process (to the clock tick),
so the spawn path need not read /proc; what it records must be exactly what
a later orchestrator reads back from /proc, or that one would take a live
agent for a stranger.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest

from actors._process import Liveness, ProcessIdentity, identify, liveness, start_time
from supervisors._launch import LaunchSpec, launch_direct_sync

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _launch(tmp_path: Path) -> tuple[int, list[str]]:
    sleep = shutil.which("sleep") or "/bin/sleep"
    argv = [sleep, "1000"]
    launched = launch_direct_sync(
        LaunchSpec(name="relay-test", argv=argv, cwd=tmp_path, env=dict(os.environ))
    )
    identity = identify(launched.pid, argv, started_boottime=launched.started_boottime)
    assert identity is not None
    return launched.pid, argv


def _exec_done(pid: int, argv: list[str]) -> None:
    """Until the child's execve has set up its new command line (Popen returns
    a little before that; a busy machine shows it): bounded, polled from /proc."""
    deadline = time.monotonic() + 5
    while psutil.Process(pid).cmdline() != argv:
        assert time.monotonic() < deadline, "the child never finished its execve"
        time.sleep(0.001)


def _end(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def test_the_start_time_the_launcher_records_is_the_one_proc_tells(tmp_path: Path) -> None:
    agreed = 0
    for _ in range(30):
        sleep = shutil.which("sleep") or "/bin/sleep"
        argv = [sleep, "1000"]
        launched = launch_direct_sync(
            LaunchSpec(name="relay-test", argv=argv, cwd=tmp_path, env=dict(os.environ))
        )
        try:
            recorded = identify(launched.pid, argv, started_boottime=launched.started_boottime)
            assert recorded is not None
            from_proc = start_time(launched.pid)
            assert abs(recorded.create_time - from_proc) <= 0.0105  # at most one tick apart
            _exec_done(launched.pid, argv)
            assert liveness(recorded) is Liveness.ALIVE
            agreed += launched.started_boottime is not None
        finally:
            _end(launched.pid)
    assert agreed > 0  # the launcher's own reading was used, not only /proc's


def test_a_recorded_start_time_off_by_more_than_a_tick_is_another_process(
    tmp_path: Path,
) -> None:
    pid, argv = _launch(tmp_path)
    try:
        _exec_done(pid, argv)
        truth = start_time(pid)
        assert liveness(ProcessIdentity(pid=pid, create_time=truth, cmdline=tuple(argv))) is (
            Liveness.ALIVE
        )
        stranger = ProcessIdentity(pid=pid, create_time=truth - 0.05, cmdline=tuple(argv))
        assert liveness(stranger) is Liveness.GONE
    finally:
        _end(pid)


def test_without_the_launchers_reading_proc_is_read(tmp_path: Path) -> None:
    pid, argv = _launch(tmp_path)
    try:
        identity = identify(pid, argv)
        assert identity is not None
        assert identity.create_time == start_time(pid)
    finally:
        _end(pid)
