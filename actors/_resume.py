"""Conversations that survive a reboot: why an agent died while we were away,
and whether to start it again, resuming its provider session.

Each stored record carries the boot id of the host when it was written
(``/proc/sys/kernel/random/boot_id``, ``FleetConfig.boot_id_file``). When the
orchestrator starts and finds an agent that died while it was down, a boot
id other than the current one means the host rebooted in between: the agent
is reported ``exited`` with ``exit.reason: "host rebooted"``.

The provider's ``resume_dead_agents`` then decides: ``"never"`` (the
default), ``"after-reboot"`` (only those the reboot ended) or ``"always"``.
A resumed agent keeps its agentId and provider session id, starts from its
last SpawnParams with the provider's ``resume_args`` (no prompt), and reports
``restartCount + 1`` and ``meta.resumedFrom``. The resume is stored before
the process starts, so an orchestrator that stops half way never resumes
the same death twice: a record still ``starting`` without a process is
reported failed, not resumed again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psutil

from ._agent import AgentState

HOST_REBOOTED = "host rebooted"
START_INTERRUPTED = "the orchestrator stopped while starting it"


def read_boot_id(path: Path) -> str | None:
    """This boot's id: the kernel's, else the boot time (hosts without one)."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        text = ""
    if text:
        return text
    try:
        return f"boot-time-{int(psutil.boot_time())}"
    except (OSError, RuntimeError):
        return None


def host_rebooted(recorded: object, current: str | None) -> bool | None:
    """Whether the host rebooted since the record was written (None: unknown)."""
    if not isinstance(recorded, str) or not recorded or current is None:
        return None
    return recorded != current


def wants_resume(policy: str, rebooted: bool | None) -> bool:
    if policy == "always":
        return True
    if policy == "after-reboot":
        return rebooted is True
    return False


def resumed_from(state: AgentState) -> dict[str, Any]:
    """``meta.resumedFrom`` of the run that resumes ``state``'s dead one."""
    exit = state.exit
    return {
        "pid": state.pid,
        "startedAt": state.started_at,
        "providerSessionId": state.provider_session_id,
        "exitedAt": exit.at if exit else None,
        "reason": exit.reason if exit else None,
    }
