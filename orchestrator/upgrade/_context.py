"""What an upgrade needs of the running orchestrator, and no more: the
journal (its pending record), the settings, the running version, the host
supervisor (can it self-upgrade, restart us decoupled), a last heartbeat,
and the orderly stop once the restart is asked for."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import attrs

from supervisors import HostSupervisor

from .._settings import Settings
from ..daemon._journal import Journal


@attrs.frozen(kw_only=True)
class UpgradeContext:
    journal: Journal
    settings: Settings
    version: str  # the running one
    host: HostSupervisor
    beat: Callable[[], Awaitable[None]]  # one heartbeat now
    stop: Callable[[], None]  # the orderly stop; agents keep running
