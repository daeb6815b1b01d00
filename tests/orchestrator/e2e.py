"""Helpers of the end-to-end tests: commands through the real dev relay to real
agents, and ``relay-orchestrator run`` as a process of its own (``OrchProcess``,
the ``orch_process`` fixture in ``conftest.py``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import trio

from ..conftest import FAKE_AGENT, TOKEN, cli_env

WAIT = 20


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def settle(relay: Any, command: dict[str, Any]) -> dict[str, Any]:
    cid = command["id"]
    with trio.fail_after(WAIT):
        await relay.wait_for(
            lambda: relay.get_command(cid)["status"] in ("succeeded", "failed")
        )
    return relay.get_command(cid)


async def wait_lines(path: Path, needle: str, count: int = 1) -> list[str]:
    """Bounded wait for ``count`` lines containing ``needle`` in an agent's record."""
    with trio.fail_after(WAIT):
        while True:
            lines = path.read_text().splitlines() if path.exists() else []
            if sum(needle in line for line in lines) >= count:
                return lines
            await trio.sleep(0.01)


def spawn_params(
    base: Path, agent_id: str, record: Path, *extra: str, **fields: Any,
) -> dict[str, Any]:
    return {
        "provider": "command",
        "agentId": agent_id,
        "cwd": str(base),
        "label": fields.pop("label", agent_id),
        "tags": fields.pop("tags", []),
        "providerArgs": [sys.executable, FAKE_AGENT, "--record", str(record), *extra],
        **fields,
    }


class OrchProcess:
    """``relay-orchestrator run`` as its own process, on the test's relay."""

    def __init__(self, tmp_path: Path, relay_url: str) -> None:
        self.tmp = tmp_path
        self.relay_url = relay_url
        self.base = (tmp_path / "base").resolve()
        self.base.mkdir(exist_ok=True)
        self.config = tmp_path / "config.toml"
        self.config.write_text('[providers.command]\nenabled = true\nsession = "plain"\n')
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tmp_path / "orch.log"
        self.extra: list[str] = []
        self.env: dict[str, str] = {}

    def start(self) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "orchestrator", "run", "--relay-url", self.relay_url,
                "--config", str(self.config), "--state-dir", str(self.tmp / "state"),
                "--base-dir", str(self.base), "--supervisor", "none", "--id", "orch-crash",
                "--heartbeat-interval", "1", "--log-format", "json", *self.extra]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(argv, env=cli_env(RELAY_ORCHESTRATOR_TOKEN=TOKEN,
                                                           **self.env),
                                         stdout=log, stderr=log)
        return self.proc

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


async def registered(relay: Any, count: int) -> dict[str, Any]:
    with trio.fail_after(WAIT):
        await relay.wait_for(lambda: (relay.orchestrator("orch-crash") or {})
                             .get("registrations", 0) >= count)
    return relay.orchestrator("orch-crash")
