"""This host's agents as the command line finds them (``logs``, ``attach``).

An agent is named by its agentId, its label, or its tmux session. The
orchestrator keeps each agent's record in its journal
(``<state_dir>/journal.sqlite3``, table ``agents``: the agent as reported,
its SpawnParams, and its session: ``{"kind": "tmux", "name", "socket",
"log"}`` or ``{"kind": "plain", …}``), read here read-only, never locked
against the running orchestrator. An agent the journal no longer holds is
still found by its folder (``agents/<agentId>/``), for its log.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

import actors


@attrs.frozen(kw_only=True)
class FoundAgent:
    agent_id: str
    # The journal's record; empty for an agent found by its folder alone.
    record: Mapping[str, Any] = attrs.field(factory=dict, repr=False)

    @property
    def agent(self) -> Mapping[str, Any]:
        """The agent as last reported (PROTOCOL §4 ManagedAgent)."""
        agent = self.record.get("agent")
        return agent if isinstance(agent, dict) else {}

    @property
    def session(self) -> Mapping[str, Any]:
        session = self.record.get("session")
        return session if isinstance(session, dict) else {}


def journal_agents(state_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    """``(agentId, record)`` of every agent in the journal, oldest first."""
    db = state_dir / "journal.sqlite3"
    if not db.exists():
        return []
    try:
        # as_uri escapes what a URI would read otherwise (a '#', '?' or '%' in the path).
        con = sqlite3.connect(f"{db.absolute().as_uri()}?mode=ro", uri=True)
        try:
            rows = con.execute("SELECT agent_id, record FROM agents ORDER BY rowid").fetchall()
        finally:
            con.close()
    except sqlite3.Error:
        return []
    out = []
    for agent_id, raw in rows:
        try:
            record = json.loads(raw)
        except ValueError:
            continue
        if isinstance(record, dict):
            out.append((str(agent_id), record))
    return out


def find_agent(state_dir: Path, query: str) -> FoundAgent | None:
    """The agent whose agentId, label or tmux session is ``query`` (agentId first)."""
    rows = journal_agents(state_dir)
    for agent_id, record in rows:
        if agent_id == query:
            return FoundAgent(agent_id=agent_id, record=record)
    if actors.agent_log_path(state_dir, query).exists():
        return FoundAgent(agent_id=query)
    for agent_id, record in rows:
        found = FoundAgent(agent_id=agent_id, record=record)
        agent = found.agent
        if query in (agent.get("label"), agent.get("tmuxSession"), agent.get("sessionName"),
                     found.session.get("name")):
            return found
    return None
