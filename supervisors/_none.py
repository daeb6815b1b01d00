"""No supervisor: the foreground. Agents in their own sessions; no self-upgrade."""

from __future__ import annotations

import attrs

from ._errors import RestartError
from ._host import NotifyingSupervisor
from ._launch import DirectLauncher


@attrs.define(eq=False, kw_only=True)
class NoneSupervisor(NotifyingSupervisor):
    launcher: DirectLauncher = attrs.field(factory=DirectLauncher)
    name: str = "none"
    self_unit: str | None = None

    @property
    def can_self_upgrade(self) -> bool:
        return False

    async def restart_self(self) -> None:
        raise RestartError("self-upgrade needs systemd or launchd supervision and a known unit")


__all__ = ["NoneSupervisor"]
