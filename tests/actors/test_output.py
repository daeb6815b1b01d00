"""Agents' output logs: the last lines, rotation without losing a line, following."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
import trio

from actors import LogFollower, _output, agent_log_path, tail_lines
from actors._output import read_head, rotate_if_needed, tail

from .conftest import WAIT, Harness


def stream(log: Path) -> bytes:
    """The backups (oldest first) and the log: everything still kept."""
    files = []
    index = 1
    while (older := log.with_name(f"{log.name}.{index}")).exists():
        files.append(older)
        index += 1
    return b"".join(f.read_bytes() for f in reversed(files)) + log.read_bytes()


def test_tail_gives_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "output.log"
    assert tail(log) == ""
    log.write_text("".join(f"line {i}\n" for i in range(100)) + "\n\n")
    assert tail(log, 3) == "line 97\nline 98\nline 99"
    log.write_text("x" * 50_000 + "\nend\n")
    assert tail(log) == "end"


@pytest.fixture(params=["collapse", "copy-truncate"])
def rotation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways of rotating: in place (ext4, xfs), and where that is unsupported."""
    if request.param == "copy-truncate":
        monkeypatch.setattr(_output, "_FALLOCATE", None)
    return str(request.param)


def test_rotation_keeps_backups_and_the_writer_appends_on(tmp_path: Path, rotation: str) -> None:
    log = tmp_path / "output.log"
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)  # as an agent holds it
    written = b""
    try:
        for letter in b"abc":
            chunk = bytes([letter]) * 5000
            os.write(fd, chunk)
            written += chunk
            assert not rotate_if_needed(log, 100_000, 2)
            assert rotate_if_needed(log, 4096, 2)
            # Nothing lost, nothing doubled: the head counts what moved out.
            assert read_head(log) + log.stat().st_size == len(written)
            assert written.endswith(stream(log))
            assert (tmp_path / "output.log.1").stat().st_mode & 0o777 == 0o600
        assert not (tmp_path / "output.log.3").exists()
        os.write(fd, b"d" * 10)
        assert log.read_bytes().endswith(b"d" * 10)  # appended at the new end, no hole
        assert b"\0" not in log.read_bytes()
    finally:
        os.close(fd)


def test_rotation_without_backups_drops_the_head(tmp_path: Path, rotation: str) -> None:
    log = tmp_path / "output.log"
    log.write_bytes(b"x" * 9000)
    assert rotate_if_needed(log, 4096, 0)
    assert not (tmp_path / "output.log.1").exists()
    assert read_head(log) + log.stat().st_size == 9000
    assert log.stat().st_size < 4096


def test_a_rotation_while_the_log_is_written_loses_no_line(tmp_path: Path) -> None:
    # In place (collapse): the agent's appends and the rotation are atomic with
    # respect to each other. Lines are numbered; every one must be there once.
    log = tmp_path / "output.log"
    log.write_bytes(b"z" * 8192)
    probe = os.open(log, os.O_RDWR)
    try:
        if not _output._collapse(probe, 4096):
            pytest.skip("this file system cannot collapse a range (copy-and-truncate here)")
    finally:
        os.close(probe)
    log.write_bytes(b"")
    enough = threading.Event()  # rotations enough: the writer may stop
    written = [0]

    def write() -> None:
        # Until the rotations are done (a count of lines would let a fast
        # writer end first on a busy machine), bounded in time.
        deadline = time.monotonic() + 60
        fd = os.open(log, os.O_WRONLY | os.O_APPEND)
        try:
            while not enough.is_set() and time.monotonic() < deadline:
                start = written[0]
                os.write(fd, b"".join(b"line %07d\n" % n for n in range(start, start + 50)))
                written[0] += 50
        finally:
            os.close(fd)

    writer = threading.Thread(target=write)
    writer.start()
    rotations = 0
    try:
        while writer.is_alive() and rotations < 30:
            rotations += rotate_if_needed(log, 4096, 100)
    finally:
        enough.set()
        writer.join()
    assert rotations == 30
    total = written[0]
    kept = stream(log).decode().splitlines()
    numbers = [int(line.split()[1]) for line in kept]
    assert numbers == list(range(total - len(numbers), total))
    assert read_head(log) + log.stat().st_size == total * len(b"line 0000000\n")


def test_tail_lines_reads_across_rotations(tmp_path: Path) -> None:
    log = tmp_path / "output.log"
    with open(log, "ab") as file:
        for n in range(3000):
            file.write(b"line %d\n" % n)
            file.flush()
            rotate_if_needed(log, 4096, 3)
    assert tail_lines(log, 5) == [f"line {n}" for n in range(2995, 3000)]
    assert log.stat().st_size < 4096 + 100
    last = tail_lines(log, 1000)
    assert last == [f"line {n}" for n in range(2000, 3000)]  # from the backups too
    kept = tail_lines(log, 10_000)  # what the backups still hold
    assert 1000 < len(kept) < 3000
    assert kept[1:] == [f"line {n}" for n in range(3000 - len(kept) + 1, 3000)]
    assert tail_lines(log, 0) == []
    assert tail_lines(tmp_path / "absent.log", 3) == []


def test_follower_reads_every_byte_across_rotations(tmp_path: Path, rotation: str) -> None:
    log = tmp_path / "output.log"
    log.write_bytes(b"before\n")
    follower = LogFollower(log)  # from the end: "before" is not news
    from_start = LogFollower(log, from_end=False)
    seen = b""
    expected = b""
    with open(log, "ab") as file:
        for n in range(1000):
            line = b"%d %s\n" % (n, b"y" * (n % 97))
            file.write(line)
            file.flush()
            expected += line
            if n % 7 == 0:
                rotate_if_needed(log, 4096, 3)
            if n % 3 == 0:
                seen += follower.read()
    seen += follower.read()
    assert seen == expected
    assert follower.missed == 0
    # A follower that fell behind more than the backups hold says so.
    assert from_start.read().endswith(expected[-1000:])
    assert from_start.missed > 0


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
    assert stream(log) == b"x" * 6000 + b"\n"
    assert tail_lines(log, 1) == ["x" * 6000]
