"""What the orchestrator asks of the thing that supervises it.

``HostSupervisor`` is the protocol; ``detect()`` (``_detect.py``) picks one
of the three adapters that keep it:

- ``SystemdSupervisor`` (``_systemd.py``): agents in transient units, restart
  through the manager;
- ``LaunchdSupervisor`` (``_launchd.py``): agents in their own sessions,
  restart through ``launchctl kickstart -k``;
- ``NoneSupervisor`` (``_none.py``): the foreground; no self-upgrade.

Every adapter speaks sd_notify when ``$NOTIFY_SOCKET`` is set, whatever its
name: a ``Type=notify`` unit run with ``--supervisor none`` still needs its
``READY=1``.
"""

from __future__ import annotations

from typing import Protocol

import attrs

from ._launch import ProcessLauncher
from ._notify import Notifier, watchdog_interval


class HostSupervisor(Protocol):
    @property
    def name(self) -> str:
        """``"systemd"``, ``"launchd"`` or ``"none"``."""
        ...

    @property
    def self_unit(self) -> str | None:
        """Our own unit (``relay-orchestrator.service``) or launchd label."""
        ...

    @property
    def can_self_upgrade(self) -> bool:
        """systemd or launchd supervision and a known ``self_unit``."""
        ...

    @property
    def launcher(self) -> ProcessLauncher:
        """Starts processes that outlive our own teardown."""
        ...

    @property
    def watchdog(self) -> float | None:
        """The watchdog timeout in seconds (ping at half), or None."""
        ...

    async def restart_self(self) -> None:
        """Ask the supervisor to restart us, decoupled, and return at once.

        The supervisor then stops this process as it would for any stop
        (SIGTERM) and starts a new one; the caller carries on with its normal
        shutdown. Raises ``RestartError`` where it cannot be done.
        """
        ...

    def notify_ready(self, status: str | None = None) -> bool: ...

    def notify_status(self, status: str) -> bool: ...

    def notify_stopping(self, status: str | None = None) -> bool: ...

    def notify_watchdog(self) -> bool: ...


@attrs.define(eq=False, kw_only=True)
class NotifyingSupervisor:
    """The sd_notify half every adapter shares."""

    notifier: Notifier = attrs.field(factory=Notifier.from_env)
    watchdog: float | None = attrs.field(factory=watchdog_interval)

    def notify_ready(self, status: str | None = None) -> bool:
        return self.notifier.ready(status)

    def notify_status(self, status: str) -> bool:
        return self.notifier.status(status)

    def notify_stopping(self, status: str | None = None) -> bool:
        return self.notifier.stopping(status)

    def notify_watchdog(self) -> bool:
        return self.notifier.watchdog()


__all__ = ["HostSupervisor", "NotifyingSupervisor"]
