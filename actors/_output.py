"""Where an agent's files live, and what its output log tells.

``<state_dir>/agents/<agentId>/`` (mode 0700) holds ``output.log`` (stdout
and stderr of a plain session, or a tmux pane's output via ``pipe-pane``),
``stdin`` (a plain session's FIFO) and, for a moment, the launch file of a
tmux session. Logs rotate by copy-and-truncate (the agent keeps appending to
the same open file): ``output.log.1`` … ``output.log.<backups>``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

LAST_LINES = 20
_TAIL_BYTES = 16_384
_MAX_LAST_OUTPUT = 4000


def agent_dir(state_dir: Path, agent_id: str) -> Path:
    return state_dir / "agents" / agent_id


def agent_log_path(state_dir: Path, agent_id: str) -> Path:
    """The output log of agent ``agent_id`` (for ``relay-orchestrator logs``)."""
    return agent_dir(state_dir, agent_id) / "output.log"


def make_agent_dir(state_dir: Path, agent_id: str) -> Path:
    path = agent_dir(state_dir, agent_id)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def last_lines(text: str, count: int = LAST_LINES) -> str:
    lines = [line.rstrip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    tail = "\n".join(lines[-count:])
    return tail[-_MAX_LAST_OUTPUT:]


def tail(path: Path, count: int = LAST_LINES) -> str:
    """The last ``count`` lines of ``path`` ("" when it does not exist)."""
    try:
        with open(path, "rb") as file:
            size = file.seek(0, os.SEEK_END)
            file.seek(max(0, size - _TAIL_BYTES))
            data = file.read()
    except OSError:
        return ""
    text = data.decode(errors="replace")
    if size > _TAIL_BYTES:
        text = text.partition("\n")[2]  # drop the cut first line
    return last_lines(text, count)


def rotate_if_needed(path: Path, max_bytes: int, backups: int) -> bool:
    """Copy-and-truncate ``path`` once it has grown past ``max_bytes``."""
    try:
        if path.stat().st_size <= max_bytes:
            return False
    except OSError:
        return False
    if backups > 0:
        for index in range(backups - 1, 0, -1):
            older = path.with_name(f"{path.name}.{index}")
            if older.exists():
                os.replace(older, path.with_name(f"{path.name}.{index + 1}"))
        shutil.copy2(path, path.with_name(f"{path.name}.1"))
    os.truncate(path, 0)
    return True
