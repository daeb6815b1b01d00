"""Resource limits of a provider's agents: who enforces them, and how it is told.

A provider's ``memory_max``, ``cpu_quota`` and ``tasks_max`` (systemd syntax:
``"4G"``, ``"200%"``, ``512``) become properties of each agent's transient
unit under systemd (``LaunchSpec``), enforced by the kernel. Where an agent
has no unit of its own whose cgroup has the controller (foreground, launchd,
tmux sessions, a host whose controllers sit on the legacy hierarchy):

- ``memory_max`` is enforced by the orchestrator at each usage sample: an
  agent above it gets SIGTERM, then SIGKILL after ``memory_kill_grace``;
- ``cpu_quota`` and ``tasks_max`` are not enforced, and that is said once
  per provider, in the log and in ``status`` (``AgentFleet.warnings``).

Either way an agent ended by its memory limit is reported ``exited`` with
``exit.reason: "memory limit (4G)"``.
"""

from __future__ import annotations

import re

import psutil

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)([KMGTPE]?)$")
_PERCENT = re.compile(r"^(\d+(?:\.\d+)?)%$")
_POWERS = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5, "E": 6}


def memory_bytes(text: str | None, *, total: int | None = None) -> int | None:
    """``"4G"`` -> 4294967296 (powers of 1024, as systemd reads them);
    ``"50%"`` of the host's memory; None for no limit (``"infinity"``, None)."""
    if text is None or text == "infinity":
        return None
    if match := _SIZE.match(text):
        return int(float(match[1]) * 1024 ** _POWERS[match[2]])
    if match := _PERCENT.match(text):
        memory = total if total is not None else psutil.virtual_memory().total
        return int(memory * float(match[1]) / 100)
    raise ValueError(f"not a memory size: {text!r}")


def memory_limit_reason(memory_max: str) -> str:
    """``exit.reason`` of an agent its memory limit ended."""
    return f"memory limit ({memory_max})"


def not_enforced_warning(provider: str, key: str, value: str) -> str:
    return (
        f"[providers.{provider}] {key} = {value!r} is not enforced here: its agents have no "
        "systemd unit of their own with that controller"
    )
