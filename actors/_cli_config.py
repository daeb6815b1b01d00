"""Answers a CLI keeps in its own settings, written before it starts.

Where a CLI stores a first-run answer in a settings file of its own, the
orchestrator writes that answer there before the agent starts, instead of
pressing keys in a dialog that the CLI may redraw from scratch while it
starts. It writes only what the CLI itself writes when a person gives the
same answer, into a file that already exists (a user who never ran the CLI
has no such file: the dialog is then answered on the screen).

claude (``~/.claude.json``, or ``$CLAUDE_CONFIG_DIR/.claude.json``):
``projects[<cwd>].hasTrustDialogAccepted = true`` for "Yes, I trust this
folder", and the key's last 20 characters in
``customApiKeyResponses.approved`` for "use this API key? Yes".

The file is replaced whole (a temporary file renamed over it, its mode
kept), so that a CLI reading it never sees half of it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("relay_orchestrator.actors")

API_KEY_TAIL = 20  # claude keeps this much of an approved key
_LOCK = threading.Lock()


def claude_config_path(env: Mapping[str, str]) -> Path | None:
    directory = env.get("CLAUDE_CONFIG_DIR") or env.get("HOME")
    return Path(directory) / ".claude.json" if directory else None


def claude_answers(
    env: Mapping[str, str], cwd: Path, *, trust: bool, api_key: str | None
) -> list[str]:
    """Write claude's answers for an agent in ``cwd``; what was written."""
    path = claude_config_path(env)
    if path is None or not (trust or api_key):
        return []
    with _LOCK:  # agents started together: each change on top of the others
        return _claude_answers(path, cwd, trust=trust, api_key=api_key)


def _claude_answers(path: Path, cwd: Path, *, trust: bool, api_key: str | None) -> list[str]:
    try:
        data: Any = json.loads(path.read_text())
    except (OSError, ValueError):
        return []  # no such file (a first run) or not one we understand: leave it be
    if not isinstance(data, dict):
        return []
    written = []
    if trust:
        projects = data.setdefault("projects", {})
        project = projects.setdefault(str(cwd), {}) if isinstance(projects, dict) else None
        if isinstance(project, dict) and project.get("hasTrustDialogAccepted") is not True:
            project["hasTrustDialogAccepted"] = True
            written.append("trust")
    if api_key:
        responses = data.setdefault("customApiKeyResponses", {})
        if isinstance(responses, dict):
            approved = responses.setdefault("approved", [])
            tail = api_key[-API_KEY_TAIL:]
            if isinstance(approved, list) and tail not in approved:
                approved.append(tail)
                written.append("api-key")
    if written:
        try:
            _replace(path, json.dumps(data, indent=2).encode())
        except OSError as exc:
            log.warning("could not record claude's answers in its settings: %s", exc.strerror)
            return []
    return written


def _replace(path: Path, data: bytes) -> None:
    mode = path.stat().st_mode & 0o777
    temporary = path.with_name(f".{path.name}.relay-{os.urandom(6).hex()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
