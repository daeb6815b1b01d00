"""The orchestrator's own log: where it goes, and the rotation of its file.

Where (``log_place``), by the supervisor that runs ``run``:

- systemd: standard error, which the manager hands to the journal, each line
  with its priority (``_logging.py``); read with
  ``journalctl --user -u relay-orchestrator.service``; journald rotates it.
- launchd: ``~/Library/Logs/relay-orchestrator/orchestrator.log``, the file
  the LaunchAgent's ``StandardOutPath`` and ``StandardErrorPath`` name.
  launchd opens it and hands it to us as standard error; nothing else ever
  rotates it.
- none (the foreground): standard error (the terminal) and
  ``<state_dir>/orchestrator.log``, so that ``relay-orchestrator logs`` reads
  it from another shell, as it would under launchd.

A log file is rotated in place, as an agent's output log is
(``actors.rotate_if_needed``): its head moves into ``orchestrator.log.1``
(older ones to ``.2`` … ``.<log_backups>``), ``orchestrator.log.head`` counts
the bytes taken off, and ``logs -f`` follows it across rotations without
losing a line. Not by renaming it (``RotatingFileHandler``): under launchd
the file is our standard error, which we cannot reopen (launchd opened it),
and what reaches standard error outside logging (a traceback at a crash,
before logging is set up) would go on into the renamed file.

The rotation runs in the handler, under its lock, right after a record is
written: no record of ours can be written while the head is taken off, so
even where a range cannot be collapsed (APFS: copy, then truncate) no line of
ours is lost. Truncating needs the descriptor in append mode, so that the
next write lands at the new end and not at its old offset: launchd opens its
log paths for appending, and the handler sets ``O_APPEND`` all the same.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sys
from pathlib import Path
from typing import Any, TextIO

import attrs

from actors import rotate_if_needed
from supervisors import SYSTEMD_UNIT, launchd_log_path

DAEMON_LOG = "orchestrator.log"


@attrs.frozen(kw_only=True)
class LogPlace:
    """Where the orchestrator's log goes: the journal, a file, standard error."""

    journal_unit: str | None = None  # systemd: the unit whose journal holds it
    file: Path | None = None  # launchd, foreground: the file it keeps
    stderr: bool = True  # the lines (also) go to standard error

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"stderr": self.stderr}
        if self.journal_unit is not None:
            out["journalUnit"] = self.journal_unit
        if self.file is not None:
            out["file"] = str(self.file)
        return out

    @classmethod
    def from_json(cls, data: object) -> LogPlace | None:
        if not isinstance(data, dict):
            return None
        unit, file = data.get("journalUnit"), data.get("file")
        return cls(
            journal_unit=unit if isinstance(unit, str) and unit else None,
            file=Path(file) if isinstance(file, str) and file else None,
            stderr=data.get("stderr") is not False,
        )

    def journal_argv(self) -> list[str]:
        assert self.journal_unit is not None
        return ["journalctl", "--user", "-u", self.journal_unit]

    def describe(self) -> str:
        """Where to read it, in a few words (``status``)."""
        if self.journal_unit is not None:
            return " ".join(self.journal_argv())
        if self.file is not None:
            return f"{self.file}" + (" (and standard error)" if self.stderr else "")
        return "standard error of the process that runs it (no log file)"


def log_place(supervisor: str, *, self_unit: str | None, state_dir: Path,
              home: Path | None = None) -> LogPlace:
    """Where ``run`` under ``supervisor`` (``systemd``, ``launchd``, ``none``) logs."""
    if supervisor == "systemd":
        return LogPlace(journal_unit=self_unit or SYSTEMD_UNIT)
    if supervisor == "launchd":
        return LogPlace(file=launchd_log_path(home or Path.home()), stderr=False)
    return LogPlace(file=state_dir / DAEMON_LOG)


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _append_mode(fd: int) -> None:
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    if not flags & os.O_APPEND:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_APPEND)


class RotatingLog(logging.StreamHandler[TextIO]):
    """Records to a log file, rotated in place once past ``max_bytes``.

    ``stream``: the file already open (our standard error under launchd);
    else the handler opens ``path`` itself (mode 0600, its folder 0700).
    """

    def __init__(self, path: Path, *, max_bytes: int, backups: int,
                 stream: TextIO | None = None) -> None:
        self._owned = stream is None
        if stream is None:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            stream = open(fd, "w", encoding="utf-8", errors="replace")  # noqa: SIM115
        _append_mode(stream.fileno())
        super().__init__(stream)
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups

    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)  # written and flushed, under the handler's lock
        try:
            if os.fstat(self.stream.fileno()).st_size > self.max_bytes:
                self._rotate()
        except (OSError, ValueError):
            pass  # a log that cannot be rotated still takes lines

    def close(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if self._owned and not self.stream.closed:
                self.stream.close()
        super().close()

    def _rotate(self) -> None:
        rotate_if_needed(self.path, self.max_bytes, self.backups)


def file_handler(path: Path, *, max_bytes: int, backups: int) -> tuple[RotatingLog, bool]:
    """The handler for the log file ``path``, and whether it is standard error
    (launchd's descriptor: then nothing else need go to standard error)."""
    if _same_file(2, path):
        return RotatingLog(path, max_bytes=max_bytes, backups=backups, stream=sys.stderr), True
    return RotatingLog(path, max_bytes=max_bytes, backups=backups), False


__all__ = ["DAEMON_LOG", "LogPlace", "RotatingLog", "file_handler", "log_place"]
