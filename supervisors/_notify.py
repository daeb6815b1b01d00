"""sd_notify: telling systemd about our state over ``$NOTIFY_SOCKET``.

The protocol is one datagram of newline-separated ``KEY=VALUE`` lines to the
``AF_UNIX`` socket named by ``$NOTIFY_SOCKET`` (a path, or ``@name`` for an
abstract socket). Without ``$NOTIFY_SOCKET`` (not started by systemd, or a
supervisor that does not listen) every call is a no-op that returns False.

A send never blocks: the socket is non-blocking and a full queue drops the
message, which is what libsystemd does too. Nothing here raises for a
missing or unreachable socket; a malformed message (a newline in a value)
is a programming error and raises ``ValueError``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

import attrs


@attrs.frozen
class Notifier:
    """Sends sd_notify messages to one address (or nowhere)."""

    address: str | bytes | None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if env is None else env
        raw = env.get("NOTIFY_SOCKET", "")
        address: str | bytes | None
        if raw.startswith("@"):
            address = b"\0" + raw[1:].encode()  # abstract namespace
        elif raw.startswith("/"):
            address = raw
        else:
            address = None  # unset, or a transport we do not speak (vsock:…)
        return cls(address)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: str) -> bool:
        """Send ``KEY=value`` lines (``READY="1"`` …); True if it was sent."""
        if self.address is None:
            return False
        lines = []
        for key, value in fields.items():
            if "\n" in value:
                raise ValueError(f"sd_notify {key} must be one line: {value!r}")
            lines.append(f"{key}={value}")
        payload = "\n".join(lines).encode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)
            try:
                sock.sendto(payload, self.address)
            except OSError:
                return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.send(READY="1", **_status(status))

    def status(self, status: str) -> bool:
        return self.send(STATUS=status)

    def stopping(self, status: str | None = None) -> bool:
        return self.send(STOPPING="1", **_status(status))

    def watchdog(self) -> bool:
        return self.send(WATCHDOG="1")


def _status(status: str | None) -> dict[str, str]:
    return {} if status is None else {"STATUS": status}


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """The watchdog timeout in seconds, or None when no watchdog is armed.

    Like ``sd_watchdog_enabled``: ``$WATCHDOG_USEC`` set and, when
    ``$WATCHDOG_PID`` is set, naming this process. Ping at half of it.
    """
    env = os.environ if env is None else env
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid is not None and pid != str(os.getpid()):
        return None
    return usec / 1_000_000


def notify(
    *,
    ready: bool = False,
    status: str | None = None,
    stopping: bool = False,
    watchdog: bool = False,
    env: Mapping[str, str] | None = None,
) -> bool:
    """Send one sd_notify message built from the flags; no-op without a socket."""
    fields: dict[str, str] = {}
    if ready:
        fields["READY"] = "1"
    if stopping:
        fields["STOPPING"] = "1"
    if watchdog:
        fields["WATCHDOG"] = "1"
    if status is not None:
        fields["STATUS"] = status
    if not fields:
        return False
    return Notifier.from_env(env).send(**fields)


__all__ = ["Notifier", "notify", "watchdog_interval"]
