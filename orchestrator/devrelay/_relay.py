"""The dev relay: the relay command bus (PROTOCOL.md §1–3, 5, 6) on loopback.

An ASGI app (starlette) served by ``_asgi_server.py`` (HTTP/1.1 on trio) inside
the caller's nursery::

    relay = await nursery.start(partial(serve_dev_relay, token="t"))
    relay.url                                   # http://127.0.0.1:<port>
    cmd = relay.create_command("orch:o1", "agent.stop", {"agentId": "a"})
    with trio.fail_after(5):
        await relay.wait_for(lambda: relay.get_command(cmd["id"])["status"] == "failed")

State lives in ``RelayStore`` (``_store.py``; its JSON form, ``_snapshot.py``);
its HTTP face (bearer auth, the test faults, the JSON routes, the SSE command
stream) is ``_routes.py``, the actions a person asks for are ``_actions.py``.
This module starts it and keeps the state file (a JSON snapshot written off
the request path, coalesced, atomically, and once more on shutdown).

``relay-orchestrator run`` never imports this package: starlette costs
memory the orchestrator itself does not need.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import ssl
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import trio

from ._asgi_server import serve_asgi
from ._records import DevRelayStateError
from ._routes import KEEPALIVE_INTERVAL, Faults, build_app, dumps_json
from ._snapshot import restore, snapshot
from ._spec import RelayHTTPError
from ._store import RelayStore

__all__ = ["DevRelay", "DevRelayStateError", "Faults", "serve_dev_relay"]

log = logging.getLogger("relay_orchestrator.devrelay")

STATE_WRITE_INTERVAL = 0.05  # at most one state-file write per this many seconds


# -- public handle ------------------------------------------------------------------


@attrs.define(eq=False)
class DevRelay:
    """A running dev relay. Returned dicts are the relay's own: read, don't mutate."""

    url: str
    token: str
    faults: Faults
    _store: RelayStore = attrs.field(alias="store", repr=False)

    def create_command(self, target: str, type: str, params: object, source: str = "system",
                       *, correlation_id: str | None = None) -> dict[str, Any]:
        """A new pending command, delivered at once to the target's open streams."""
        params = json.loads(dumps_json(params))  # the relay's own copy; not JSON → TypeError now
        return self._store.create_command(target, type, params, source, correlation_id).to_json()

    def get_command(self, command_id: str) -> dict[str, Any] | None:
        command = self._store.commands.get(command_id)
        return None if command is None else command.to_json()

    def commands(self, target: str | None = None,
                 status: str | None = None) -> list[dict[str, Any]]:
        try:
            found = self._store.list_commands(target, status)
        except RelayHTTPError as exc:
            raise ValueError(exc.message) from None
        return [command.to_json() for command in found]

    def orchestrator(self, orch_id: str) -> dict[str, Any] | None:
        orch = self._store.orchestrators.get(orch_id)
        return None if orch is None else self._store.orchestrator_json(orch)

    def orchestrators(self) -> list[dict[str, Any]]:
        return [self._store.orchestrator_json(o) for o in self._store.orchestrators.values()]

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` is true; re-checked on every state change."""
        await self._store.wait_for(predicate)


# -- state file ------------------------------------------------------------------------


def _read_state(path: Path) -> object | None:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DevRelayStateError(f"cannot read dev relay state file {path}: {exc}") from exc
    try:
        data: object = json.loads(raw)
    except ValueError as exc:
        raise DevRelayStateError(f"dev relay state file {path} is not JSON: {exc}") from exc
    return data


def _write_state(path: Path, data: bytes) -> None:
    """Atomically: a 0600 temporary beside it, fsync'd, renamed over it."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _save(store: RelayStore, path: Path) -> None:
    try:
        _write_state(path, dumps_json(snapshot(store)))
    except OSError as exc:
        log.error("dev relay cannot write its state file %s: %s", path, exc)


async def _run_state_writer(store: RelayStore, path: Path) -> None:
    while True:
        await store.dirty.wait()
        store.dirty = trio.Event()
        started = trio.current_time()
        data = dumps_json(snapshot(store))  # on the trio thread: the store cannot change meanwhile
        busy = trio.current_time() - started
        try:
            await trio.to_thread.run_sync(_write_state, path, data)
        except OSError as exc:  # a full disk: say so, keep serving, retry on the next change
            log.error("dev relay cannot write its state file %s: %s", path, exc)
        # a big state is snapshotted less often: at most a fifth of the loop's time
        await trio.sleep(max(STATE_WRITE_INTERVAL, 4 * busy))


# -- serving ---------------------------------------------------------------------------


def _listen(host: str, port: int) -> socket.socket:
    """Bind here, so that a taken port is one clear ``OSError`` (not nested groups)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"dev relay cannot listen on {host}:{port}: {exc.strerror}"
                      ) from exc
    return sock


def _tls(certfile: Path, keyfile: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(certfile), str(keyfile))
    return context


async def serve_dev_relay(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str,
    state_file: Path | None = None,
    offline_after: float = 30.0,
    upgrade_deadline: float = 600.0,
    keepalive_interval: float = KEEPALIVE_INTERVAL,
    certfile: Path | None = None,
    keyfile: Path | None = None,
    task_status: trio.TaskStatus[DevRelay] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Bind, hand back the ``DevRelay`` through ``task_status``, serve until cancelled.

    With ``certfile`` and ``keyfile`` (PEM) it serves https (its ``url`` says so)."""
    store = RelayStore(offline_after=offline_after, upgrade_deadline=upgrade_deadline)
    if state_file is not None:
        state_file = Path(state_file)
        data = await trio.to_thread.run_sync(_read_state, state_file)
        if data is not None:
            restore(store, data)
        try:  # a state file that cannot be written fails the start, not a later change
            await trio.to_thread.run_sync(_write_state, state_file, dumps_json(snapshot(store)))
        except OSError as exc:
            raise DevRelayStateError(f"cannot write dev relay state file {state_file}: "
                                     f"{exc.strerror or exc}") from exc
    faults = Faults()
    app = build_app(store, faults, token, keepalive_interval)
    tls = _tls(certfile, keyfile) if certfile is not None and keyfile is not None else None
    sock = _listen(host, port)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.run_timers)
            if state_file is not None:
                nursery.start_soon(_run_state_writer, store, state_file)
            url = await nursery.start(partial(serve_asgi, app, sock, ssl_context=tls))
            task_status.started(DevRelay(url=url, token=token, faults=faults, store=store))
    finally:
        sock.close()  # closed already, unless the server never started
        if state_file is not None:
            _save(store, state_file)  # the last changes, synchronously, even when cancelled
