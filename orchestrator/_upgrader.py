"""Installing a new version and restarting decoupled (PROTOCOL.md 5, steps 3–5)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._dispatcher import Rejected
from ._wire import Command, Outcome

if TYPE_CHECKING:
    from ._app import Orchestrator
    from ._upgrade import UpgradeRequest


async def perform_upgrade(orch: Orchestrator, command: Command, request: UpgradeRequest) -> Outcome | None:
    raise Rejected("self-upgrade install is not available in this build")
