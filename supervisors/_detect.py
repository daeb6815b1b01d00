"""Which supervisor runs us: ``detect()``.

``auto`` (the default of ``--supervisor``): systemd when started by systemd
(``$INVOCATION_ID``), launchd when started by launchd (``$XPC_SERVICE_NAME``
naming a job), else none. A named choice is taken as given.

Our own unit, unless ``--self-unit`` names it: under systemd the service in
``/proc/self/cgroup``; under launchd the label in ``$XPC_SERVICE_NAME``.
Under systemd we talk to the per-user manager when it started us
(``$MANAGERPID`` is set for user services only) or when we are not root,
else to the system manager, over D-Bus when pydbus is there, else with the
``systemctl``/``systemd-run`` tools; ``$RELAY_ORCHESTRATOR_SYSTEMD_BACKEND``
(``auto``, ``dbus`` or ``cli``, e.g. from a unit drop-in) picks one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ._errors import SupervisorConfigError
from ._host import HostSupervisor
from ._launchd import LaunchdSupervisor, label_from_env
from ._none import NoneSupervisor
from ._notify import Notifier, watchdog_interval
from ._systemd import SystemdSupervisor, open_backend
from ._systemd_backend import own_unit, service_name

SUPERVISOR_CHOICES = ("auto", "systemd", "launchd", "none")
SYSTEMD_BACKEND_ENV = "RELAY_ORCHESTRATOR_SYSTEMD_BACKEND"
SYSTEMD_BACKENDS = ("auto", "dbus", "cli")

# What a supervisor sets in our environment for us alone: a process we start
# must not inherit it (it would notify our unit, or believe it is one).
SUPERVISOR_ENV_KEYS = frozenset(
    {
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "INVOCATION_ID",
        "MANAGERPID",
        "SYSTEMD_EXEC_PID",
        "JOURNAL_STREAM",
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
        "XPC_SERVICE_NAME",
    }
)


def child_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without what our supervisor set for us alone."""
    return {k: v for k, v in env.items() if k not in SUPERVISOR_ENV_KEYS}


def supervisor_name(choice: str = "auto", env: Mapping[str, str] | None = None) -> str:
    """``systemd``, ``launchd`` or ``none``: what ``detect`` picks for ``choice``,
    without opening anything (for what must know it before ``detect`` runs,
    such as where the log goes)."""
    if choice not in SUPERVISOR_CHOICES:
        raise SupervisorConfigError(
            f"--supervisor must be one of {', '.join(SUPERVISOR_CHOICES)}: {choice!r}"
        )
    if choice != "auto":
        return choice
    env = os.environ if env is None else env
    if env.get("INVOCATION_ID"):
        return "systemd"
    if label_from_env(env) is not None:
        return "launchd"
    return "none"


def detect(
    choice: str = "auto",
    self_unit: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    proc_cgroup: Path = Path("/proc/self/cgroup"),
    systemd_backend: str | None = None,
) -> HostSupervisor:
    """The adapter for the supervisor that runs us (or the one named).

    ``systemd_backend``: ``auto``, ``dbus`` or ``cli``; None reads
    ``$RELAY_ORCHESTRATOR_SYSTEMD_BACKEND`` (default ``auto``).
    """
    env = dict(os.environ if env is None else env)
    choice = supervisor_name(choice, env)
    notifier = Notifier.from_env(env)
    watchdog = watchdog_interval(env)
    if choice == "systemd":
        if systemd_backend is None:
            systemd_backend = env.get(SYSTEMD_BACKEND_ENV) or "auto"
            if systemd_backend not in SYSTEMD_BACKENDS:
                raise SupervisorConfigError(
                    f"{SYSTEMD_BACKEND_ENV} must be one of {', '.join(SYSTEMD_BACKENDS)}: "
                    f"{systemd_backend!r}"
                )
        unit = service_name(self_unit) if self_unit else own_unit(proc_cgroup)
        user = "MANAGERPID" in env or os.getuid() != 0
        runtime_dir = env.get("XDG_RUNTIME_DIR")
        backend = open_backend(
            systemd_backend,
            user=user,
            secrets_dir=Path(runtime_dir) if user and runtime_dir else None,
        )
        return SystemdSupervisor(
            self_unit=unit, backend=backend, notifier=notifier, watchdog=watchdog
        )
    if choice == "launchd":
        return LaunchdSupervisor(
            self_unit=self_unit or label_from_env(env), notifier=notifier, watchdog=watchdog
        )
    return NoneSupervisor(notifier=notifier, watchdog=watchdog)


__all__ = [
    "SUPERVISOR_CHOICES",
    "SUPERVISOR_ENV_KEYS",
    "SYSTEMD_BACKEND_ENV",
    "child_env",
    "detect",
    "supervisor_name",
]
