"""A CLI's own session id, where it cannot be given at spawn.

claude and gemini take a session id at spawn (``--session-id``), so the
orchestrator chooses it. codex 0.17x does not: it names its session itself,
and writes it as the first line (``session_meta``) of a rollout file,
``$CODEX_HOME/sessions/YYYY/MM/DD/rollout-<time>-<id>.jsonl``, when its
first turn begins. The orchestrator reads it back from there: the newest
rollout written since the agent started, for the agent's folder, that no
other agent has claimed. Two codex agents started in one folder at the same
moment could be told apart only by the order of their first turns.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Collection, Mapping
from pathlib import Path

FIRST_LINE_MAX = 1 << 20


def codex_home(env: Mapping[str, str]) -> Path | None:
    if env.get("CODEX_HOME"):
        return Path(env["CODEX_HOME"])
    return Path(env["HOME"]) / ".codex" if env.get("HOME") else None


def _day_dirs(root: Path, since: float, now: float) -> list[Path]:
    days = set()
    for moment in (since, now):
        for zone in (None, datetime.UTC):
            day = datetime.datetime.fromtimestamp(moment, tz=zone)
            days.add(root / f"{day:%Y}" / f"{day:%m}" / f"{day:%d}")
    return sorted(days)


def codex_session_id(
    env: Mapping[str, str], cwd: Path, *, since: float, taken: Collection[str] = ()
) -> str | None:
    """The id of the first codex session begun in ``cwd`` since ``since`` (a
    wall clock time) that is not one of ``taken``; None while there is none."""
    home = codex_home(env)
    if home is None:
        return None
    found: list[tuple[str, str]] = []
    for directory in _day_dirs(home / "sessions", since, datetime.datetime.now().timestamp()):
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            if not (entry.name.startswith("rollout-") and entry.name.endswith(".jsonl")):
                continue
            try:
                if entry.stat().st_mtime < since - 1:
                    continue
                with open(entry.path, "rb") as f:
                    meta = json.loads(f.readline(FIRST_LINE_MAX))
            except (OSError, ValueError):
                continue
            payload = meta.get("payload") if isinstance(meta, dict) else None
            if not isinstance(payload, dict) or meta.get("type") != "session_meta":
                continue
            session = payload.get("id") or payload.get("session_id")
            if isinstance(session, str) and payload.get("cwd") == str(cwd) and session not in taken:
                found.append((str(payload.get("timestamp") or meta.get("timestamp")), session))
    return min(found)[1] if found else None  # the first begun: agents claim theirs in turn
