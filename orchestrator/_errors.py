"""The project's exceptions, split by what the caller does next.

    OrchestratorError
    ├── ConfigError            fatal: bad setting or file; the CLI exits 2 naming it
    ├── StatusUnreadable       the status file is there but cannot be read: `status` exits 1
    └── RelayError             an exchange with the relay did not give an answer we can use
        ├── RelayUnavailable   refused, timed out, 5xx, or a hanging relay: back off, retry
        ├── RelayAuthError     401/403: log one clear error, back off, re-read the token
        ├── RelayConflict      409: the relay refuses this state change; do not retry
        └── RelayNotFound      404: the relay does not know the thing (re-register, or drop)

Command rejections (bad params, no such agent) live in ``actors`` as
``CommandRejected``: they become a ``failed`` settle, never an exception here.
Third-party errors are translated at the edge with ``raise Ours(...) from exc``:
those of an exchange with the relay (httpx's, h11's, a socket's, a timeout)
in one place, ``relay/_foreign.py``; sqlite3's and tomllib's where they are
called.
"""

from __future__ import annotations


class OrchestratorError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(OrchestratorError):
    """A setting, flag or file is wrong; the message names it."""


class StatusUnreadable(OrchestratorError):
    """The running orchestrator's status file exists but cannot be read."""


class RelayError(OrchestratorError):
    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RelayUnavailable(RelayError):
    pass


class RelayAuthError(RelayError):
    pass


class RelayConflict(RelayError):
    pass


class RelayNotFound(RelayError):
    pass
