"""What runs the orchestrator on this host, as the commands that act on it see
it from outside: the service ``install`` left (a systemd user unit, a launchd
agent, or none), and where the orchestrator's log is.

The running orchestrator says where it logs in its status file (``log``);
when it has not run yet, or ran before it said so, the place follows from
the service installed (``_daemon_log.log_place``): the journal of the
systemd unit, the launchd agent's log file, else the foreground's file in
the state dir.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import supervisors

from .._daemon_log import LogPlace, log_place
from .._settings import Settings

ServiceKind = Literal["systemd", "launchd"]


def systemd_unit_file() -> Path:
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config / "systemd" / "user" / supervisors.SYSTEMD_UNIT


def launchd_label(status: dict[str, Any] | None = None) -> str:
    """The launchd label: the running orchestrator's own, else install's."""
    if status and status.get("supervisor") == "launchd" and status.get("selfUnit"):
        return str(status["selfUnit"])
    return supervisors.LAUNCHD_LABEL


def installed_service(status: dict[str, Any] | None = None) -> ServiceKind | None:
    """The kind of service that runs the orchestrator here, or None (foreground).

    The running orchestrator's supervisor when it has one; else what
    ``install`` wrote (``supervisors.find_installed``: the unit, else the plist).
    """
    if status and status.get("running") and status.get("supervisor") in ("systemd", "launchd"):
        return status["supervisor"]  # type: ignore[no-any-return]
    xdg = os.environ.get("XDG_CONFIG_HOME")
    found = supervisors.find_installed(home=Path.home(), xdg_config_home=Path(xdg) if xdg else None,
                                       label=launchd_label(status))
    return None if found is None else found.kind


def daemon_log(settings: Settings, status: dict[str, Any] | None = None) -> LogPlace:
    """Where the orchestrator of ``settings.state_dir`` logs (or last logged)."""
    if status is not None and (place := LogPlace.from_json(status.get("log"))) is not None:
        return place
    kind = installed_service(status)
    unit = status.get("selfUnit") if status else None
    return log_place(kind or "none", self_unit=unit if isinstance(unit, str) else None,
                     state_dir=settings.state_dir)


__all__ = ["ServiceKind", "daemon_log", "installed_service", "launchd_label",
           "systemd_unit_file"]
