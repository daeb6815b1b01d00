"""The errors of the ``supervisors`` package, split by what the caller does next.

::

    SupervisorError                  anything below; never raised itself
     ├─ SupervisorConfigError        a bad setting (supervisor choice, unit name,
     │                               resource value): fix the configuration
     ├─ LaunchError                  a process could not be started: reject the command
     ├─ RestartError                 the restart job could not be handed to the
     │                               supervisor: the upgrade fails, we keep running
     └─ InstallError                 a file or command of an install/uninstall plan
                                     failed: report it, exit 1

Third-party errors (``OSError``, a failed ``systemd-run``, a GLib error from
pydbus) are translated at the edge with ``raise ... from exc``. The
orchestrator may re-root this tree under its own error by subclassing or by
catching ``SupervisorError`` at its boundary.
"""

from __future__ import annotations


class SupervisorError(Exception):
    """Root of this package's errors."""


class SupervisorConfigError(SupervisorError):
    """A setting the supervisor adapters cannot use; the message names it."""


class LaunchError(SupervisorError):
    """A process could not be started outside our own teardown."""


class RestartError(SupervisorError):
    """The decoupled restart of our own unit could not be requested."""


class InstallError(SupervisorError):
    """A step of an install or uninstall plan failed."""


__all__ = [
    "InstallError",
    "LaunchError",
    "RestartError",
    "SupervisorConfigError",
    "SupervisorError",
]
