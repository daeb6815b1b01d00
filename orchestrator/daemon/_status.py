"""The status file: ``<state_dir>/status.json``, rewritten (atomically, at
most once a second) whenever the connection or an agent changes, for the
``status`` command to read back."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import trio

STATUS_FILE = "status.json"
MIN_INTERVAL = 1.0


def write_status(state_dir: Path, status: dict[str, Any]) -> None:
    path = state_dir / STATUS_FILE
    tmp = path.with_suffix(".tmp")
    data = json.dumps(status).encode()  # dumps: the C encoder; dump() encodes in Python
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


class StatusWriter:
    """Coalesces changes into at most one write a second."""

    def __init__(self, state_dir: Path, snapshot: Any) -> None:
        self._state_dir = state_dir
        self._snapshot = snapshot
        self._dirty = trio.Event()

    def changed(self) -> None:
        self._dirty.set()

    async def run(
        self, *, task_status: trio.TaskStatus[StatusWriter] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        task_status.started(self)
        while True:
            self._write()
            await self._dirty.wait()
            self._dirty = trio.Event()
            await trio.sleep(MIN_INTERVAL)

    def _write(self) -> None:
        status = self._snapshot()
        status["pid"] = os.getpid()
        status["updatedAt"] = int(time.time() * 1000)
        try:
            write_status(self._state_dir, status)
        except OSError:
            pass
