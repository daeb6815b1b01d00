"""The systemd adapter: transient units for agents, a decoupled self-restart.

Under systemd every agent process runs in a transient service unit of its
own (``<spec.name>.service``), outside the orchestrator unit's cgroup, so
stopping or restarting the orchestrator leaves the agents running whatever
the orchestrator unit's ``KillMode``.

Two backends keep one protocol (``SystemdBackend``):

- ``SystemdDbus`` (``_systemd_dbus.py``): the manager's D-Bus API through
  pydbus, used when it imports and the bus answers (the ``systemd`` extra);
- ``SystemdCli``: ``systemd-run`` and ``systemctl`` through
  ``trio.run_process``, always available.

Secrets never travel in argv: the CLI backend hands the environment over in
an ``EnvironmentFile=`` (mode 0600, removed once the unit has started), the
D-Bus backend in the unit's ``Environment`` property.

Both start agents with ``Type=exec``: the start job completes only once the
program has been executed, and the environment file has been read when it
is removed. The executable is looked up before (in the process's own PATH),
so a missing program fails the launch. An input FIFO is opened read-write
by the process itself (``unit_exec_argv``), so that it outlives our end.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import attrs
import trio

from ._errors import LaunchError, RestartError, SupervisorConfigError, SupervisorError
from ._host import NotifyingSupervisor
from ._launch import Launched, LaunchSpec

# How long a start or restart request may take before we call it failed.
START_TIMEOUT = 30.0
# Properties read by unit_status().
_STATUS_PROPERTIES = (
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


def _tail(data: bytes, lines: int = 5) -> str:
    text = data.decode(errors="replace").strip()
    return " | ".join(text.splitlines()[-lines:]) or "(no output)"


@attrs.define(eq=False)
class SystemdCli:
    """``systemd-run`` and ``systemctl`` on the command line."""

    user: bool = True  # the per-user manager (systemctl --user), else the system one
    # Where the short-lived environment files go (0600 files); None: $TMPDIR.
    secrets_dir: Path | None = None
    start_timeout: float = START_TIMEOUT
    name: str = "cli"

    def _scope(self) -> list[str]:
        return ["--user"] if self.user else ["--system"]

    async def _run(self, argv: Sequence[str], error: type[SupervisorError]) -> bytes:
        try:
            with trio.fail_after(self.start_timeout):
                proc = await trio.run_process(
                    list(argv), capture_stdout=True, capture_stderr=True, check=False
                )
        except trio.TooSlowError as exc:
            raise error(f"{argv[0]} took longer than {self.start_timeout:g} s") from exc
        except OSError as exc:
            raise error(f"cannot run {argv[0]}: {exc}") from exc
        if proc.returncode != 0:
            raise error(
                f"{' '.join(argv[:2])} … failed (exit {proc.returncode}): {_tail(proc.stderr)}"
            )
        return proc.stdout

    def run_argv(self, spec: LaunchSpec, env_file: Path | None) -> list[str]:
        """The ``systemd-run`` command line for ``spec`` (no secret in it)."""
        unit = service_name(spec.name)
        argv = [
            "systemd-run",
            *self._scope(),
            f"--unit={unit}",
            "--collect",
            "--quiet",
            "--no-ask-password",
            f"--description=relay-orchestrator agent {spec.name}",
            "-p",
            "Type=exec",
            "-p",
            f"WorkingDirectory={spec.cwd}",
        ]
        if env_file is not None:
            argv += ["-p", f"EnvironmentFile={env_file}"]
        argv += ["-p", "StandardInput=null"]  # stdin: see unit_exec_argv()
        out = f"append:{spec.stdout_path}" if spec.stdout_path is not None else "null"
        argv += ["-p", f"StandardOutput={out}", "-p", f"StandardError={out}"]
        for prop, value in (
            ("MemoryMax", spec.memory_max),
            ("CPUQuota", spec.cpu_quota),
            ("TasksMax", spec.tasks_max),
        ):
            if value is not None:
                argv += ["-p", f"{prop}={value}"]
        argv += ["--", *unit_exec_argv(spec)]
        return argv

    async def start_transient(self, spec: LaunchSpec) -> Launched:
        if not spec.argv:
            raise LaunchError(f"{spec.name}: empty argv")
        unit = service_name(spec.name)
        env_file = write_private_file(self.secrets_dir, "relay-env-", format_env_file(spec.env))
        try:
            # systemd-run returns once the start job is done (Type=exec: the
            # program runs), so the manager has read the file by then.
            await self._run(self.run_argv(spec, env_file), LaunchError)
        finally:
            env_file.unlink(missing_ok=True)
        status = await self.unit_status(unit)
        if status.main_pid <= 0:
            raise LaunchError(
                f"{unit} started but has no main process "
                f"({status.active_state}/{status.sub_state}, result {status.result})"
            )
        return Launched(pid=status.main_pid, unit=unit)

    async def restart_unit(self, unit: str) -> None:
        systemctl = shutil.which("systemctl") or "systemctl"
        await self._run(
            [
                "systemd-run",
                *self._scope(),
                f"--unit={restart_helper_name()}",
                "--collect",
                "--quiet",
                "--no-ask-password",
                "--description=relay-orchestrator: restart " + unit,
                "--",
                systemctl,
                *self._scope(),
                "--no-block",
                "restart",
                unit,
            ],
            RestartError,
        )

    async def stop_unit(self, unit: str) -> None:
        await self._run(
            ["systemctl", *self._scope(), "--no-ask-password", "stop", "--", unit], LaunchError
        )

    async def unit_status(self, unit: str) -> UnitStatus:
        out = await self._run(
            [
                "systemctl",
                *self._scope(),
                "show",
                "--no-pager",
                "-p",
                ",".join(_STATUS_PROPERTIES),
                "--",
                unit,
            ],
            LaunchError,
        )
        props: dict[str, str | int | None] = {}
        for line in out.decode().splitlines():
            key, sep, value = line.partition("=")
            if sep:
                props[key] = value
        return UnitStatus.from_properties(unit, props)


def open_backend(
    prefer: str = "auto", *, user: bool = True, secrets_dir: Path | None = None
) -> SystemdBackend:
    """``"dbus"``, ``"cli"``, or ``"auto"``: D-Bus when pydbus imports, else the CLI.

    The D-Bus backend connects lazily and falls back to the CLI by itself
    if the bus cannot be reached.
    """
    cli = SystemdCli(user=user, secrets_dir=secrets_dir)
    if prefer == "cli":
        return cli
    if prefer not in ("auto", "dbus"):
        raise SupervisorConfigError(f"unknown systemd backend {prefer!r}: use auto, dbus or cli")
    try:
        from ._systemd_dbus import SystemdDbus, pydbus_available
    except ImportError:  # pragma: no cover - the module itself imports nothing optional
        return cli
    if not pydbus_available():
        if prefer == "dbus":
            raise SupervisorConfigError(
                "the D-Bus backend needs pydbus: install relay-orchestrator[systemd]"
            )
        return cli
    return SystemdDbus(user=user, fallback=None if prefer == "dbus" else cli)


# -- the adapter ---------------------------------------------------------------


@attrs.define(eq=False)
class SystemdLauncher:
    """A ``ProcessLauncher``: each process in a transient unit of its own."""

    backend: SystemdBackend

    async def launch(self, spec: LaunchSpec) -> Launched:
        return await self.backend.start_transient(spec)


@attrs.define(eq=False, kw_only=True)
class SystemdSupervisor(NotifyingSupervisor):
    """We run as a systemd service (``$INVOCATION_ID``)."""

    self_unit: str | None
    backend: SystemdBackend
    name: str = "systemd"

    @property
    def can_self_upgrade(self) -> bool:
        return self.self_unit is not None

    @property
    def launcher(self) -> SystemdLauncher:
        return SystemdLauncher(self.backend)

    async def restart_self(self) -> None:
        """Hand the manager one restart job for our unit, and return.

        The manager then stops us (SIGTERM; the unit's ``KillMode=process``
        leaves everything else alone) and starts the unit again; the caller
        goes on with its normal shutdown.
        """
        if self.self_unit is None:
            raise RestartError("self-upgrade needs systemd or launchd supervision and a known unit")
        await self.backend.restart_unit(self.self_unit)

    async def unit_status(self, unit: str) -> UnitStatus:
        return await self.backend.unit_status(unit)


async def unit_status(unit: str, *, user: bool = True, prefer: str = "auto") -> UnitStatus:
    """``MainPID``, ``Result``, ``MemoryCurrent``, ``CPUUsageNSec``, … of one unit."""
    return await open_backend(prefer, user=user).unit_status(service_name(unit))


__all__ = [
    "START_TIMEOUT",
    "SystemdBackend",
    "SystemdCli",
    "SystemdLauncher",
    "SystemdSupervisor",
    "UnitStatus",
    "escape_exec_arg",
    "format_env_file",
    "open_backend",
    "own_unit",
    "resolve_executable",
    "restart_helper_name",
    "service_name",
    "unit_exec_argv",
    "unit_from_cgroup",
    "unit_status",
    "write_private_file",
]
