"""The dev relay's records (``StoredCommand``, ``OrchestratorRecord``, stream
subscriptions), its limits, and the ids and stamps it gives them.

The names say "record" and "stored" apart from the daemon's ``Command`` (the
wire type, ``relay/_wire.py``) and ``Orchestrator`` (the running daemon).
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from typing import Any

import attrs
import trio

from ._spec import JSON

COMMAND_STATUSES = ("pending", "running", "succeeded", "failed", "cancelled")
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
# Settled commands kept (memory and state file); the oldest go first.
MAX_SETTLED_COMMANDS = 10_000
# Spawn requests remembered by spawnRequestId until an agent reports them.
MAX_SPAWN_REQUESTS = 10_000
# New commands a stream may fall behind by before it re-reads the pending list.
SUBSCRIPTION_BUFFER = 256


class DevRelayStateError(Exception):
    """The state file cannot be read back."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_command_id() -> str:
    return f"cmd_{uuid.uuid4().hex}"


def new_spawn_request_id() -> str:
    return f"sp_{uuid.uuid4().hex}"


def bus_address(orch_id: str) -> str:
    return f"orch:{orch_id}"


# -- records ---------------------------------------------------------------------------


@attrs.define(eq=False, slots=True)
class StoredCommand:
    """A command as the dev relay keeps it (``to_json`` is the wire's Command)."""

    id: str
    type: str
    source: str
    target: str
    correlation_id: str | None
    params: Any
    status: str
    result: Any
    error: str | None
    created_at: int
    updated_at: int
    seq: int

    def to_json(self) -> JSON:
        return {
            "id": self.id,
            "type": self.type,
            "source": self.source,
            "target": self.target,
            "correlationId": self.correlation_id,
            "params": self.params,
            "status": self.status,
            "result": self.result,
            "error": self.error,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        }


@attrs.define(eq=False)
class OrchestratorRecord:
    """What the dev relay knows of one registered orchestrator."""

    id: str
    info: JSON  # the registration body as sent, minus "agents" (unknown fields kept)
    agents: dict[str, JSON]
    registered_at: int
    last_seen_ms: int
    last_seen_t: float  # trio.current_time() of the last registration or heartbeat
    last_heartbeat_at: int | None = None
    load: Any = None
    registrations: int = 0
    heartbeats: int = 0
    upgrade: JSON | None = None
    flagged_online: bool = True  # the status waiters were last told about

    @property
    def version(self) -> str | None:
        version = self.info.get("version")
        return version if isinstance(version, str) else None


@attrs.define(eq=False)
class Subscription:
    """One command stream's mailbox: bounded; on overflow it re-reads pending."""

    target: str
    queue: deque[StoredCommand] = attrs.field(factory=deque)
    overflowed: bool = False
    last_seq: int = -1
    wake: trio.Event = attrs.field(factory=trio.Event)

    def push(self, command: StoredCommand) -> None:
        if len(self.queue) < SUBSCRIPTION_BUFFER:
            self.queue.append(command)
        else:
            self.overflowed = True
        self.wake.set()
