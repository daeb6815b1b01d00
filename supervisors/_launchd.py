"""The launchd adapter (macOS): a LaunchAgent, restarted by ``kickstart -k``.

- Detection: launchd sets ``$XPC_SERVICE_NAME`` to the job's label. A
  Terminal session on macOS sets it too, to ``0`` or to
  ``application.<bundle id>…``: those are not us.
- Agents: ``DirectLauncher`` (own session and process group); the plist's
  ``AbandonProcessGroup`` keeps launchd from killing what we started when
  our job stops.
- Restart: a helper in a session of its own runs
  ``launchctl kickstart -k gui/<uid>/<label>``, which kills and restarts the
  job; never ``bootout``, which would unload it (that is for uninstall).
- Install: the plist from the ``units`` template, ``launchctl bootstrap
  gui/<uid> <plist>``. The token never goes in the plist: a 0600 file holds
  it and the program gets ``--token-file <path>``.
"""

from __future__ import annotations

import os
import plistlib
import subprocess
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import attrs

from ._errors import RestartError
from ._host import NotifyingSupervisor
from ._launch import DirectLauncher

DEFAULT_LABEL = "relay-orchestrator"
PLIST_TEMPLATE = "relay-orchestrator.plist.in"


def label_from_env(env: Mapping[str, str]) -> str | None:
    """Our launchd label, or None when launchd did not start us."""
    name = env.get("XPC_SERVICE_NAME", "")
    if not name or name == "0" or name.startswith("application."):
        return None
    return name


def plist_path(home: Path, label: str = DEFAULT_LABEL) -> Path:
    return home / "Library" / "LaunchAgents" / f"{label}.plist"


def log_path(home: Path) -> Path:
    return home / "Library" / "Logs" / "relay-orchestrator" / "orchestrator.log"


def domain(uid: int) -> str:
    return f"gui/{uid}"


def service_target(uid: int, label: str = DEFAULT_LABEL) -> str:
    return f"gui/{uid}/{label}"


def bootstrap_argv(uid: int, plist: Path) -> list[str]:
    return ["launchctl", "bootstrap", domain(uid), str(plist)]


def bootout_argv(uid: int, label: str = DEFAULT_LABEL) -> list[str]:
    """Unload the job: uninstall only, never a restart."""
    return ["launchctl", "bootout", service_target(uid, label)]


def kickstart_argv(uid: int, label: str = DEFAULT_LABEL) -> list[str]:
    return ["launchctl", "kickstart", "-k", service_target(uid, label)]


def render_plist(
    *,
    label: str,
    program_arguments: Sequence[str],
    environment: Mapping[str, str],
    log_file: Path,
) -> bytes:
    """The LaunchAgent plist, from the template shipped in ``units``."""
    template = resources.files("units").joinpath(PLIST_TEMPLATE).read_bytes()
    plist: dict[str, Any] = plistlib.loads(template)
    plist["Label"] = label
    plist["ProgramArguments"] = list(program_arguments)
    plist["EnvironmentVariables"] = dict(environment)
    plist["StandardOutPath"] = str(log_file)
    plist["StandardErrorPath"] = str(log_file)
    return plistlib.dumps(plist, fmt=plistlib.FMT_XML, sort_keys=False)


def spawn_detached(argv: Sequence[str]) -> int:
    """Start ``argv`` in a session of its own, not waited for; its pid."""
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )
    except OSError as exc:
        raise RestartError(f"cannot run {argv[0]}: {exc}") from exc
    proc.returncode = 0  # not ours to reap: it outlives us by design
    return proc.pid


@attrs.define(eq=False, kw_only=True)
class LaunchdSupervisor(NotifyingSupervisor):
    """We run as a launchd job (``$XPC_SERVICE_NAME``)."""

    self_unit: str | None
    uid: int = attrs.field(factory=os.getuid)
    launcher: DirectLauncher = attrs.field(factory=DirectLauncher)
    name: str = "launchd"

    @property
    def can_self_upgrade(self) -> bool:
        return self.self_unit is not None

    async def restart_self(self) -> None:
        """``launchctl kickstart -k`` from a detached helper, then return."""
        if self.self_unit is None:
            raise RestartError("self-upgrade needs systemd or launchd supervision and a known unit")
        spawn_detached(kickstart_argv(self.uid, self.self_unit))


__all__ = [
    "DEFAULT_LABEL",
    "LaunchdSupervisor",
    "bootout_argv",
    "bootstrap_argv",
    "kickstart_argv",
    "label_from_env",
    "log_path",
    "plist_path",
    "render_plist",
    "service_target",
    "spawn_detached",
]
