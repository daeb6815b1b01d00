"""Agents' output logs: the last lines, and rotation by copy-and-truncate."""

from __future__ import annotations

import os
from pathlib import Path

import trio

from actors import agent_log_path
from actors._output import rotate_if_needed, tail

from .conftest import WAIT, Harness


def test_tail_gives_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "output.log"
    assert tail(log) == ""
    log.write_text("".join(f"line {i}\n" for i in range(100)) + "\n\n")
    assert tail(log, 3) == "line 97\nline 98\nline 99"
    log.write_text("x" * 50_000 + "\nend\n")
    assert tail(log) == "end"


def test_rotation_keeps_backups_and_the_writer_appends_on(tmp_path: Path) -> None:
    log = tmp_path / "output.log"
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)  # as an agent holds it
    try:
        os.write(fd, b"a" * 5000)
        assert not rotate_if_needed(log, 10_000, 2)
        assert rotate_if_needed(log, 4096, 2)
        assert log.stat().st_size == 0
        assert (tmp_path / "output.log.1").stat().st_size == 5000
        assert (tmp_path / "output.log.1").stat().st_mode & 0o777 == 0o600
        os.write(fd, b"b" * 5000)
        assert log.read_bytes() == b"b" * 5000  # appended at the new end, no hole
        assert rotate_if_needed(log, 4096, 2)
        assert (tmp_path / "output.log.1").read_bytes() == b"b" * 5000
        assert (tmp_path / "output.log.2").read_bytes() == b"a" * 5000
        os.write(fd, b"c" * 5000)
        assert rotate_if_needed(log, 4096, 2)
        assert (tmp_path / "output.log.2").read_bytes() == b"b" * 5000
        assert not (tmp_path / "output.log.3").exists()
    finally:
        os.close(fd)


def test_agent_log_path(tmp_path: Path) -> None:
    assert agent_log_path(tmp_path, "ag_1") == tmp_path / "agents" / "ag_1" / "output.log"


async def test_the_fleet_rotates_running_agents_logs(harness: Harness) -> None:
    config = harness.config(
        log_check_interval=0.05, command={"log_max_bytes": 4096, "log_backups": 1}
    )
    fleet = await harness.start(config)
    record = harness.record()
    await fleet.execute(
        "agent.spawn", harness.spawn("--print", "x" * 6000, record=record, agentId="ag_log"), "c1"
    )
    await record.started()
    log = agent_log_path(harness.state, "ag_log")
    backup = log.with_name("output.log.1")
    with trio.fail_after(WAIT):
        while not backup.exists():  # noqa: ASYNC110 (a file appearing: no event to wait on)
            await trio.sleep(0.02)
    assert backup.read_text() == "x" * 6000 + "\n"
