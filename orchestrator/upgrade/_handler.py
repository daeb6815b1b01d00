"""The ``orchestrator.upgrade`` handler, and its settling by the process that
comes up after the restart (PROTOCOL.md 5)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..daemon._dispatcher import Handler
from ..relay._wire import Command, Outcome
from . import _runtime
from ._context import UpgradeContext
from ._request import PENDING_KEY, check_upgrade, parse_upgrade_params

log = logging.getLogger("relay_orchestrator.upgrade")


def upgrade_handler(ctx: UpgradeContext) -> Handler:
    async def handle(command: Command) -> Outcome | None:
        request = parse_upgrade_params(command.params)
        check_upgrade(request, running=ctx.version, can_self_upgrade=ctx.host.can_self_upgrade)
        from ._install import perform_upgrade  # loaded by an upgrade only

        return await perform_upgrade(ctx, command, request)

    return handle


def settle_after_restart(ctx: UpgradeContext, command: Command) -> Outcome | None:
    """After a restart: None when the upgrade took effect (the relay settles it)."""
    pending: dict[str, Any] | None = ctx.journal.get_meta(PENDING_KEY)
    if not pending or pending.get("commandId") != command.id:
        return Outcome.failed("orchestrator restarted before completing orchestrator.upgrade")
    ctx.journal.set_meta(PENDING_KEY, None)
    wanted = str(pending.get("to"))
    root = Path(pending["runtimeRoot"]) if pending.get("runtimeRoot") else None
    if ctx.version == wanted and root is not None:
        # Registered at the wanted version: proven. Before anything else (the
        # relay settles the upgrade on that registration already).
        _runtime.clear_pending(root)
    from ._install import write_outcome_marker  # loaded by an upgrade only

    if ctx.version == wanted:
        log.info("upgrade %s -> %s took effect", pending.get("from"), wanted,
                 extra={"commandId": command.id})
        write_outcome_marker(ctx.settings.state_dir, commandId=command.id, status="succeeded",
                             version=wanted, fromVersion=pending.get("from"))
        return None
    reason = (_runtime.take_rollback_reason(root) if root is not None else None) or \
        pending.get("reason")
    message = f"upgrade did not take effect: running {ctx.version}, wanted {wanted}"
    if reason:
        message += f" ({reason})"
    log.error("%s", message, extra={"commandId": command.id})
    write_outcome_marker(ctx.settings.state_dir, commandId=command.id, status="failed",
                         version=ctx.version, wanted=wanted, reason=message)
    return Outcome.failed(message)
