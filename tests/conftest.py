"""Shared fixtures: the real dev relay on loopback and real orchestrators on it;
and, for the tests of every package, the systemd --user sandbox
(``systemd_user``) and stand-ins for the service managers' commands
(``stand_ins``), whose helpers live in ``tests/supervisors/``."""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from orchestrator._settings import load_settings

from .supervisors.stand_ins import StandIns
from .supervisors.systemd_sandbox_support import SystemdUser, sandbox_user

TOKEN = "test-token-0123456789"
FAKE_AGENT = str(Path(__file__).parent / "fake_agent.py")


@pytest.fixture
async def relay(nursery: trio.Nursery) -> Any:
    from orchestrator.devrelay._relay import serve_dev_relay

    return await nursery.start(partial(serve_dev_relay, token=TOKEN, offline_after=5.0))


def make_settings(tmp_path: Path, relay_url: str, **overrides: Any) -> Any:
    base = tmp_path / "base"
    base.mkdir(exist_ok=True)
    flags: dict[str, Any] = {
        "relay_url": relay_url,
        "state_dir": str(tmp_path / "state"),
        "base_dir": str(base),
        "supervisor": "none",
        "heartbeat_interval": "10",
        "log_format": "text",
        "config": str(tmp_path / "absent.toml"),
    }
    providers = overrides.pop("providers", {"command": {"enabled": True, "session": "plain"}})
    token = overrides.pop("token", TOKEN)
    env = {"RELAY_ORCHESTRATOR_TOKEN": token} if token else {}
    config = tmp_path / "config.toml"
    if not config.exists():
        config.write_text("")
    flags["config"] = str(config)
    flags.update({k: v for k, v in overrides.items() if not k.startswith("_")})
    settings = load_settings(flags, environ=env)
    return attrs.evolve(settings, providers=providers)


StartOrch = Callable[..., Awaitable[Any]]


def kill_agents(agents: list[dict[str, Any]]) -> None:
    """End the agent processes a test's orchestrator started (by pid, group first)."""
    import signal

    import psutil

    for agent in agents:
        pid = agent.get("pid")
        if not isinstance(pid, int) or agent.get("status") not in ("running", "starting",
                                                                    "stopping"):
            continue
        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                proc.kill()
        except (psutil.Error, OSError):
            continue


@pytest.fixture
def started_orchestrators() -> Any:
    orchs: list[Any] = []
    yield orchs
    for orch, socket in orchs:
        kill_agents(orch.fleet.agents())
        import subprocess

        subprocess.run(["tmux", "-L", socket, "kill-server"],
                       capture_output=True, check=False)


@pytest.fixture
def start_orchestrator(nursery: trio.Nursery, tmp_path: Path, relay: Any,
                       started_orchestrators: list[Any]) -> StartOrch:
    """Start an orchestrator on the test's relay; returns its handle once up.

    Its agents are killed (by pid) when the test ends."""
    from orchestrator.daemon._app import run_orchestrator, tmux_socket

    async def start(*, settings: Any = None, extra_handlers: Any = None, **overrides: Any) -> Any:
        settings = settings or make_settings(tmp_path, relay.url, **overrides)
        orch = await nursery.start(
            partial(run_orchestrator, settings, extra_handlers=extra_handlers)
        )
        started_orchestrators.append((orch, tmux_socket(settings)))
        return orch

    return start


def python_argv(*args: str) -> list[str]:
    return [sys.executable, *args]


@pytest.fixture
def fake_agent_argv() -> Callable[..., list[str]]:
    def argv(*args: str) -> list[str]:
        return [sys.executable, FAKE_AGENT, *args]

    return argv


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_ORCHESTRATOR_")}
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def systemd_user() -> Iterator[SystemdUser]:
    """A test user with a running ``systemd --user`` manager, or a skip saying why."""
    yield from sandbox_user()


@pytest.fixture
def stand_ins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StandIns:
    """``systemctl``, ``launchctl``… stand-ins first on PATH, each call recorded."""
    return StandIns.first_on_path(tmp_path, monkeypatch)
