"""What a soak or load run drives: the dev relay and an orchestrator subprocess.

``RelayHost`` runs the dev relay in this process and can stop it (as a crash
looks from outside: connections cut, port closed) and start it again from
its state file on the same port. ``OrchestratorProcess`` is
``python -m orchestrator run`` (``--supervisor none``, plain sessions, the
``command`` provider), SIGKILLed or SIGTERMed and started again at will,
its journal readable while it runs. Fake agents carry a marker in their
argv, so this run's processes are found (and ended) by pid, never by name.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

import psutil
import trio

from orchestrator.devrelay._relay import DevRelay, serve_dev_relay

TOKEN = "soak-token-not-a-secret"
ORCH_ID = "orch-soak"
TARGET = f"orch:{ORCH_ID}"


class RelayHost:
    def __init__(self, nursery: trio.Nursery, state_file: Path | None) -> None:
        self._nursery = nursery
        self._state_file = state_file
        self.port = 0
        self.relay: DevRelay | None = None
        self.up = trio.Event()
        self._scope: trio.CancelScope | None = None
        self._ended: trio.Event | None = None

    async def start(self) -> DevRelay:
        """Start it (again: on the same port, from the state file)."""
        for attempt in range(50):
            try:
                return await self._start()
            except OSError:  # the port, just freed, was taken for a moment (a client's)
                if attempt == 49:
                    raise
                await trio.sleep(0.1)
        raise AssertionError("unreachable")

    async def _start(self) -> DevRelay:
        scope, ended = trio.CancelScope(), trio.Event()

        async def serve(*, task_status: trio.TaskStatus[DevRelay]) -> None:
            try:
                with scope:
                    await serve_dev_relay(token=TOKEN, port=self.port,
                                          state_file=self._state_file, task_status=task_status)
            finally:
                ended.set()

        relay: DevRelay = await self._nursery.start(serve)
        self.port = int(relay.url.rsplit(":", 1)[1])
        self.relay, self._scope, self._ended = relay, scope, ended
        self.up.set()
        return relay

    async def stop(self) -> None:
        """As a crash looks from outside: connections cut, the port closed."""
        if self._scope is None or self._ended is None:
            return
        self.up = trio.Event()
        self.relay = None
        self._scope.cancel()
        with trio.fail_after(10):
            await self._ended.wait()
        self._scope = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


# -- the orchestrator subprocess -----------------------------------------------------------


class OrchestratorProcess:
    """``python -m orchestrator run`` in ``workdir``; killed and started again at will."""

    def __init__(self, workdir: Path, relay_url: str, heartbeat: float,
                 provider: dict[str, Any] | None = None) -> None:
        self.workdir = workdir
        self.base = workdir / "base"
        self.state = workdir / "state"
        self.log = workdir / "orchestrator.log"
        self.relay_url = relay_url
        self.heartbeat = heartbeat
        self.base.mkdir(parents=True, exist_ok=True)
        table = {"enabled": True, "session": "plain", **(provider or {})}
        config = "[providers.command]\n" + "".join(
            f"{key} = {json.dumps(value)}\n" for key, value in table.items())
        (workdir / "config.toml").write_text(config)
        self.proc: trio.Process | None = None
        self.starts = 0
        self.unexpected_exits: list[int] = []
        self._expected_end = False

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "orchestrator", "run", "--relay-url", self.relay_url,
                "--config", str(self.workdir / "config.toml"), "--state-dir", str(self.state),
                "--base-dir", str(self.base), "--supervisor", "none", "--id", ORCH_ID,
                "--heartbeat-interval", str(self.heartbeat), "--log-format", "json"]

    async def start(self, nursery: trio.Nursery) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_ORCHESTRATOR_")}
        env["RELAY_ORCHESTRATOR_TOKEN"] = TOKEN
        log = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            proc = await trio.lowlevel.open_process(self.argv(), env=env, cwd=self.workdir,
                                                    stdout=log, stderr=log)
        finally:
            os.close(log)
        self.proc, self._expected_end = proc, False
        self.starts += 1
        nursery.start_soon(self._watch, proc)

    async def _watch(self, proc: trio.Process) -> None:
        code = await proc.wait()
        if proc is self.proc and not self._expected_end:
            self.unexpected_exits.append(code)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def kill(self) -> None:
        if self.proc is None:
            return
        self._expected_end = True
        if self.proc.returncode is None:
            self.proc.kill()
        with trio.fail_after(10):
            await self.proc.wait()

    async def terminate(self, grace: float = 10.0) -> int | None:
        """SIGTERM, as a service manager stops it; SIGKILL after ``grace``."""
        if self.proc is None:
            return None
        self._expected_end = True
        if self.proc.returncode is None:
            self.proc.terminate()
        with trio.move_on_after(grace):
            return await self.proc.wait()
        await self.kill()
        return None

    def journal(self) -> sqlite3.Connection:
        """The journal, read-only (WAL: the running orchestrator keeps writing)."""
        path = self.state / "journal.sqlite3"
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True)

    def log_messages(self) -> list[dict[str, Any]]:
        out = []
        for raw in self.log.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(raw)
            except ValueError:
                entry = {"level": "raw", "msg": raw}
            if isinstance(entry, dict):
                out.append(entry)
        return out


# -- fake agent processes ------------------------------------------------------------------


def marked_processes(marker: str) -> dict[int, str]:
    """Live (not zombie) processes whose argv carries ``marker``: pid → status."""
    found = {}
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            cmdline = proc.info["cmdline"] or []
            if marker in cmdline and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found[proc.info["pid"]] = proc.info["status"]
        except psutil.Error:
            pass
    return found


def is_alive(pid: object, marker: str) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and marker in proc.cmdline()
    except psutil.Error:
        return False


def kill_marked(pid: int, marker: str) -> bool:
    """SIGKILL ``pid`` only if it is still one of this run's fake agents."""
    try:
        proc = psutil.Process(pid)
        if marker not in proc.cmdline() or proc.status() == psutil.STATUS_ZOMBIE:
            return False
        proc.kill()
        return True
    except psutil.Error:
        return False


__all__ = ["ORCH_ID", "TARGET", "TOKEN", "OrchestratorProcess", "RelayHost", "is_alive",
           "kill_marked", "marked_processes"]
