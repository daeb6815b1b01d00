"""``relay-orchestrator logs``: an agent's output, last lines and follow.

An agent's log is ``<state_dir>/agents/<agentId>/output.log``, rotated by
copy-and-truncate into ``output.log.1`` … (actors). Following survives a
rotation without losing a line: when the file shrinks below the offset we
had read to, the rest of what we had not read is in ``output.log.1`` at that
same offset (it is a copy of the file as it was), so it is read from there
first.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import actors

POLL = 0.2  # follow: a file has no portable change event; 0.2 s is what tail -f does (1 s)


def find_agent_log(state_dir: Path, query: str) -> Path | None:
    """The log of the agent whose agentId, label or tmux session is ``query``."""
    direct = actors.agent_log_path(state_dir, query)
    if direct.exists():
        return direct
    db = state_dir / "journal.sqlite3"
    if not db.exists():
        return None
    import json

    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        rows = con.execute("SELECT agent_id, record FROM agents").fetchall()
        con.close()
    except sqlite3.Error:
        return None
    for agent_id, raw in rows:
        try:
            agent = json.loads(raw).get("agent") or {}
        except ValueError:
            continue
        if query in (agent.get("label"), agent.get("tmuxSession"), agent.get("sessionName")):
            return actors.agent_log_path(state_dir, agent_id)
    return None


def tail_log(path: Path, count: int) -> list[str]:
    """Exactly the last ``count`` lines (fewer when the file has fewer)."""
    if count <= 0:
        return []
    try:
        fh = open(path, "rb")  # noqa: SIM115
    except OSError:
        return []
    with fh:
        size = fh.seek(0, os.SEEK_END)
        block = 8192
        data = b""
        pos = size
        while pos > 0 and data.count(b"\n") <= count:
            step = min(block, pos)
            pos -= step
            fh.seek(pos)
            data = fh.read(step) + data
            block *= 2
    lines = data.decode(errors="replace").splitlines()
    return lines[-count:]


def follow_log(path: Path, *, start_at_end: bool = True, poll: float = POLL,
               stop_after: float | None = None) -> Iterator[str]:
    """Yield each new line of ``path`` as it is written, across rotations."""
    offset = path.stat().st_size if (start_at_end and path.exists()) else 0
    inode = path.stat().st_ino if path.exists() else None
    partial = b""
    deadline = None if stop_after is None else time.monotonic() + stop_after
    while deadline is None or time.monotonic() < deadline:
        try:
            st = path.stat()
        except FileNotFoundError:
            time.sleep(poll)
            continue
        chunks: list[bytes] = []
        if st.st_ino != inode or st.st_size < offset:
            # Rotated: what we had not read yet went to output.log.1.
            rotated = path.with_name(path.name + ".1")
            if inode is not None and rotated.exists():
                with open(rotated, "rb") as fh:
                    fh.seek(offset)
                    chunks.append(fh.read())
            offset, inode = 0, st.st_ino
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
            offset += len(data)
            chunks.append(data)
        buf = partial + b"".join(chunks)
        *lines, partial = buf.split(b"\n")
        for line in lines:
            yield line.decode(errors="replace")
        if not lines:
            time.sleep(poll)
