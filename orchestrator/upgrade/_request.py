"""Self-upgrade (PROTOCOL.md 5): checks, durable pending record, settle after restart.

The checks run first and fail at once, changing nothing. The pending
upgrade is recorded in the journal before anything is installed, so the
process that comes up after the restart knows what was asked and settles
the command ``failed`` itself when it is not the version that was wanted.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from .._version import is_semver, version_core
from ..daemon._dispatcher import Handler, Rejected
from ..relay._wire import Command, Outcome
from . import _runtime

if TYPE_CHECKING:
    from ..daemon._app import Orchestrator

log = logging.getLogger("relay_orchestrator.upgrade")

RUNTIME_PACKAGES = ("orchestrator",)
PENDING_KEY = "pending_upgrade"


@attrs.frozen(kw_only=True)
class UpgradeRequest:
    target_version: str
    providers: tuple[str, ...]
    force: bool


def parse_upgrade_params(params: object) -> UpgradeRequest:
    if not isinstance(params, dict):
        raise Rejected("invalid params: expected object")
    target = params.get("targetVersion")
    if not isinstance(target, str):
        raise Rejected("invalid params.targetVersion: expected string")
    force = params.get("force", False)
    if force is None:
        force = False
    if not isinstance(force, bool):
        raise Rejected("invalid params.force: expected boolean")
    providers = params.get("providers", ["orchestrator"])
    if providers is None:
        providers = ["orchestrator"]
    if not isinstance(providers, list) or not all(isinstance(p, str) for p in providers):
        raise Rejected("invalid params.providers: expected array of strings")
    for key in ("orchestratorId", "fromVersion", "action", "requestedBy", "reason"):
        if key in params and params[key] is not None and not isinstance(params[key], str):
            raise Rejected(f"invalid params.{key}: expected string")
    requested_at = params.get("requestedAt")
    if requested_at is not None and (
        isinstance(requested_at, bool) or not isinstance(requested_at, int)
    ):
        raise Rejected("invalid params.requestedAt: expected integer")
    return UpgradeRequest(target_version=target, providers=tuple(providers), force=force)


def check_upgrade(request: UpgradeRequest, *, running: str, can_self_upgrade: bool) -> None:
    """Raise ``Rejected`` with the protocol's sentence when the upgrade must not start."""
    if not is_semver(request.target_version):
        raise Rejected(f"targetVersion must be a semver version: {request.target_version}")
    if not request.force and version_core(request.target_version) < version_core(running):
        raise Rejected(
            f"refusing downgrade {running} -> {request.target_version}; pass force to override"
        )
    unknown = [p for p in request.providers if p not in RUNTIME_PACKAGES]
    if unknown:
        raise Rejected(f"unknown runtime packages: {', '.join(unknown)}")
    if not can_self_upgrade:
        raise Rejected("self-upgrade needs systemd or launchd supervision and a known unit")


def upgrade_handler(orch: Orchestrator) -> Handler:
    async def handle(command: Command) -> Outcome | None:
        request = parse_upgrade_params(command.params)
        check_upgrade(request, running=orch.version, can_self_upgrade=orch.host.can_self_upgrade)
        from ._install import perform_upgrade

        return await perform_upgrade(orch, command, request)

    return handle


def settle_after_restart(orch: Orchestrator, command: Command) -> Outcome | None:
    """After a restart: None when the upgrade took effect (the relay settles it)."""
    pending: dict[str, Any] | None = orch.journal.get_meta(PENDING_KEY)
    if not pending or pending.get("commandId") != command.id:
        return Outcome.failed("orchestrator restarted before completing orchestrator.upgrade")
    orch.journal.set_meta(PENDING_KEY, None)
    wanted = str(pending.get("to"))
    root = Path(pending["runtimeRoot"]) if pending.get("runtimeRoot") else None
    if orch.version == wanted and root is not None:
        # Registered at the wanted version: proven. Before anything else (the
        # relay settles the upgrade on that registration already).
        _runtime.clear_pending(root)
    from ._install import write_outcome_marker

    if orch.version == wanted:
        log.info("upgrade %s -> %s took effect", pending.get("from"), wanted,
                 extra={"commandId": command.id})
        write_outcome_marker(orch.settings.state_dir, commandId=command.id, status="succeeded",
                             version=wanted, fromVersion=pending.get("from"))
        return None
    reason = (_runtime.take_rollback_reason(root) if root is not None else None) or \
        pending.get("reason")
    message = f"upgrade did not take effect: running {orch.version}, wanted {wanted}"
    if reason:
        message += f" ({reason})"
    log.error("%s", message, extra={"commandId": command.id})
    write_outcome_marker(orch.settings.state_dir, commandId=command.id, status="failed",
                         version=orch.version, wanted=wanted, reason=message)
    return Outcome.failed(message)
