"""Logs: one line per event; text on a terminal, JSON lines otherwise.

Fields such as ``agentId`` and ``commandId`` travel as ``extra`` and become
JSON keys (or ``key=value`` suffixes in text). The token is never logged:
no code path hands it to a logger.

One tree, ``relay_orchestrator.*``, for everything the project logs,
configured once per process by ``setup_logging`` (``run``, ``dev`` and
``relay``). Each module logs as its package, whatever module of it the
record comes from: ``relay_orchestrator.<subpackage>`` in ``orchestrator/``
(``daemon``, ``relay``, ``upgrade``, ``cli``, ``devrelay``), and
``relay_orchestrator.actors`` or ``relay_orchestrator.supervisors`` for the
other two packages; so a module split or renamed keeps its logger's name.
The tree's handlers: standard error, and the log file ``run`` keeps under
launchd and in the foreground (``_daemon_log.py``). Under systemd, when
standard error is the journal's stream, each line carries its priority
(``<3>`` for an error), so that ``journalctl -p err`` finds the errors.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._daemon_log import LogPlace

FIELDS = ("agentId", "commandId", "pid", "unit")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in FIELDS:
            if key in record.__dict__:
                out[key] = record.__dict__[key]
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        extra = "".join(
            f" {k}={record.__dict__[k]}" for k in FIELDS if k in record.__dict__
        )
        line = f"{stamp} {record.levelname.lower():7} {record.getMessage()}{extra}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


# sd-daemon(3): a line that starts "<N>" is logged by journald at priority N.
_PRIORITY = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}


class JournalPrefixed(logging.Formatter):
    """Another formatter's lines, each with its record's priority for journald,
    so that ``journalctl -p err`` shows the errors (and a traceback's every
    line keeps its record's priority)."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self._inner = inner

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{_PRIORITY.get(record.levelname, 6)}>"
        return "\n".join(prefix + line for line in self._inner.format(record).split("\n"))


def stderr_is_journal(environ: dict[str, str] | None = None) -> bool:
    """Whether standard error is the journal's stream (``JOURNAL_STREAM`` names
    its device and inode, as systemd sets it for a service)."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    try:
        stat = os.fstat(2)
        return (stat.st_dev, stat.st_ino) == (int(device), int(inode))
    except (OSError, ValueError):
        return False


ROOT = "relay_orchestrator"


def setup_logging(
    fmt: str,
    *,
    verbose: bool = False,
    place: LogPlace | None = None,
    max_bytes: int = 10_000_000,
    backups: int = 3,
) -> None:
    """Send the tree's records to stderr, one line each, and to the log file of
    ``place`` when it names one (``_daemon_log.py``); again: replaces the handlers."""
    formatter: logging.Formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    handlers: list[logging.Handler] = []
    to_stderr = place is None or place.stderr
    if place is not None and place.file is not None:
        from ._daemon_log import file_handler

        file, is_stderr = file_handler(place.file, max_bytes=max_bytes, backups=backups)
        file.setFormatter(formatter)
        handlers.append(file)
        to_stderr = to_stderr and not is_stderr
    if to_stderr:
        stderr = logging.StreamHandler(sys.stderr)
        stderr.setFormatter(JournalPrefixed(formatter) if stderr_is_journal() else formatter)
        handlers.append(stderr)
    logger = logging.getLogger(ROOT)
    old = set(logger.handlers)
    logger.handlers[:] = handlers
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
    for gone in old - set(handlers):
        gone.close()
