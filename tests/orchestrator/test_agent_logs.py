"""``relay-orchestrator logs AGENT [-n N] [-f]``: the CLI on real, rotating logs."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from actors import agent_log_path
from actors._output import rotate_if_needed
from orchestrator.daemon._journal import Journal

from ..conftest import cli_env

WAIT = 30.0


def logs_argv(state: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator", "logs", *args, "--state-dir", str(state)]


def env(tmp_path: Path) -> dict[str, str]:
    # HOME elsewhere: no installed.env of this machine's service is read.
    return cli_env(HOME=str(tmp_path / "home"), PYTHONUNBUFFERED="1")


def write_lines(log: Path, numbers: range, *, max_bytes: int, backups: int) -> int:
    """Append numbered lines as an agent would, rotating as the fleet would; rotations."""
    rotations = 0
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        for start in range(numbers.start, numbers.stop, 50):
            chunk = range(start, min(start + 50, numbers.stop))
            os.write(fd, b"".join(b"line %06d\n" % n for n in chunk))
            rotations += rotate_if_needed(log, max_bytes, backups)
    finally:
        os.close(fd)
    return rotations


@pytest.fixture
def state(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    agent_log_path(path, "ag_log1").parent.mkdir(parents=True)
    return path


def test_logs_n_prints_exactly_the_last_n_lines_across_rotations(
    tmp_path: Path, state: Path
) -> None:
    log = agent_log_path(state, "ag_log1")
    assert write_lines(log, range(5000), max_bytes=4096, backups=3) > 5
    assert len(log.read_text().splitlines()) < 400  # the last 400 span the backups
    for count in (1, 400, 1000):
        proc = subprocess.run(logs_argv(state, "ag_log1", "-n", str(count)), env=env(tmp_path),
                              capture_output=True, text=True, timeout=WAIT)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines() == [f"line {n:06d}" for n in range(5000 - count, 5000)]


# The journal is opened by URI: a path holding what a URI reads otherwise too.
@pytest.mark.parametrize("folder", ["state", "state #2?mode=rw&x=%41"])
def test_logs_finds_the_agent_by_id_label_or_tmux_session(tmp_path: Path, folder: str) -> None:
    state = tmp_path / folder
    log = agent_log_path(state, "ag_log1")
    log.parent.mkdir(parents=True)
    log.write_text("hello from the agent\n")
    journal = Journal.open(state)
    try:
        journal.save_agent("ag_log1", {"version": 1, "agent": {
            "agentId": "ag_log1", "label": "reviewer", "tmuxSession": "relay-ag_log1",
            "sessionName": "relay-ag_log1", "provider": "command", "status": "running",
            "cwd": str(tmp_path)}, "params": {"provider": "command"}})
    finally:
        journal.close()
    for query in ("ag_log1", "reviewer", "relay-ag_log1"):
        proc = subprocess.run(logs_argv(state, query), env=env(tmp_path),
                              capture_output=True, text=True, timeout=WAIT)
        assert (proc.returncode, proc.stdout) == (0, "hello from the agent\n"), proc.stderr
    proc = subprocess.run(logs_argv(state, "nobody"), env=env(tmp_path),
                          capture_output=True, text=True, timeout=WAIT)
    assert proc.returncode == 1
    assert "no agent matches 'nobody'" in proc.stderr


def test_logs_follow_loses_no_line_while_the_log_rotates(tmp_path: Path, state: Path) -> None:
    log = agent_log_path(state, "ag_log1")
    write_lines(log, range(100), max_bytes=1 << 30, backups=3)
    proc = subprocess.Popen(logs_argv(state, "ag_log1", "-f", "-n", "100"), env=env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def take(count: int) -> list[str]:
        got = []
        for _ in range(count):
            line = lines.get(timeout=WAIT)  # bounded: the follower polls every 0.2 s
            assert line is not None, proc.stderr.read() if proc.stderr else ""
            got.append(line)
        return got

    total = 20_000
    try:
        # The last 100 lines first: from then on the CLI is following.
        assert take(100) == [f"line {n:06d}" for n in range(100)]
        # Batches of 6,000 lines (72 KB) are written at once, each rotated 4 or 5
        # times (16 KB, 10 backups) before the follower next looks: it must
        # read them back from the backups, in order.
        rotations = 0
        followed: list[str] = []
        for start in range(100, total, 6000):
            batch = range(start, min(start + 6000, total))
            rotations += write_lines(log, batch, max_bytes=16_384, backups=10)
            followed += take(len(batch))
        assert rotations >= 10
        assert followed == [f"line {n:06d}" for n in range(100, total)]  # each once, in order
        assert lines.empty()
    finally:
        proc.terminate()
        proc.wait(timeout=WAIT)
        reader.join(timeout=WAIT)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
