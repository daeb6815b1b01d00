"""The systemd adapter against a real ``systemd --user`` (the sandbox).

Everything the adapter does runs as the sandbox's test user, through
``sandbox_helper.py``: inside a "parent" unit (as the orchestrator would
be), or as the installed ``relay-orchestrator.service`` itself. Waits are
bounded polls of the manager's state at short intervals; teardown stops
only the units these tests started, by name.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from .systemd_sandbox_support import SystemdUser, unavailable

pytestmark = [pytest.mark.systemd, pytest.mark.slow]

T = TypeVar("T")
AGENT_ARGS = ["$HOME", "${HOME}", "%n", "a b", "back\\slash"]


def wait_for(pred: Callable[[], T], what: str, timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def require_backend(backend: str) -> None:
    if backend == "dbus":
        try:
            import pydbus  # noqa: F401
            from gi.repository import GLib  # noqa: F401
        except (ImportError, ValueError) as exc:
            unavailable(f"pydbus/PyGObject not importable (pip install '.[systemd]'): {exc}")


def read_lines(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def recording_systemd_run(user: SystemdUser, work: Path) -> Path:
    """A ``systemd-run`` first on PATH that records its argv, then runs the real one."""
    real = shutil.which("systemd-run")
    assert real is not None
    bin_dir = work / "bin"
    bin_dir.mkdir()
    script = bin_dir / "systemd-run"
    script.write_text(
        f"#!/bin/sh\nprintf '%s\\n' \"$@\" >> '{work}/systemd-run.argv'\nexec '{real}' \"$@\"\n"
    )
    script.chmod(0o755)
    for p in (bin_dir, script):
        os.chown(p, user.uid, user.gid)
    return bin_dir


@pytest.mark.parametrize("backend", ["cli", "dbus"])
def test_agent_runs_in_its_own_transient_unit(systemd_user: SystemdUser, backend: str) -> None:
    require_backend(backend)
    user = systemd_user
    work = user.workdir(f"launch-{backend}")
    tag = uuid.uuid4().hex[:8]
    parent = f"relay-test-parent-{tag}.service"
    agent = f"relay-test-agent-{tag}.service"
    secret = f"s3cret-{uuid.uuid4().hex}"
    secret_file = work / "secret"
    secret_file.write_text(secret)
    os.chown(secret_file, user.uid, user.gid)
    secret_file.chmod(0o600)
    bin_dir = recording_systemd_run(user, work)
    try:
        user.run_as_user(
            [
                "systemd-run", "--user", "--quiet", "--collect", f"--unit={parent}",
                "-p", f"WorkingDirectory={work}",
                "-p", f"Environment=PATH={bin_dir}:{user.env['PATH']}",
                "--",
                *user.helper_argv(
                    "launch", "--backend", backend, "--workdir", str(work),
                    "--name", agent.removesuffix(".service"), "--secret-file", str(secret_file),
                ),
            ]
        )  # fmt: skip
        result_file = work / "result.json"

        def result_ready() -> bool:
            if result_file.exists():
                return True
            state = user.show(parent, "ActiveState")["ActiveState"]
            assert state in ("active", "activating"), (
                f"parent unit {state}; manager log:\n{user.log.read_text()[-3000:]}"
            )
            return False

        wait_for(result_ready, "the helper's launch result")
        result = json.loads(result_file.read_text())
        pid = result["pid"]
        assert result["unit"] == agent
        assert (result["backend"], result["fell_back"]) == (backend, False)
        assert result["status_pid"] == pid
        assert result["status_state"] == "active"
        assert result["secrets_left"] == []  # the environment file is gone

        props = user.show(
            agent, "MainPID", "ActiveState", "MemoryMax", "TasksMax", "CPUQuotaPerSecUSec"
        )
        assert props == {
            "MainPID": str(pid),
            "ActiveState": "active",
            "MemoryMax": str(256 * 1024**2),
            "TasksMax": "64",
            "CPUQuotaPerSecUSec": "500ms",
        }
        # argv reached the program verbatim; the secret is in its environment only.
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
        assert [a.decode() for a in cmdline[3:]] == AGENT_ARGS
        assert secret.encode() not in b"\0".join(cmdline)
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert f"RELAY_TEST_SECRET={secret}".encode() in environ
        assert f"/{agent}" in Path(f"/proc/{pid}/cgroup").read_text()
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    assert secret.encode() not in (proc / "cmdline").read_bytes()
                except OSError:
                    pass
        recorded = work / "systemd-run.argv"
        if backend == "cli":
            argv = recorded.read_text()
            assert secret not in argv
            assert "EnvironmentFile=" in argv
        else:
            assert not recorded.exists()  # D-Bus all the way

        # Input from the FIFO, output appended to the log.
        log = work / "agent.log"
        wait_for(lambda: "got: hello" in (log.read_text() if log.exists() else ""), "agent output")
        first = json.loads(log.read_text().splitlines()[0])
        assert first == {"argv": AGENT_ARGS, "secret_len": len(secret)}

        # Stopping the parent (the orchestrator's unit) leaves the agent running.
        user.systemctl("stop", parent)
        wait_for(
            lambda: user.show(parent, "ActiveState")["ActiveState"] in ("inactive", "failed"),
            "the parent unit to stop",
        )
        assert alive(pid)
        assert user.show(agent, "MainPID", "ActiveState") == {
            "MainPID": str(pid),
            "ActiveState": "active",
        }
        # Its input outlived the parent's end of the FIFO: no EOF, and a new
        # writer (the next orchestrator) reaches it.
        fd = os.open(work / "agent.in", os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.write(fd, b"again\n")
        finally:
            os.close(fd)
        wait_for(lambda: "got: again" in log.read_text(), "agent input after the parent left")
        assert "EOF" not in log.read_text()
    finally:
        user.stop_units(agent, parent)
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.parametrize("backend", ["cli", "dbus"])
def test_installed_unit_restarts_itself_decoupled(systemd_user: SystemdUser, backend: str) -> None:
    require_backend(backend)
    user = systemd_user
    work = user.workdir(f"selfrestart-{backend}")
    state = work / "starts.jsonl"
    token = "tok $x \"y\" 'z' %n \\ end"
    weird = 'a "b" $HOME %n \\ c'
    extra = ["x y$z%n\\w", ";", "'q'"]
    agent_unit = None
    try:
        out = user.run_as_user(
            user.helper_argv(
                "install", "--backend", backend, "--workdir", str(work),
                "--token", token, "--weird", weird, *extra,
            ),
            timeout=120,
        )  # fmt: skip
        installed = json.loads(out.stdout)
        assert token not in installed["dry_run"]
        assert "RELAY_ORCHESTRATOR_TOKEN=<token: hidden>" in installed["dry_run"]
        token_file = work / "config" / "token.env"
        assert token_file.stat().st_mode & 0o777 == 0o600

        # install returned at READY of the first start, which then asked for
        # its own restart: wait for the second start to be the unit's main process.
        def restarted() -> list[dict[str, object]] | None:
            lines = read_lines(state)
            if len(lines) < 2:
                return None
            props = user.show("relay-orchestrator.service", "MainPID", "ActiveState")
            if props != {"MainPID": str(lines[1]["pid"]), "ActiveState": "active"}:
                return None
            return lines

        first, second = wait_for(restarted, "the service's second start")
        agent_unit = str(first["agent_unit"])
        for start in (first, second):
            assert start["supervisor"] == "systemd"
            assert start["self_unit"] == "relay-orchestrator.service"
            assert start["can_self_upgrade"] is True
            assert start["argv"] == [*extra, "run"]  # ExecStart quoting kept every word
            assert start["token_sha256"] == hashlib.sha256(token.encode()).hexdigest()
            assert start["weird"] == weird
        assert first["pid"] != second["pid"]
        assert first["invocation_id"] != second["invocation_id"]
        assert (
            user.show("relay-orchestrator.service", "InvocationID")["InvocationID"]
            == (second["invocation_id"])
        )
        wait_for(lambda: not alive(int(first["pid"])), "the first process to exit")
        # The agent the first process started was not restarted with it.
        agent_pid = int(first["agent_pid"])
        assert alive(agent_pid)
        assert user.show(agent_unit, "MainPID")["MainPID"] == str(agent_pid)
        if backend == "cli":
            wait_for(
                lambda: (
                    "relay-orchestrator-restart-"
                    not in user.systemctl("list-units", "--all", "--no-legend", "--plain")
                ),
                "the restart helper unit to be collected",
            )

        # Uninstall: stopped, unit and token file gone, no longer loaded.
        user.run_as_user(user.helper_argv("uninstall", "--workdir", str(work)), timeout=120)
        assert not token_file.exists()
        assert not (user.home / ".config/systemd/user/relay-orchestrator.service").exists()
        assert user.show("relay-orchestrator.service", "LoadState") == {"LoadState": "not-found"}
        assert alive(agent_pid)  # agents stay
    finally:
        if agent_unit:
            user.stop_units(agent_unit)
        user.run_as_user(
            user.helper_argv("uninstall", "--workdir", str(work)), check=False, timeout=120
        )
        shutil.rmtree(work, ignore_errors=True)


def test_transient_unit_restarts_itself_decoupled(systemd_user: SystemdUser) -> None:
    user = systemd_user
    work = user.workdir("selfrestart-transient")
    state = work / "starts.jsonl"
    unit = f"relay-test-self-{uuid.uuid4().hex[:8]}.service"
    agent_unit = None
    try:
        # systemd-run returns at READY=1 (Type=notify).
        user.run_as_user(
            [
                "systemd-run", "--user", "--quiet", f"--unit={unit}",
                "-p", "Type=notify", "-p", "NotifyAccess=main", "-p", "KillMode=process",
                "--",
                *user.helper_argv("service", "--backend", "cli", "--state", str(state)),
            ],
            timeout=60,
        )  # fmt: skip

        def restarted() -> list[dict[str, object]] | None:
            lines = read_lines(state)
            if len(lines) < 2:
                return None
            if user.show(unit, "MainPID")["MainPID"] != str(lines[1]["pid"]):
                return None
            return lines

        first, second = wait_for(restarted, "the transient unit's second start")
        agent_unit = str(first["agent_unit"])
        assert first["self_unit"] == second["self_unit"] == unit
        assert first["invocation_id"] != second["invocation_id"]
        assert alive(int(first["agent_pid"]))
    finally:
        user.stop_units(*([agent_unit] if agent_unit else []), unit)
        shutil.rmtree(work, ignore_errors=True)
