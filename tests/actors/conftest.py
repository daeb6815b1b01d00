"""A harness around real fleets, real processes, and the fake agent.

Everything waits on events: reports arrive through ``RecordingReporter``
(``wait_for``), and the fake agent writes its lines into a FIFO the test
reads (``Record``). Teardown kills, by pid, only the processes the tests
started (checked by start time, so a reused pid is never hit).
"""

from __future__ import annotations

import copy
import os
import shutil
import signal
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
import trio

from actors import AgentFleet, FleetConfig, MemoryStore, provider_config_from_table
from supervisors._launch import DirectLauncher, Launched, LaunchSpec

FAKE_AGENT = Path(__file__).resolve().parents[1] / "fake_agent.py"
ORCHESTRATOR_TOKEN = "orch-token-never-inherited"
WAIT = 15  # seconds: the bound on any one wait in these tests


class RecordingReporter:
    def __init__(self) -> None:
        self.reports: list[dict[str, Any]] = []
        self._changed = trio.Event()

    def agent_changed(self, agent: dict[str, Any]) -> None:
        self.reports.append(copy.deepcopy(agent))
        self._changed.set()
        self._changed = trio.Event()

    def mark(self) -> int:
        return len(self.reports)

    def statuses(self, agent_id: str, since: int = 0) -> list[str]:
        return [r["status"] for r in self.reports[since:] if r["agentId"] == agent_id]

    async def wait_for(
        self,
        agent_id: str,
        status: str,
        *,
        since: int = 0,
        where: Callable[[dict[str, Any]], bool] = lambda report: True,
    ) -> dict[str, Any]:
        with trio.fail_after(WAIT):
            while True:
                for report in self.reports[since:]:
                    if report["agentId"] == agent_id and report["status"] == status:
                        if where(report):
                            return report
                await self._changed.wait()


class RecordingLauncher:
    """``DirectLauncher``, remembering what it started."""

    def __init__(self) -> None:
        self.inner = DirectLauncher()
        self.specs: list[LaunchSpec] = []
        self.started: list[tuple[int, float]] = []

    async def launch(self, spec: LaunchSpec) -> Launched:
        self.specs.append(spec)
        launched = await self.inner.launch(spec)
        try:
            self.started.append((launched.pid, psutil.Process(launched.pid).create_time()))
        except psutil.Error:
            pass
        return launched


class Record:
    """A FIFO the fake agent appends its lines to; read line by line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        os.mkfifo(path, 0o600)
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        self._stream = trio.lowlevel.FdStream(fd)
        self._buffer = b""

    async def line(self) -> str:
        with trio.fail_after(WAIT):
            while b"\n" not in self._buffer:
                self._buffer += await self._stream.receive_some(65536)
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    async def lines(self, count: int) -> list[str]:
        return [await self.line() for _ in range(count)]

    async def until(self, predicate: Callable[[str], bool]) -> list[str]:
        """Lines up to and including the first that satisfies ``predicate``."""
        seen = []
        while True:
            seen.append(await self.line())
            if predicate(seen[-1]):
                return seen

    async def started(self) -> int:
        lines = await self.until(lambda line: line.startswith("started "))
        return int(lines[-1].split()[1])

    def close(self) -> None:
        self._stream.close()


async def wait_dead(pid: int) -> None:
    """Wait (on a pidfd) until ``pid`` has ended, without reaping it."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        with trio.fail_after(WAIT):
            await trio.lowlevel.wait_readable(fd)
    finally:
        trio.lowlevel.notify_closing(fd)
        os.close(fd)


class Harness:
    def __init__(self, tmp_path: Path, nursery: trio.Nursery) -> None:
        self.tmp = tmp_path
        self.base = tmp_path / "base"
        self.base.mkdir()
        self.state = tmp_path / "state"
        self.nursery = nursery
        self.store = MemoryStore()
        self.reporter = RecordingReporter()
        self.launcher = RecordingLauncher()
        self.tmux_socket = f"relay-test-{uuid.uuid4().hex[:12]}"
        # tmux sockets of the tests' own servers live in a short private dir.
        self.tmux_dir = Path(tempfile.mkdtemp(prefix="rt-"))
        self.env = {
            **os.environ,
            "RELAY_ORCHESTRATOR_TOKEN": ORCHESTRATOR_TOKEN,
            "TMUX_TMPDIR": str(self.tmux_dir),
        }
        self.env.pop("TMUX", None)
        self._scopes: dict[int, tuple[trio.CancelScope, trio.Event]] = {}
        self._records: list[Record] = []

    def config(self, session: str = "plain", **overrides: Any) -> FleetConfig:
        command = {"enabled": True, "session": session}
        command.update(overrides.pop("command", {}))
        values: dict[str, Any] = {
            "base_dir": self.base,
            "state_dir": self.state,
            "providers": {"command": provider_config_from_table("command", command)},
            "tmux_socket": self.tmux_socket,
            "env": self.env,
            "stop_timeout": 5.0,
        }
        values.update(overrides)
        return FleetConfig(**values)

    async def start(self, config: FleetConfig | None = None) -> AgentFleet:
        fleet = AgentFleet(
            config or self.config(),
            store=self.store,
            reporter=self.reporter,
            launcher=self.launcher,
        )
        scope, ended = trio.CancelScope(), trio.Event()

        async def serve(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                with scope:
                    await fleet.run(task_status=task_status)
            finally:
                ended.set()

        await self.nursery.start(serve)
        self._scopes[id(fleet)] = (scope, ended)
        return fleet

    async def stop(self, fleet: AgentFleet) -> None:
        """End a fleet as an orchestrator exit would: its agents keep running."""
        scope, ended = self._scopes[id(fleet)]
        scope.cancel()
        with trio.fail_after(WAIT):
            await ended.wait()

    def record(self, name: str = "record") -> Record:
        record = Record(self.tmp / f"{name}.fifo")
        self._records.append(record)
        return record

    def spawn(
        self, *agent_args: str, record: Record | None = None, **params: Any
    ) -> dict[str, Any]:
        """SpawnParams running the fake agent under the `command` provider."""
        argv = [sys.executable, str(FAKE_AGENT), *agent_args]
        if record is not None:
            argv += ["--record", str(record.path)]
        return {"provider": "command", "cwd": str(self.base), "providerArgs": argv, **params}

    def cleanup(self) -> None:
        for record in self._records:
            record.close()
        known: dict[int, float] = dict(self.launcher.started)
        for stored in self.store.load_agents():
            process = stored.get("process")
            if process:
                known[process["pid"]] = process["createTime"]
        servers = {
            pid
            for spec, (pid, _) in zip(self.launcher.specs, self.launcher.started, strict=False)
            if spec.name.startswith("relay-tmux-")
        }
        killed = [
            pid
            for pid, created in known.items()
            if _kill(pid, created, signal.SIGTERM if pid in servers else signal.SIGKILL)
        ]
        for pid in killed:
            try:
                os.waitpid(pid, 0)  # only our own children; others raise
            except ChildProcessError:
                pass
        shutil.rmtree(self.tmux_dir, ignore_errors=True)


def _kill(pid: int, created: float, sig: int) -> bool:
    """Signal ``pid`` (its group, when it leads one) if it is still that process."""
    try:
        process = psutil.Process(pid)
        if abs(process.create_time() - created) > 0.011:
            return False
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (psutil.Error, ProcessLookupError):
        return False
    return True


TEST_DEADLINE = 90  # seconds: no test here may hang longer than this


async def _deadline() -> None:
    await trio.sleep(TEST_DEADLINE)
    raise TimeoutError(f"test still running after {TEST_DEADLINE} s")


@pytest.fixture
async def harness(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Harness]:
    h = Harness(tmp_path, nursery)
    nursery.start_soon(_deadline)  # bounds every await of the test, execute() included
    try:
        yield h
    finally:
        h.cleanup()
