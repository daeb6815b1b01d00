"""What the fleet needs from the rest of the orchestrator: storage, reports.

``AgentStore`` keeps one JSON record per agent across restarts (the
journal, a 0600 SQLite file: records hold SpawnParams with ``env``).
``Reporter`` takes a full ManagedAgent on every state change. Both are
synchronous and fast; the fleet calls them inline.

A stored record::

    {"version": 1,
     "agent": {...ManagedAgent...},
     "params": {...SpawnParams, env included...},
     "process": {"pid", "createTime", "cmdline"} | null,
     "session": {"kind": "plain", "fifo", "log", "unit"}
              | {"kind": "tmux", "name", "log", "socket"} | null,
     "bootId": "..." | null}    the host's boot when written (``_resume.py``)

The agent's ``providerSessionId`` and last ``usage`` ride in ``agent``.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

RECORD_VERSION = 1


class AgentStore(Protocol):
    def load_agents(self) -> list[dict[str, Any]]: ...

    def save_agent(self, agent_id: str, record: dict[str, Any], *, durable: bool = False) -> None:
        """Store the record: on disk when this returns if ``durable``, else
        at the latest before the agent's report that follows it leaves."""

    def delete_agent(self, agent_id: str) -> None: ...


class Reporter(Protocol):
    def agent_changed(self, agent: dict[str, Any]) -> None:
        """A full ManagedAgent dict; non-blocking, never raises."""


class MemoryStore:
    """An ``AgentStore`` in memory (tests, and a fleet without a journal).

    Records are copied through JSON, as a real journal would store them.
    """

    def __init__(self) -> None:
        self._records: dict[str, str] = {}

    def load_agents(self) -> list[dict[str, Any]]:
        return [json.loads(record) for record in self._records.values()]

    def save_agent(self, agent_id: str, record: dict[str, Any], *, durable: bool = False) -> None:
        self._records[agent_id] = json.dumps(record)

    def delete_agent(self, agent_id: str) -> None:
        self._records.pop(agent_id, None)

    def record(self, agent_id: str) -> dict[str, Any] | None:
        raw = self._records.get(agent_id)
        return None if raw is None else json.loads(raw)
