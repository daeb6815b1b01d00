"""What the systemd adapter needs from a service manager (``SystemdBackend``,
spoken by ``SystemdCli`` and ``SystemdDbus``), the unit snapshot it returns,
and the small pure helpers both backends and the installer share."""


from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import attrs

from ._errors import LaunchError, SupervisorConfigError
from ._launch import Launched, LaunchSpec

# How long a start or restart request may take before we call it failed.
START_TIMEOUT = 30.0
# Properties read by unit_status().
STATUS_PROPERTIES = (
    "MainPID",
    "ActiveState",
    "SubState",
    "Result",
    "InvocationID",
    "NRestarts",
    "MemoryCurrent",
    "CPUUsageNSec",
    "TasksCurrent",
)
_UNIT_NAME = re.compile(r"[A-Za-z0-9:_.\\@-]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_UINT64_MAX = 2**64 - 1


# -- small pure helpers, shared with the installer and the D-Bus backend ------


def service_name(name: str) -> str:
    """``relay-ag_12`` -> ``relay-ag_12.service``; refuses what systemd would."""
    unit = name if name.endswith(".service") else f"{name}.service"
    if not _UNIT_NAME.fullmatch(unit) or len(unit) > 255:
        raise SupervisorConfigError(f"not a valid systemd unit name: {unit!r}")
    return unit


def escape_exec_arg(arg: str) -> str:
    """An argv word as the manager must receive it to execute it verbatim.

    The manager expands ``$VAR`` and ``${VAR}`` in ``ExecStart`` words (also
    for transient units) and turns ``$$`` into ``$``.
    """
    return arg.replace("$", "$$")


def _env_file_value(value: str) -> str:
    # Double quotes: the parser unescapes \\ \" \` \$ and keeps the rest.
    escaped = "".join("\\" + c if c in '\\"`$' else c for c in value)
    return f'"{escaped}"'


def format_env_file(env: Mapping[str, str]) -> str:
    """The text of an ``EnvironmentFile=`` that yields exactly ``env``."""
    lines = []
    for key, value in env.items():
        if not _ENV_NAME.fullmatch(key):
            raise SupervisorConfigError(f"not a valid environment variable name: {key!r}")
        lines.append(f"{key}={_env_file_value(value)}\n")
    return "".join(lines)


def write_private_file(directory: Path | None, prefix: str, content: str) -> Path:
    """Create a new file readable by its owner only (0600) and write ``content``."""
    fd, name = tempfile.mkstemp(prefix=prefix, dir=directory)  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(content)
    except BaseException:
        os.unlink(name)
        raise
    return Path(name)


def resolve_executable(argv0: str, cwd: Path, env: Mapping[str, str]) -> str:
    """The absolute path the manager needs, looked up in the process's own PATH."""
    if "/" in argv0:
        path = Path(argv0) if os.path.isabs(argv0) else cwd / argv0
        if not os.access(path, os.X_OK):
            raise LaunchError(f"not an executable file: {path}")
        return str(path)
    found = shutil.which(argv0, path=env.get("PATH", os.defpath))
    if found is None:
        raise LaunchError(f"executable not found on the process's PATH: {argv0}")
    return os.path.abspath(found)


# Opens the FIFO read-write as fd 0, then becomes the program (same pid).
STDIN_WRAPPER = 'exec 0<>"$0" && exec "$@"'


def unit_exec_argv(spec: LaunchSpec) -> list[str]:
    """The ``ExecStart`` words for ``spec``, escaped for the manager.

    With a ``stdin_path`` the program's standard input is that FIFO opened
    read-write, as ``DirectLauncher`` gives it: the process then holds a
    writer of its own and never reads EOF when we close our end (a restart
    of the orchestrator). ``StandardInput=file:`` would open it read-only.
    So ``/bin/sh`` opens it and ``exec``s the program, which keeps the pid.
    """
    exe = resolve_executable(spec.argv[0], spec.cwd, spec.env)
    argv = [exe, *spec.argv[1:]]
    if spec.stdin_path is not None:
        if not spec.stdin_path.exists():
            raise LaunchError(f"{spec.name}: no such input FIFO: {spec.stdin_path}")
        argv = ["/bin/sh", "-c", STDIN_WRAPPER, str(spec.stdin_path), *argv]
    return [escape_exec_arg(a) for a in argv]


def unit_from_cgroup(text: str) -> str | None:
    """Our service unit, from the text of ``/proc/self/cgroup``.

    The deepest path component that names a ``.service`` (a delegated unit
    may have sub-cgroups below it); the unified (``0::``) line first.
    """
    lines = [line.split(":", 2) for line in text.splitlines() if line.count(":") >= 2]
    lines.sort(key=lambda parts: parts[0] != "0")
    for _, _, path in lines:
        for part in reversed(path.split("/")):
            if part.endswith(".service"):
                return part
    return None


def own_unit(proc_cgroup: Path = Path("/proc/self/cgroup")) -> str | None:
    try:
        return unit_from_cgroup(proc_cgroup.read_text())
    except OSError:
        return None


def restart_helper_name() -> str:
    """A fresh name for the transient unit that carries the restart job."""
    return f"relay-orchestrator-restart-{time.time_ns()}-{os.getpid()}.service"


def _opt_int(value: str | int | None) -> int | None:
    if value is None or value in ("", "[not set]", "infinity"):
        return None
    number = int(value)
    return None if number == _UINT64_MAX else number


@attrs.frozen(kw_only=True)
class UnitStatus:
    """A snapshot of one service unit, as the manager reports it."""

    unit: str
    main_pid: int  # 0: no main process
    active_state: str  # "active", "inactive", "failed", "activating", …
    sub_state: str
    result: str  # "success", "exit-code", "signal", "oom-kill", …
    invocation_id: str  # "" before the first start
    n_restarts: int
    memory_current: int | None  # bytes; None where accounting is off
    cpu_usage_nsec: int | None
    tasks_current: int | None

    @classmethod
    def from_properties(cls, unit: str, props: Mapping[str, str | int | None]) -> UnitStatus:
        def text(key: str) -> str:
            value = props.get(key)
            return "" if value is None else str(value)

        return cls(
            unit=unit,
            main_pid=_opt_int(props.get("MainPID")) or 0,
            active_state=text("ActiveState"),
            sub_state=text("SubState"),
            result=text("Result"),
            invocation_id=text("InvocationID"),
            n_restarts=_opt_int(props.get("NRestarts")) or 0,
            memory_current=_opt_int(props.get("MemoryCurrent")),
            cpu_usage_nsec=_opt_int(props.get("CPUUsageNSec")),
            tasks_current=_opt_int(props.get("TasksCurrent")),
        )


# -- backends -----------------------------------------------------------------


class SystemdBackend(Protocol):
    """What the adapter needs from a service manager."""

    name: str  # "dbus" or "cli"

    async def start_transient(self, spec: LaunchSpec) -> Launched: ...

    async def restart_unit(self, unit: str) -> None:
        """Queue a restart job for ``unit`` that does not need the caller to survive."""
        ...

    async def stop_unit(self, unit: str) -> None: ...

    async def unit_status(self, unit: str) -> UnitStatus: ...
