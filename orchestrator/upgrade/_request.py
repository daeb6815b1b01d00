"""Self-upgrade (PROTOCOL.md 5): checks, durable pending record, settle after restart.

The checks run first and fail at once, changing nothing. The pending
upgrade is recorded in the journal before anything is installed, so the
process that comes up after the restart knows what was asked and settles
the command ``failed`` itself when it is not the version that was wanted.
"""

from __future__ import annotations

import logging

import attrs

from .._version import is_semver, version_core
from ..daemon._dispatcher import Rejected

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
