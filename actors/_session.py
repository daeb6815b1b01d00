"""What an actor needs from a session, and the environment agents get.

A session is where an agent runs: ``PlainSession`` (``_plain.py``, a process
of its own with a FIFO for input) or ``TmuxSession`` (``_tmux.py``, a tmux
session a person can attach to). Either way the actor watches the agent's
pid itself (``_process.py``); the session starts it, types input into it,
and, once it has ended, tells what is left to know (``finish``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from ._params import CommandRejected
from ._process import ExitStatus

# The orchestrator's own variables: never inherited by an agent.
ORCHESTRATOR_ONLY = frozenset(
    {
        "RELAY_ORCHESTRATOR_TOKEN",
        "NOTIFY_SOCKET",
        "LISTEN_PID",
        "LISTEN_FDS",
        "LISTEN_FDNAMES",
        "WATCHDOG_PID",
        "WATCHDOG_USEC",
        "TMUX",
        "TMUX_PANE",
    }
)


class LaunchFailed(CommandRejected):
    """The agent could not be started: its status becomes ``failed``."""


def base_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment every agent starts from: ``env`` (or ours) minus our own."""
    source = os.environ if env is None else env
    return {key: value for key, value in source.items() if key not in ORCHESTRATOR_ONLY}


def describe_launch_error(program: str, exc: Exception) -> str:
    """One sentence for a failed start, without anything from the environment."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"could not start agent: {program}: {exc.strerror}"
    return f"could not start agent: {program}: {type(exc).__name__}: {str(exc)[:300]}"


class Session(Protocol):
    """One agent's session, as its actor uses it."""

    kind: str  # "plain" | "tmux"

    @property
    def tmux_session(self) -> str | None: ...

    async def send(self, text: str, *, enter_after: float = 0.0) -> None:
        """Type ``text`` (one or more lines) into the agent, then Enter
        (``enter_after`` seconds later, where the session can wait)."""

    async def send_keys(self, keys: Sequence[str]) -> None:
        """Press keys (tmux key names), where the session has a terminal."""

    async def finish(self, status: ExitStatus, *, early: bool = False) -> tuple[ExitStatus, str]:
        """After the process ended: the fullest exit status known, and its last
        output (``early``: it ended as it started, so its first lines too)."""

    def close(self) -> None:
        """Let go of our handles; the agent keeps running."""

    def to_json(self) -> dict[str, Any]:
        """What a later orchestrator process needs to take the session over."""
