"""Plain sessions: the agent as a process of its own, its input a FIFO.

The process is started by the fleet's ``ProcessLauncher`` (its own session
and process group, or its own systemd unit). Its stdin is the FIFO
``<agent dir>/stdin``, which the orchestrator holds open read-write, so the
agent never sees end-of-input, not even while no orchestrator runs (the
launcher opens it read-write too). Its stdout and stderr are appended to
``output.log``. A later orchestrator process re-opens the same FIFO.
"""

from __future__ import annotations

import os
import signal
import stat
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import trio

from supervisors import Launched, LaunchSpec, ProcessLauncher

from ._config import ProviderConfig
from ._output import tail
from ._params import CommandRejected
from ._process import ExitStatus
from ._session import LaunchFailed, describe_launch_error


def _open_fifo(path: Path) -> trio.lowlevel.FdStream | None:
    try:
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    return trio.lowlevel.FdStream(fd)


class PlainSession:
    kind = "plain"

    def __init__(
        self, *, fifo: Path, log: Path, unit: str | None, stream: trio.lowlevel.FdStream | None
    ) -> None:
        self._fifo = fifo
        self._log = log
        self._unit = unit
        self._stream = stream

    @property
    def tmux_session(self) -> str | None:
        return None

    @classmethod
    async def start(
        cls,
        *,
        launcher: ProcessLauncher,
        name: str,
        argv: Sequence[str],
        cwd: Path,
        env: Mapping[str, str],
        directory: Path,
        provider: ProviderConfig,
    ) -> tuple[PlainSession, Launched]:
        fifo = directory / "stdin"
        log = directory / "output.log"
        try:
            fifo.unlink(missing_ok=True)
            os.mkfifo(fifo, 0o600)
        except OSError as exc:
            raise LaunchFailed(f"could not create the agent's input FIFO: {exc.strerror}") from exc
        stream = _open_fifo(fifo)
        spec = LaunchSpec(
            name=name,
            argv=argv,
            cwd=cwd,
            env=env,
            stdin_path=fifo,
            stdout_path=log,
            memory_max=provider.memory_max,
            cpu_quota=provider.cpu_quota,
            tasks_max=provider.tasks_max,
        )
        try:
            launched = await launcher.launch(spec)
        except Exception as exc:
            if stream is not None:
                stream.close()
            raise LaunchFailed(describe_launch_error(argv[0], exc)) from None
        return cls(fifo=fifo, log=log, unit=launched.unit, stream=stream), launched

    @classmethod
    def reopen(cls, data: dict[str, Any]) -> PlainSession:
        fifo = Path(data["fifo"])
        return cls(fifo=fifo, log=Path(data["log"]), unit=data.get("unit"), stream=_open_fifo(fifo))

    async def send(self, text: str, *, enter_after: float = 0.0) -> None:
        if self._stream is None:
            raise CommandRejected("the agent's input is not available")
        await self._stream.send_all((text + "\n").encode())

    async def send_keys(self, keys: Sequence[str]) -> None:
        raise CommandRejected("a plain session has no terminal to press keys in")

    async def finish(self, status: ExitStatus, *, early: bool = False) -> tuple[ExitStatus, str]:
        self.close()
        return status, tail(self._log)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "fifo": str(self._fifo),
            "log": str(self._log),
            "unit": self._unit,
        }


def end_orphans(agents_dir: Path, keep: Collection[str]) -> list[tuple[str, int]]:
    """SIGKILL the plain agents a crashed orchestrator started but never recorded.

    A crash between an agent's start and its record leaves a process that no
    record names. Its stdin tells it: the FIFO ``<agents_dir>/<agentId>/stdin``
    is made anew for every start, so a session leader whose fd 0 is that very
    FIFO comes from the latest start of that agent. ``keep``: the agents just
    adopted as running (their process is the recorded one). Returns
    ``(agentId, pid)`` of each process group killed. Needs ``/proc`` (Linux).
    """
    fifos: dict[tuple[int, int], str] = {}
    try:
        entries = list(os.scandir(agents_dir))
    except OSError:
        return []
    for entry in entries:
        if entry.name in keep:
            continue
        try:
            info = os.stat(os.path.join(entry.path, "stdin"))
        except OSError:
            continue
        if stat.S_ISFIFO(info.st_mode):
            fifos[(info.st_dev, info.st_ino)] = entry.name
    killed: list[tuple[str, int]] = []
    if not fifos or not os.path.isdir("/proc"):
        return killed
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        try:
            info = os.stat(f"/proc/{pid}/fd/0")  # follows the descriptor to the FIFO
            agent_id = fifos.get((info.st_dev, info.st_ino))
            if agent_id is None or os.getsid(pid) != pid:  # an agent's child: not a start
                continue
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            continue
        killed.append((agent_id, pid))
    return killed
