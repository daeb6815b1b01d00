"""Logs: one line per event; text on a terminal, JSON lines otherwise.

Fields such as ``agentId`` and ``commandId`` travel as ``extra`` and become
JSON keys (or ``key=value`` suffixes in text). The token is never logged:
no code path hands it to a logger.

One tree, ``relay_orchestrator.*``, for everything the package logs (the dev
relay and its server included), configured once per process by
``setup_logging`` (``run``, ``dev`` and ``relay``); the ``actors`` and
``supervisors`` packages' loggers get the same handler.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

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


ROOT = "relay_orchestrator"
_OTHERS = ("actors", "supervisors")


def setup_logging(fmt: str, *, verbose: bool = False) -> None:
    """Send the tree's records to stderr, one line each (again: replaces the handler)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    for name in (ROOT, *_OTHERS):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(logging.DEBUG if verbose else logging.INFO)
        logger.propagate = False
