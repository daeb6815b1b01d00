"""Self-upgrade (PROTOCOL.md 5): checks, durable pending record, settle after restart.

The checks run first and fail at once, changing nothing. The pending
upgrade is recorded in the journal before anything is installed, so the
process that comes up after the restart knows what was asked and settles
the command ``failed`` itself when it is not the version that was wanted.
"""

from __future__ import annotations

import attrs

from actors import FieldError, Fields

from .._version import is_semver, version_core
from ..daemon._dispatcher import Rejected

RUNTIME_PACKAGES = ("orchestrator",)
PENDING_KEY = "pending_upgrade"
MAX_EPOCH_MS = 2**53  # requestedAt: what a JSON number holds exactly, as for every command


@attrs.frozen(kw_only=True)
class UpgradeRequest:
    target_version: str
    providers: tuple[str, ...]
    force: bool


def parse_upgrade_params(params: object) -> UpgradeRequest:
    """The upgrade's params, read like every command's (``actors.Fields``)."""
    try:
        f = Fields(params, "params")
        target = f.text("targetVersion", required=True)
        force = f.boolean("force")
        providers = _providers(f)
        for key in ("orchestratorId", "fromVersion", "action", "requestedBy", "reason"):
            f.text(key)
        f.integer("requestedAt", minimum=0, maximum=MAX_EPOCH_MS)
    except FieldError as exc:
        raise Rejected(f"invalid {exc}") from None
    assert target is not None
    return UpgradeRequest(target_version=target, providers=providers, force=bool(force))


def _providers(f: Fields) -> tuple[str, ...]:
    """``providers``: an array naming runtime packages (any bad item: the array is named)."""
    value = f.raw.get("providers")
    if value is None:
        return ("orchestrator",)
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise FieldError(f.name("providers"), f.reader.expect_strings)
    return f.texts("providers")


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
