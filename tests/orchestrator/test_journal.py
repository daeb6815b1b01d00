"""The journal: what must be durable before a request leaves is, and one failed
write takes nothing else with it.

Durability is checked the way a next orchestrator process would see it: a
second SQLite connection to the same file reads only what was committed.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from orchestrator.daemon._journal import CommandState, Journal


def committed(path: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    other = sqlite3.connect(path)
    try:
        return list(other.execute(sql, args))
    finally:
        other.close()


def intents(path: Path) -> set[str]:
    return {str(row[0]) for row in committed(path, "SELECT id FROM commands")}


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    opened = Journal.open(tmp_path)
    yield opened  # type: ignore[misc]
    opened.close()


def test_intents_are_durable_once_made_durable_and_one_commit_serves_a_batch(
    journal: Journal,
) -> None:
    for n in range(5):
        assert journal.record_intent(f"cmd_{n}", "agent.stop", {"agentId": "a"})
    assert intents(journal.path) == set()  # lazy: nothing is claimed yet
    journal.make_durable()
    assert intents(journal.path) == {f"cmd_{n}" for n in range(5)}
    assert not journal.record_intent("cmd_0", "agent.stop", {})  # seen before


def test_lazy_marks_alone_do_not_force_a_commit(journal: Journal) -> None:
    journal.record_intent("cmd_1", "agent.stop", {})
    journal.make_durable()
    journal.set_state("cmd_1", CommandState.CLAIMED, lazy=True)
    journal.make_durable()  # nothing that must leave durable: no commit
    state = committed(journal.path, "SELECT state FROM commands WHERE id='cmd_1'")
    assert state == [(CommandState.CLAIMING.value,)]
    journal.flush()
    state = committed(journal.path, "SELECT state FROM commands WHERE id='cmd_1'")
    assert state == [(CommandState.CLAIMED.value,)]


def test_an_outcome_is_durable_before_its_settle_can_leave(journal: Journal) -> None:
    journal.record_intent("cmd_1", "agent.stop", {})
    journal.make_durable()
    item = journal.record_outcome("cmd_1", {"status": "failed", "error": "no agent"})
    assert journal.pending(item)
    journal.make_durable()  # what the outbox does before it sends
    rows = committed(journal.path, "SELECT key, body FROM outbox")
    assert [(key, json.loads(body)) for key, body in rows] == [
        ("cmd_1", {"status": "failed", "error": "no agent"})
    ]


def test_an_agent_record_is_committed_with_its_report(journal: Journal) -> None:
    journal.save_agent("ag_1", {"version": 1, "agent": {"agentId": "ag_1"}})
    journal.enqueue_report("ag_1", {"agentId": "ag_1", "status": "running"})
    journal.make_durable()
    assert committed(journal.path, "SELECT agent_id FROM agents") == [("ag_1",)]
    assert [row[0] for row in committed(journal.path, "SELECT key FROM outbox")] == ["ag_1"]


def test_a_failed_write_undoes_itself_only(journal: Journal) -> None:
    journal.record_intent("cmd_1", "agent.stop", {})  # lazy, in the open transaction
    first = journal.enqueue_report("ag_1", {"agentId": "ag_1", "status": "running"})
    journal.make_durable()
    journal.record_intent("cmd_2", "agent.stop", {})  # lazy again
    with pytest.raises(TypeError):
        journal.enqueue_report("ag_1", {"agentId": "ag_1", "status": object()})
    assert journal.pending(first)  # the report it was to replace still waits
    journal.make_durable()
    assert intents(journal.path) == {"cmd_1", "cmd_2"}
    bodies = [json.loads(row[0]) for row in committed(journal.path, "SELECT body FROM outbox")]
    assert bodies == [{"agentId": "ag_1", "status": "running"}]


def test_a_reopened_journal_has_what_was_committed(tmp_path: Path) -> None:
    first = Journal.open(tmp_path)
    first.record_intent("cmd_1", "agent.stop", {})
    first.record_outcome("cmd_1", {"status": "succeeded", "result": {}})
    first.close()  # closing commits
    second = Journal.open(tmp_path)
    try:
        [item] = second.outbox()
        assert item.key == "cmd_1"
        command = second.command("cmd_1")
        assert command is not None and command.state is CommandState.DONE
    finally:
        second.close()


def test_a_durable_agent_record_is_on_disk_at_once(journal: Journal) -> None:
    journal.save_agent("ag_1", {"version": 1, "agent": {"agentId": "ag_1"}})
    assert committed(journal.path, "SELECT agent_id FROM agents") == []  # waits for its report
    journal.save_agent("ag_2", {"version": 1, "agent": {"agentId": "ag_2"}}, durable=True)
    assert committed(journal.path, "SELECT agent_id FROM agents ORDER BY agent_id") == [
        ("ag_1",),
        ("ag_2",),
    ]
