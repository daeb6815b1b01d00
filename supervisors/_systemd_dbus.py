"""The systemd backend over D-Bus (pydbus, the ``systemd`` extra).

pydbus is blocking: every call goes through ``trio.to_thread.run_sync``.
Properties of type ``v`` are passed as ``GLib.Variant(signature, value)``.
A start job is waited for by polling the unit's ``Job`` property at short
intervals, bounded by ``start_timeout`` (the manager's own state; a
``Type=exec`` job takes a few milliseconds).

If the bus cannot be reached on first use and a fallback backend was given
(the CLI), every later call goes to the fallback.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
import trio

from ._errors import LaunchError, RestartError, SupervisorConfigError, SupervisorError
from ._launch import Launched, LaunchSpec
from ._systemd_backend import (
    START_TIMEOUT,
    SystemdBackend,
    UnitStatus,
    service_name,
    unit_exec_argv,
)

_UINT32_MAX = 2**32 - 1
_UINT64_MAX = 2**64 - 1
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGTPE]?)B?", re.IGNORECASE)
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)%")
_POLL_INTERVAL = 0.002  # seconds between two looks at a start job
_UNIT = "org.freedesktop.systemd1.Unit"
_SERVICE = "org.freedesktop.systemd1.Service"
_T = TypeVar("_T")


def pydbus_available() -> bool:
    try:
        import pydbus  # noqa: F401
        from gi.repository import GLib  # noqa: F401
    except (ImportError, ValueError):
        return False
    return True


# -- resource-control values: systemd syntax -> D-Bus properties --------------


def _scale(percent: float) -> int:
    # systemd's UINT32_SCALE_FROM_PERMYRIAD
    return int(round(percent * 100)) * _UINT32_MAX // 10000


def memory_property(value: str) -> tuple[str, str, int]:
    """``"4G"`` -> ``("MemoryMax", "t", 4294967296)``; ``"50%"`` -> ``MemoryMaxScale``."""
    text = value.strip()
    if text == "infinity":
        return ("MemoryMax", "t", _UINT64_MAX)
    if m := _PERCENT.fullmatch(text):
        return ("MemoryMaxScale", "u", _scale(float(m[1])))
    if m := _SIZE.fullmatch(text):
        power = "KMGTPE".find(m[2].upper()) + 1 if m[2] else 0
        return ("MemoryMax", "t", int(float(m[1]) * 1024**power))
    raise SupervisorConfigError(f"memory_max: not a systemd size: {value!r}")


def cpu_quota_property(value: str) -> tuple[str, str, int]:
    """``"200%"`` -> ``("CPUQuotaPerSecUSec", "t", 2000000)``."""
    if m := _PERCENT.fullmatch(value.strip()):
        return ("CPUQuotaPerSecUSec", "t", int(float(m[1]) * 10_000))
    raise SupervisorConfigError(f"cpu_quota: not a percentage: {value!r}")


def tasks_property(value: str) -> tuple[str, str, int]:
    """``"512"`` -> ``("TasksMax", "t", 512)``; ``"10%"`` -> ``TasksMaxScale``."""
    text = value.strip()
    if text == "infinity":
        return ("TasksMax", "t", _UINT64_MAX)
    if m := _PERCENT.fullmatch(text):
        return ("TasksMaxScale", "u", _scale(float(m[1])))
    if text.isdigit():
        return ("TasksMax", "t", int(text))
    raise SupervisorConfigError(f"tasks_max: not a number of tasks: {value!r}")


def transient_properties(spec: LaunchSpec) -> list[tuple[str, str, Any]]:
    """The ``StartTransientUnit`` properties for ``spec``, as (name, signature, value)."""
    argv = unit_exec_argv(spec)
    props: list[tuple[str, str, Any]] = [
        ("Description", "s", f"relay-orchestrator agent {spec.name}"),
        ("Type", "s", "exec"),
        ("CollectMode", "s", "inactive-or-failed"),
        ("ExecStart", "a(sasb)", [(argv[0], argv, False)]),
        ("WorkingDirectory", "s", str(spec.cwd)),
        ("Environment", "as", [f"{k}={v}" for k, v in spec.env.items()]),
    ]
    props.append(("StandardInput", "s", "null"))  # stdin: see unit_exec_argv()
    if spec.stdout_path is not None:
        props.append(("StandardOutputFileToAppend", "s", str(spec.stdout_path)))
        props.append(("StandardErrorFileToAppend", "s", str(spec.stdout_path)))
    else:
        props.append(("StandardOutput", "s", "null"))
        props.append(("StandardError", "s", "null"))
    if spec.memory_max is not None:
        props.append(memory_property(spec.memory_max))
    if spec.cpu_quota is not None:
        props.append(cpu_quota_property(spec.cpu_quota))
    if spec.tasks_max is not None:
        props.append(tasks_property(spec.tasks_max))
    return props


def unit_object_path(unit: str) -> str:
    """The manager's object path for ``unit`` (systemd's ``bus_label_escape``)."""
    label = "".join(
        c if c.isascii() and (c.isalpha() or (c.isdigit() and i > 0)) else f"_{ord(c):02x}"
        for i, c in enumerate(unit)
    )
    return "/org/freedesktop/systemd1/unit/" + (label or "_")


# -- the backend ----------------------------------------------------------------


class _BusUnavailable(SupervisorError):
    pass


@attrs.define(eq=False)
class SystemdDbus:
    """The manager's D-Bus API (``org.freedesktop.systemd1``) through pydbus."""

    user: bool = True
    fallback: SystemdBackend | None = None
    start_timeout: float = START_TIMEOUT
    name: str = "dbus"
    _bus: Any = attrs.field(default=None, init=False)
    _manager: Any = attrs.field(default=None, init=False)
    _fell_back: bool = attrs.field(default=False, init=False)

    # -- plumbing

    def _connect_sync(self) -> Any:
        if self._manager is None:
            try:
                import pydbus

                self._bus = pydbus.SessionBus() if self.user else pydbus.SystemBus()
                self._manager = self._bus.get(".systemd1")
            except Exception as exc:  # GLib.Error, for a bus that is not there
                raise _BusUnavailable(f"systemd D-Bus API unreachable: {exc}") from exc
        return self._manager

    async def _call(self, fn: Callable[[Any], _T], error: type[SupervisorError]) -> _T:
        def run() -> _T:
            manager = self._connect_sync()
            try:
                return fn(manager)
            except SupervisorError:
                raise
            except Exception as exc:  # GLib.Error: translate at the edge
                raise error(_dbus_message(exc)) from exc

        return await trio.to_thread.run_sync(run)

    def _backup(self) -> SystemdBackend | None:
        return self.fallback if self._fell_back else None

    async def _with_fallback(self, exc: _BusUnavailable) -> SystemdBackend:
        if self.fallback is None:
            raise LaunchError(str(exc)) from exc
        self._fell_back = True
        return self.fallback

    def _get_all_sync(
        self, path: str, ifaces: tuple[str, ...] = (_UNIT, _SERVICE)
    ) -> dict[str, Any]:
        from gi.repository import GLib

        props: dict[str, Any] = {}
        for iface in ifaces:
            reply = self._bus.con.call_sync(
                "org.freedesktop.systemd1",
                path,
                "org.freedesktop.DBus.Properties",
                "GetAll",
                GLib.Variant("(s)", (iface,)),
                GLib.VariantType.new("(a{sv})"),
                0,
                -1,
                None,
            )
            props.update(reply.unpack()[0])
        return props

    def _status_sync(self, manager: Any, unit: str) -> UnitStatus:
        props = self._get_all_sync(manager.LoadUnit(unit))
        props["InvocationID"] = bytes(props.get("InvocationID") or b"").hex()
        return UnitStatus.from_properties(unit, props)

    # -- SystemdBackend

    async def start_transient(self, spec: LaunchSpec) -> Launched:
        if (backup := self._backup()) is not None:
            return await backup.start_transient(spec)
        if not spec.argv:
            raise LaunchError(f"{spec.name}: empty argv")
        unit = service_name(spec.name)
        props = transient_properties(spec)

        path = unit_object_path(unit)

        def look() -> tuple[int, str, str, int]:
            unit_props = self._get_all_sync(path, (_UNIT,))
            job, state = int(unit_props["Job"][0]), str(unit_props["ActiveState"])
            if job != 0:
                return (job, state, "", 0)
            service = self._get_all_sync(path, (_SERVICE,))
            return (job, state, str(service["Result"]), int(service["MainPID"]))

        def start(manager: Any) -> tuple[int, str, str, int]:
            from gi.repository import GLib

            variants = [(name, GLib.Variant(sig, value)) for name, sig, value in props]
            manager.StartTransientUnit(unit, "fail", variants, [])
            return look()

        try:
            job, state, result, pid = await self._call(start, LaunchError)
        except _BusUnavailable as exc:
            return await (await self._with_fallback(exc)).start_transient(spec)

        # Wait for the start job to finish (Type=exec: until the program runs).
        with trio.move_on_after(self.start_timeout):
            while job != 0:
                await trio.sleep(_POLL_INTERVAL)
                try:
                    job, state, result, pid = await self._call(lambda _: look(), LaunchError)
                except LaunchError as exc:  # collected: it failed and is gone
                    raise LaunchError(f"{unit} failed to start: {exc}") from exc
        if job != 0:
            raise LaunchError(f"{unit}: start job still running after {self.start_timeout:g} s")
        if state != "active" or pid <= 0:
            raise LaunchError(f"{unit} failed to start ({state}, result {result})")
        return Launched(pid=pid, unit=unit)

    async def restart_unit(self, unit: str) -> None:
        if (backup := self._backup()) is not None:
            return await backup.restart_unit(unit)
        # One job in the manager: it does not need us to survive our own stop.
        try:
            await self._call(lambda m: m.RestartUnit(unit, "replace"), RestartError)
        except _BusUnavailable as exc:
            if self.fallback is None:
                raise RestartError(str(exc)) from exc
            await (await self._with_fallback(exc)).restart_unit(unit)

    async def stop_unit(self, unit: str) -> None:
        if (backup := self._backup()) is not None:
            return await backup.stop_unit(unit)
        try:
            await self._call(lambda m: m.StopUnit(unit, "replace"), LaunchError)
        except _BusUnavailable as exc:
            await (await self._with_fallback(exc)).stop_unit(unit)

    async def unit_status(self, unit: str) -> UnitStatus:
        if (backup := self._backup()) is not None:
            return await backup.unit_status(unit)
        try:
            return await self._call(lambda m: self._status_sync(m, unit), LaunchError)
        except _BusUnavailable as exc:
            return await (await self._with_fallback(exc)).unit_status(unit)


def _dbus_message(exc: Exception) -> str:
    message = getattr(exc, "message", None) or str(exc)
    # "GDBus.Error:org.freedesktop.systemd1.UnitExists: Unit x already exists."
    return str(message).split(": ", 1)[-1] if "GDBus.Error:" in str(message) else str(message)


__all__ = [
    "SystemdDbus",
    "cpu_quota_property",
    "memory_property",
    "pydbus_available",
    "tasks_property",
    "transient_properties",
    "unit_object_path",
]
