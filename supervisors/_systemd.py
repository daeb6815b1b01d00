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

import shutil
from collections.abc import Sequence
from pathlib import Path

import attrs
import trio

from ._errors import LaunchError, RestartError, SupervisorConfigError, SupervisorError
from ._host import NotifyingSupervisor
from ._launch import Launched, LaunchSpec
from ._systemd_backend import (
    START_TIMEOUT,
    STATUS_PROPERTIES,
    SystemdBackend,
    UnitStatus,
    escape_exec_arg,
    format_env_file,
    own_unit,
    resolve_executable,
    restart_helper_name,
    service_name,
    unit_exec_argv,
    unit_from_cgroup,
    write_private_file,
)


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
                ",".join(STATUS_PROPERTIES),
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
