"""The orchestrator's own log file: where ``run`` keeps it, and its rotation in
place (the files it leaves), under launchd (launchd's descriptor is our
standard error) and in the foreground."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

import actors
from orchestrator._daemon_log import DAEMON_LOG, LogPlace, RotatingLog, file_handler, log_place

from ..conftest import TOKEN, cli_env

WAIT = 30


def numbered(handler: logging.Handler, count: int) -> None:
    logger = logging.getLogger(f"test_daemon_log.{id(handler)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    for n in range(count):
        logger.info("line %05d %s", n, "x" * 60)
    logger.handlers.clear()


def test_where_run_logs_under_each_supervisor(tmp_path: Path) -> None:
    state, home = tmp_path / "state", tmp_path / "home"
    systemd = log_place("systemd", self_unit="relay-orchestrator.service", state_dir=state,
                        home=home)
    assert systemd == LogPlace(journal_unit="relay-orchestrator.service")
    assert systemd.describe() == "journalctl --user -u relay-orchestrator.service"
    launchd = log_place("launchd", self_unit="lbl", state_dir=state, home=home)
    assert launchd == LogPlace(
        file=home / "Library" / "Logs" / "relay-orchestrator" / "orchestrator.log", stderr=False)
    foreground = log_place("none", self_unit=None, state_dir=state, home=home)
    assert foreground == LogPlace(file=state / DAEMON_LOG, stderr=True)
    for place in (systemd, launchd, foreground):
        assert LogPlace.from_json(json.loads(json.dumps(place.to_json()))) == place


def test_launchds_descriptor_is_rotated_in_place_without_losing_a_line(tmp_path: Path) -> None:
    """The file is opened as launchd might (without O_APPEND: the handler sets it),
    written through past its size many times over: what the backups and the log
    hold is every line, whole and in order; the descriptor stays the same file."""
    path = tmp_path / "orchestrator.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    stream = os.fdopen(fd, "w", encoding="utf-8")
    try:
        handler = RotatingLog(path, max_bytes=8192, backups=20, stream=stream)
        assert fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_APPEND
        follower = actors.LogFollower(path, from_end=False)
        numbered(handler, 1500)
        followed = follower.read()
        assert os.fstat(fd).st_ino == path.stat().st_ino  # never renamed away
    finally:
        stream.close()
    backups = sorted(p.name for p in tmp_path.glob("orchestrator.log.*"))
    assert "orchestrator.log.1" in backups and "orchestrator.log.head" in backups
    assert path.stat().st_size <= 8192 + 100
    lines = actors.tail_lines(path, 10_000)
    assert lines == [f"line {n:05d} {'x' * 60}" for n in range(1500)]
    assert b"\0" not in b"".join(p.read_bytes() for p in tmp_path.glob("orchestrator.log*"))
    assert followed.decode().splitlines() == lines  # a follower read it all, across rotations


def test_only_log_backups_files_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "orchestrator.log"
    handler = RotatingLog(path, max_bytes=4096, backups=2)
    try:
        numbered(handler, 2000)
    finally:
        handler.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "orchestrator.log", "orchestrator.log.1", "orchestrator.log.2", "orchestrator.log.head"]
    assert path.stat().st_mode & 0o777 == 0o600
    assert actors.tail_lines(path, 1) == [f"line {1999:05d} {'x' * 60}"]


def test_a_file_that_is_standard_error_is_written_through_it(tmp_path: Path) -> None:
    path = tmp_path / "orchestrator.log"
    path.touch()
    saved = os.dup(2)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        os.dup2(fd, 2)
        os.close(fd)
        handler, is_stderr = file_handler(path, max_bytes=4096, backups=1)
        assert is_stderr and handler.stream is sys.stderr
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    handler, is_stderr = file_handler(tmp_path / "other.log", max_bytes=4096, backups=1)
    try:
        assert not is_stderr and handler.stream is not sys.stderr
    finally:
        handler.close()


def run_argv(relay_url: str, tmp_path: Path, *extra: str) -> list[str]:
    base = tmp_path / "base"
    base.mkdir(exist_ok=True)
    (tmp_path / "config.toml").touch()
    return [sys.executable, "-m", "orchestrator", "run", "--relay-url", relay_url,
            "--state-dir", str(tmp_path / "state"), "--base-dir", str(base),
            "--config", str(tmp_path / "config.toml"), "--log-format", "json", *extra]


def start(argv: list[str], env: dict[str, str], out: Path) -> subprocess.Popen[bytes]:
    """``run``, its standard output and error appended to ``out`` (as launchd does)."""
    with out.open("ab") as fh:
        return subprocess.Popen(argv, env=env, stdout=fh, stderr=fh, stdin=subprocess.DEVNULL)


async def wait_for_file(path: Path, proc: subprocess.Popen[bytes]) -> None:
    """A file another process writes: polled at short intervals (no event to wait on)."""
    with trio.fail_after(WAIT):
        while not path.exists():
            assert proc.poll() is None, f"run exited {proc.returncode}"
            await trio.sleep(0.02)


async def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    with trio.fail_after(WAIT):
        return await trio.to_thread.run_sync(proc.wait)


@pytest.mark.slow
async def test_run_under_launchd_rotates_the_file_launchd_gave_it(
    relay: Any, tmp_path: Path
) -> None:
    """``run`` as launchd starts it: standard output and error appended to the
    plist's log path. Past --log-max-bytes the file is rotated in place; only
    --log-backups backups stay; read as one stream, every line is whole."""
    home = tmp_path / "home"
    log = home / "Library" / "Logs" / "relay-orchestrator" / "orchestrator.log"
    log.parent.mkdir(parents=True)
    argv = run_argv(relay.url, tmp_path, "--supervisor", "launchd", "--self-unit", "lbl",
                    "--verbose", "--heartbeat-interval", "0.05", "--log-max-bytes", "4096",
                    "--log-backups", "2")
    env = cli_env(RELAY_ORCHESTRATOR_TOKEN=TOKEN, HOME=str(home))
    proc = start(argv, env, log)
    try:
        await wait_for_file(log.with_name("orchestrator.log.2"), proc)
        assert await stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    names = sorted(p.name for p in log.parent.iterdir())
    assert names == ["orchestrator.log", "orchestrator.log.1", "orchestrator.log.2",
                     "orchestrator.log.head"]
    assert not (tmp_path / "state" / DAEMON_LOG).exists()  # under launchd: launchd's file only
    # Every line whole, none torn by a rotation (the first may be the end of one
    # whose start was dropped with a backup, had a third rotation come first).
    records = [json.loads(line) for line in actors.tail_lines(log, 100_000)[1:]]
    assert any(r["msg"].startswith("wire POST") for r in records)
    assert records[-1]["msg"].startswith("orchestrator ") and "stopped" in records[-1]["msg"]
    assert int(log.with_name("orchestrator.log.head").read_text()) >= 2 * 4096

    # `logs` finds it (the status file says where) and reads it across its backups.
    out = await run_logs(tmp_path, "-n", "30")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == actors.tail_lines(log, 30)
    assert len(out.stdout.splitlines()) == 30


@pytest.mark.slow
async def test_run_in_the_foreground_keeps_a_log_file_in_the_state_dir(
    relay: Any, tmp_path: Path
) -> None:
    argv = run_argv(relay.url, tmp_path, "--supervisor", "none")
    err = tmp_path / "stderr"
    proc = start(argv, cli_env(RELAY_ORCHESTRATOR_TOKEN=TOKEN), err)
    try:
        with trio.fail_after(WAIT):
            await relay.wait_for(lambda: any(relay.orchestrators()))
        assert await stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = tmp_path / "state" / DAEMON_LOG
    assert log.stat().st_mode & 0o777 == 0o600
    assert log.read_text() == err.read_text()  # the terminal's lines, the same
    assert "stopped" in log.read_text().splitlines()[-1]


# -- `logs` with no agent: the orchestrator's own log -----------------------------------


def logs_argv(tmp_path: Path, *extra: str) -> list[str]:
    (tmp_path / "config.toml").touch()
    return [sys.executable, "-m", "orchestrator", "logs", "--state-dir", str(tmp_path / "state"),
            "--config", str(tmp_path / "config.toml"), *extra]


def logs_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return cli_env(XDG_CONFIG_HOME=str(tmp_path / "xdg"), HOME=str(tmp_path / "home"), **extra)


def popen_text(argv: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(argv, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env)


async def run_logs(tmp_path: Path, *extra: str, **env: str) -> subprocess.CompletedProcess[str]:
    argv, environ = logs_argv(tmp_path, *extra), logs_env(tmp_path, **env)
    return await trio.to_thread.run_sync(lambda: subprocess.run(
        argv, capture_output=True, text=True, timeout=30, env=environ))


@pytest.mark.slow
async def test_logs_reads_and_follows_the_foreground_orchestrators_file(
    relay: Any, tmp_path: Path
) -> None:
    proc = start(run_argv(relay.url, tmp_path, "--supervisor", "none"),
                 logs_env(tmp_path, RELAY_ORCHESTRATOR_TOKEN=TOKEN), tmp_path / "stderr")
    follower: subprocess.Popen[str] | None = None
    try:
        with trio.fail_after(WAIT):
            await relay.wait_for(lambda: any(relay.orchestrators()))
        log = tmp_path / "state" / DAEMON_LOG
        out = await run_logs(tmp_path, "-n", "2")
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines() == log.read_text().splitlines()[-2:]

        follower = popen_text(logs_argv(tmp_path, "-n", "1", "-f"), logs_env(tmp_path))
        assert follower.stdout is not None and follower.stderr is not None
        first = await trio.to_thread.run_sync(follower.stdout.readline)
        assert first.rstrip("\n") == log.read_text().splitlines()[-1]
        assert await stop(proc) == 0  # the orchestrator's last lines reach the follower
        with trio.fail_after(WAIT):
            while "stopped" not in (line := await trio.to_thread.run_sync(
                    follower.stdout.readline)):
                assert line, "the follower's output ended"
        follower.send_signal(signal.SIGINT)
        with trio.fail_after(WAIT):
            code = await trio.to_thread.run_sync(follower.wait)
        assert code == 0 and "Traceback" not in follower.stderr.read()
    finally:
        for p in (proc, follower):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        if follower is not None:
            for pipe in (follower.stdout, follower.stderr):
                if pipe is not None:
                    pipe.close()


async def test_logs_under_systemd_is_the_units_journal(tmp_path: Path) -> None:
    """An installed unit, no status file yet: journalctl takes over, -n and -f
    passed through (a stand-in journalctl records how it is called)."""
    from ..supervisors.stand_ins import StandIns

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_ins = StandIns(bin_dir, tmp_path / "calls.jsonl")
    stand_ins.add("journalctl", stdout="a journal line\n")
    unit = tmp_path / "xdg" / "systemd" / "user" / "relay-orchestrator.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("[Service]\n")
    path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    out = await run_logs(tmp_path, "-n", "7", "-f", PATH=path)
    assert (out.returncode, out.stdout) == (0, "a journal line\n")
    out = await run_logs(tmp_path, PATH=path)
    assert stand_ins.argvs() == [
        ["journalctl", "--user", "-u", "relay-orchestrator.service", "-n", "7", "--no-pager",
         "-f"],
        ["journalctl", "--user", "-u", "relay-orchestrator.service", "-n", "20", "--no-pager"],
    ]
    stand_ins.add("journalctl", code=1)  # its exit status is ours
    assert (await run_logs(tmp_path, PATH=path)).returncode == 1
    # The running orchestrator names its unit in its status file: that one.
    state = tmp_path / "state"
    state.mkdir()
    (state / "status.json").write_text(json.dumps(
        {"pid": os.getpid(), "supervisor": "systemd", "selfUnit": "custom.service",
         "log": {"journalUnit": "custom.service", "stderr": True}}))
    stand_ins.add("journalctl")
    await run_logs(tmp_path, "-n", "3", PATH=path)
    assert stand_ins.argvs()[-1] == ["journalctl", "--user", "-u", "custom.service", "-n", "3",
                                     "--no-pager"]


async def test_logs_says_in_one_sentence_when_there_is_no_log_to_read(tmp_path: Path) -> None:
    out = await run_logs(tmp_path)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr == (f"relay-orchestrator: no orchestrator log at "
                          f"{tmp_path / 'state' / DAEMON_LOG} yet (the orchestrator writes it "
                          f"once `run` starts)\n")
    state = tmp_path / "state"
    state.mkdir()
    # An orchestrator run by `dev` (or a test) logs to its standard error only.
    (state / "status.json").write_text(json.dumps({"pid": os.getpid(), "supervisor": "none",
                                                   "log": {"stderr": True}}))
    out = await run_logs(tmp_path)
    assert out.returncode == 1 and out.stderr.count("\n") == 1
    assert "keeps no log file: its log is the standard error of the process" in out.stderr


async def test_logs_says_in_one_sentence_when_its_log_cannot_be_read(tmp_path: Path) -> None:
    """The readers skip what they cannot read; ``logs`` says so (it printed nothing
    and exited 0). Root reads through modes: a directory where the file should be."""
    log = tmp_path / "state" / DAEMON_LOG
    log.mkdir(parents=True)
    for extra in ((), ("-f",)):
        out = await run_logs(tmp_path, *extra)
        assert (out.returncode, out.stdout) == (1, ""), extra
        assert out.stderr == f"relay-orchestrator: logs: {log}: Is a directory\n"
    out = await run_logs(tmp_path, "-n", "-1")
    assert (out.returncode, out.stderr) == (2, "relay-orchestrator: logs: -n must be 0 or more\n")


async def test_logs_into_a_pipe_closed_early_ends_without_a_traceback(tmp_path: Path) -> None:
    log = tmp_path / "state" / DAEMON_LOG
    log.parent.mkdir(parents=True)
    log.write_text("".join(f"line {n}\n" for n in range(200_000)))
    argv, env = logs_argv(tmp_path, "-n", "200000"), logs_env(tmp_path)

    def first_line_then_close() -> tuple[str, int, str]:
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        assert proc.stdout is not None and proc.stderr is not None
        with proc.stderr:
            first = proc.stdout.readline()
            proc.stdout.close()  # as `| head -1` does
            code = proc.wait(timeout=30)
            return first, code, proc.stderr.read()

    first, code, err = await trio.to_thread.run_sync(first_line_then_close)
    assert first == "line 0\n" and code == 1
    assert err == ""


async def test_run_says_in_one_line_when_it_cannot_open_its_log_file(tmp_path: Path) -> None:
    log = tmp_path / "state" / DAEMON_LOG
    log.mkdir(parents=True)
    argv = run_argv("http://127.0.0.1:9", tmp_path, "--supervisor", "none")
    env = logs_env(tmp_path, RELAY_ORCHESTRATOR_TOKEN=TOKEN)
    out = await trio.to_thread.run_sync(lambda: subprocess.run(
        argv, capture_output=True, text=True, timeout=30, env=env))
    assert (out.returncode, out.stdout) == (1, "")
    assert out.stderr == f"relay-orchestrator: run: {log}: Is a directory\n"
