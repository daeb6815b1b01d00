"""The durable journal: SQLite in WAL mode, in the state directory.

What it keeps, and why:

- ``commands``: every command id this orchestrator has tried to claim, with
  its state. The *intent* is written before the claim is sent, so a command
  is acted on at most once even across a crash, a reconnect or two streams.
  States: ``claiming`` (intent written) → ``claimed`` (the relay said yes)
  → ``done`` (outcome recorded, waiting in the outbox) → ``settled``;
  or ``dropped`` (the relay said 409: not ours to act on).
- ``outbox``: settles and agent reports not yet accepted by the relay,
  delivered in order. An agent's newer report replaces its older one.
- ``agents``: each managed agent's record (SpawnParams with its ``env``:
  the database file is created 0600 for that reason), for re-adoption.
- ``meta``: the generated orchestrator id, a pending upgrade, and such.

Calls are synchronous: short transactions on a local file (tens of
microseconds with ``synchronous=NORMAL``, durable against a crash of this
process), cheaper than a hop to a worker thread on the hot path.

Not every write needs its own commit. Writes that a crash may lose without
harm are *lazy*: they join an open transaction that the next durable write,
or ``flush()``, commits:

- the claim intent (``record_intent``): the dispatcher calls ``make_durable()``
  before it sends the claim, so the intents of a whole stream chunk are
  made durable in one commit, always before their claims leave;
- ``claimed``/``dropped`` states (``set_state(..., lazy=True)``): lost, a
  command stays ``claiming``, and recovery asks the relay what became of it;
- ``delivered``: lost, the settle is sent again, and the relay answers a
  repeated outcome with 200;
- outcomes and reports (``record_outcome``, ``enqueue_report``) with the
  agent record that goes with a report (``save_agent``): the outbox commits
  before it sends anything (``Outbox``), so what leaves is always durable,
  and the outcomes of a burst share one commit (a group commit). A crash
  in between loses what the relay never heard of: the command is found
  claimed but not done, and is settled failed on recovery.

The outbox is mirrored in memory (loaded once, kept in step by every
write), so the delivery loop never queries the table.
"""

from __future__ import annotations

import contextlib
import enum
import itertools
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS commands (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    state TEXT NOT NULL,
    params TEXT,
    outcome TEXT,
    updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS commands_state ON commands(state);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS agents (agent_id TEXT PRIMARY KEY, record TEXT NOT NULL);
"""

CACHE_KIB = 256  # SQLite page cache; the journal is small and read little
KEEP_SETTLED = 5000  # settled command ids kept to recognise late redeliveries


class CommandState(enum.Enum):
    CLAIMING = "claiming"
    CLAIMED = "claimed"
    DONE = "done"
    SETTLED = "settled"
    DROPPED = "dropped"


class OutboxKind(enum.Enum):
    SETTLE = "settle"
    AGENT = "agent"


@attrs.frozen(kw_only=True)
class OutboxItem:
    seq: int
    kind: OutboxKind
    key: str
    body: dict[str, Any]
    # What it must not overtake (``Outbox``): items sharing a key go in order.
    order: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class JournalCommand:
    id: str
    type: str
    state: CommandState
    params: Any
    outcome: dict[str, Any] | None


def _now_ms() -> int:
    return int(time.time() * 1000)


class Journal:
    """One connection, used from the trio thread only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not path.exists():
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        os.chmod(path, 0o600)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")  # the default (2 MB) is RSS
        self._db.executescript(SCHEMA)
        self._settled_since_prune = 0
        self._in_transaction = False
        # The open transaction holds something that must be durable before a
        # request leaves (an intent, an outcome, a report): ``make_durable``
        # commits then, and only then; marks that may be lost just wait.
        self._needed = False
        # The outbox in memory: pending items by seq (ascending), and the seq of
        # each agent's pending report.
        self._outbox: dict[int, OutboxItem] = {}
        self._reports: dict[str, int] = {}
        self._on_outbox: list[Callable[[OutboxItem], None]] = []
        rows = self._db.execute("SELECT seq, kind, key, body FROM outbox ORDER BY seq")
        for s, k, key, b in rows:
            # left by an earlier process: delivered one after another, as they came
            item = OutboxItem(seq=s, kind=OutboxKind(k), key=key, body=json.loads(b),
                              order=("journal",))
            self._outbox[s] = item
            if item.kind is OutboxKind.AGENT:
                self._reports[key] = s

    @classmethod
    def open(cls, state_dir: Path) -> Journal:
        return cls(state_dir / "journal.sqlite3")

    def close(self) -> None:
        self.flush()
        self._db.close()

    # -- transactions -------------------------------------------------------
    def _begin(self) -> None:
        if not self._in_transaction:
            self._db.execute("BEGIN")
            self._in_transaction = True

    def flush(self) -> None:
        """Commit the lazy writes made so far (a no-op when there are none)."""
        if self._in_transaction:
            self._in_transaction = False
            self._needed = False
            self._db.execute("COMMIT")

    def make_durable(self) -> None:
        """Before a claim, settle or report leaves: commit if the open
        transaction holds an intent, outcome, report or agent record."""
        if self._needed:
            self.flush()

    def _begin_needed(self) -> None:
        self._begin()
        self._needed = True

    # -- meta ---------------------------------------------------------------
    def get_meta(self, key: str) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def set_meta(self, key: str, value: Any) -> None:
        self.flush()
        if value is None:
            self._db.execute("DELETE FROM meta WHERE key=?", (key,))
        else:
            self._db.execute(
                "INSERT INTO meta(key, value) VALUES(?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (key, json.dumps(value)),
            )

    # -- commands -----------------------------------------------------------
    def command(self, command_id: str) -> JournalCommand | None:
        row = self._db.execute(
            "SELECT id, type, state, params, outcome FROM commands WHERE id=?", (command_id,)
        ).fetchone()
        return None if row is None else _command_row(row)

    def record_intent(self, command_id: str, command_type: str, params: Any) -> bool:
        """Write the claim intent (lazily: ``flush()`` before claiming); False when
        the id was seen before (do nothing)."""
        self._begin_needed()
        cur = self._db.execute(
            "INSERT OR IGNORE INTO commands(id, type, state, params, outcome, updated_at) "
            "VALUES(?, ?, ?, ?, NULL, ?)",
            (command_id, command_type, CommandState.CLAIMING.value, _params_json(params),
             _now_ms()),
        )
        return cur.rowcount == 1

    def set_state(self, command_id: str, state: CommandState, *, lazy: bool = False) -> None:
        self._begin()
        self._db.execute(
            "UPDATE commands SET state=?, updated_at=? WHERE id=?",
            (state.value, _now_ms(), command_id),
        )
        if not lazy:
            self.flush()

    def record_outcome(
        self, command_id: str, body: dict[str, Any], *, order: tuple[str, ...] = ()
    ) -> OutboxItem:
        """Outcome and its settle go into the journal in one transaction.

        ``order``: keys the settle shares with items it must not overtake
        (``Outbox``); kept in memory only."""
        text = json.dumps(body)
        with self._one_write():
            self._db.execute(
                "UPDATE commands SET state=?, outcome=?, updated_at=? WHERE id=?",
                (CommandState.DONE.value, text, _now_ms(), command_id),
            )
            seq = self._db.execute(
                "INSERT INTO outbox(kind, key, body) VALUES(?, ?, ?)",
                (OutboxKind.SETTLE.value, command_id, text),
            ).lastrowid
        assert seq is not None
        item = OutboxItem(seq=seq, kind=OutboxKind.SETTLE, key=command_id, body=body, order=order)
        self._added(item)
        return item

    def watch_outbox(self, callback: Callable[[OutboxItem], None]) -> None:
        """Call ``callback`` with every item added to the outbox from now on."""
        self._on_outbox.append(callback)

    def _added(self, item: OutboxItem) -> None:
        self._outbox[item.seq] = item
        for callback in self._on_outbox:
            callback(item)

    @contextlib.contextmanager
    def _one_write(self) -> Iterator[None]:
        """A write of several statements that must be durable before it leaves:
        in a savepoint, so a failure undoes it and only it (the lazy writes
        before it stay)."""
        self._begin_needed()
        self._db.execute("SAVEPOINT one_write")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK TO one_write")
            self._db.execute("RELEASE one_write")
            raise
        self._db.execute("RELEASE one_write")

    def unfinished(self) -> list[JournalCommand]:
        """Commands claimed (or being claimed) with no outcome: a crash left them."""
        rows = self._db.execute(
            "SELECT id, type, state, params, outcome FROM commands WHERE state IN (?, ?)",
            (CommandState.CLAIMING.value, CommandState.CLAIMED.value),
        ).fetchall()
        return [_command_row(r) for r in rows]

    def count_by_state(self) -> dict[str, int]:
        rows = self._db.execute("SELECT state, count(*) FROM commands GROUP BY state")
        return {state: n for state, n in rows}

    # -- outbox -------------------------------------------------------------
    def enqueue_report(self, agent_id: str, body: dict[str, Any]) -> OutboxItem:
        """The agent's newest report replaces the one not yet delivered."""
        old = self._reports.get(agent_id)
        with self._one_write():
            if old is not None:
                self._db.execute("DELETE FROM outbox WHERE seq=?", (old,))
            seq = self._db.execute(
                "INSERT INTO outbox(kind, key, body) VALUES(?, ?, ?)",
                (OutboxKind.AGENT.value, agent_id, json.dumps(body)),
            ).lastrowid
        assert seq is not None
        if old is not None:
            self._outbox.pop(old, None)
        item = OutboxItem(seq=seq, kind=OutboxKind.AGENT, key=agent_id, body=body)
        self._reports[agent_id] = seq
        self._added(item)
        return item

    def outbox(self, limit: int | None = 256) -> list[OutboxItem]:
        """The oldest ``limit`` items not yet delivered (all: None), in order."""
        return list(itertools.islice(self._outbox.values(), limit))

    def pending(self, item: OutboxItem) -> bool:
        """Whether ``item`` still waits (not delivered, nor replaced by a newer report)."""
        return self._outbox.get(item.seq) is item

    def delivered(self, item: OutboxItem) -> None:
        """Lazy: a settle delivered again is harmless."""
        if self._outbox.pop(item.seq, None) is None:
            return  # replaced meanwhile (a newer report of the same agent)
        if item.kind is OutboxKind.AGENT and self._reports.get(item.key) == item.seq:
            del self._reports[item.key]
        self._begin()
        self._db.execute("DELETE FROM outbox WHERE seq=?", (item.seq,))
        if item.kind is OutboxKind.SETTLE:
            self._db.execute(
                "UPDATE commands SET state=?, updated_at=? WHERE id=?",
                (CommandState.SETTLED.value, _now_ms(), item.key),
            )
        if item.kind is OutboxKind.SETTLE:
            self._settled_since_prune += 1
            if self._settled_since_prune >= 1000:
                self._prune()

    def _prune(self) -> None:
        self._settled_since_prune = 0
        self._db.execute(
            "DELETE FROM commands WHERE state IN (?, ?) AND id NOT IN ("
            " SELECT id FROM commands ORDER BY updated_at DESC LIMIT ?)",
            (CommandState.SETTLED.value, CommandState.DROPPED.value, KEEP_SETTLED),
        )

    def outbox_size(self) -> int:
        return len(self._outbox)

    # -- agents (actors.AgentStore) -------------------------------------------
    def load_agents(self) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT record FROM agents ORDER BY rowid").fetchall()
        return [json.loads(r[0]) for r in rows]

    def save_agent(self, agent_id: str, record: dict[str, Any], *, durable: bool = False) -> None:
        """Lazy unless ``durable``: committed with the agent's report, which
        always follows it (``enqueue_report``), before that report leaves."""
        self._begin_needed()
        self._db.execute(
            "INSERT INTO agents(agent_id, record) VALUES(?, ?) "
            "ON CONFLICT(agent_id) DO UPDATE SET record=excluded.record",
            (agent_id, json.dumps(record)),
        )
        if durable:
            self.flush()

    def delete_agent(self, agent_id: str) -> None:
        self.flush()
        self._db.execute("DELETE FROM agents WHERE agent_id=?", (agent_id,))


def _params_json(params: Any) -> str | None:
    try:
        return json.dumps(params)
    except (TypeError, ValueError):
        return None


def _command_row(row: tuple[Any, ...]) -> JournalCommand:
    cid, ctype, state, params, outcome = row
    return JournalCommand(
        id=cid,
        type=ctype,
        state=CommandState(state),
        params=None if params is None else json.loads(params),
        outcome=None if outcome is None else json.loads(outcome),
    )
