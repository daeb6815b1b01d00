"""The real agent CLIs, pinned in tests/clis/package.json, run by a real
orchestrator on the real dev relay, in tmux, each talking to a model stub
on loopback (tests/model_stubs/) with HOME a temporary directory."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from ..conftest import TOKEN

CLIS = Path(__file__).parents[1] / "clis"
BIN = CLIS / "node_modules" / ".bin"
PINNED: dict[str, str] = json.loads((CLIS / "package.json").read_text())["dependencies"]
PROGRAMS = {"claude": "@anthropic-ai/claude-code", "codex": "@openai/codex",
            "gemini": "@google/gemini-cli"}
WAIT = 60.0  # a CLI's start, a turn with the stub, a quit


@pytest.fixture(autouse=True)
def not_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """The agents run as on a person's machine: gemini takes a CI environment
    (CI, CONTINUOUS_INTEGRATION, CI_*) for a pipe and quits at once."""
    for name in list(os.environ):
        if name in ("CI", "CONTINUOUS_INTEGRATION") or name.startswith("CI_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def clis_bin() -> Path:
    """Where the pinned CLIs are; the test fails (never skips) without them."""
    missing = [name for name in PROGRAMS if not (BIN / name).exists()]
    if missing:
        pytest.fail(
            f"pinned agent CLIs missing: {', '.join(missing)} "
            f"({', '.join(f'{PROGRAMS[m]}@{PINNED[PROGRAMS[m]]}' for m in missing)}); "
            "install them with tests/clis/install",
            pytrace=False,
        )
    return BIN


class Real:
    """One orchestrator on the test's dev relay, and ways to look at its agents."""

    def __init__(self, relay: Any, orch: Any, socket: str, base: Path, home: Path,
                 path: str) -> None:
        self.relay, self.orch, self.socket = relay, orch, socket
        self.base, self.home, self.path = base, home, path

    async def api(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.relay.url, trust_env=False,
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            response = await http.request(method, path, json=body)
            assert response.status_code < 300, response.text
            result: dict[str, Any] = response.json()
            return result

    async def settle(self, command: dict[str, Any], within: float = WAIT) -> dict[str, Any]:
        cid = command["id"]
        with trio.fail_after(within):
            await self.relay.wait_for(
                lambda: self.relay.get_command(cid)["status"] in ("succeeded", "failed")
            )
        settled: dict[str, Any] = self.relay.get_command(cid)
        return settled

    def env(self, stub_env: dict[str, str], **extra: str) -> dict[str, str]:
        return {"PATH": self.path, "TERM": "xterm-256color", "COLORTERM": "truecolor",
                **stub_env, **extra}

    async def spawn(self, provider: str, agent_id: str, cwd: Path, env: dict[str, str],
                    **fields: Any) -> dict[str, Any]:
        cwd.mkdir(parents=True, exist_ok=True)
        params = {"provider": provider, "agentId": agent_id, "cwd": str(cwd), "env": env,
                  **fields}
        return await self.settle(
            await self.api("POST", f"/api/orchestrators/{self.orch.id}/spawn", params)
        )

    async def action(self, agent_id: str, action: str, within: float = WAIT,
                     **body: Any) -> dict[str, Any]:
        return await self.settle(
            await self.api("POST", f"/api/agents/{agent_id}/action", {"action": action, **body}),
            within,
        )

    def agent(self, agent_id: str) -> dict[str, Any]:
        agents = self.relay.orchestrator(self.orch.id)["agents"]
        found: dict[str, Any] = next(a for a in agents if a["agentId"] == agent_id)
        return found

    async def until(self, agent_id: str, test: Callable[[dict[str, Any]], bool],
                    what: str, within: float = WAIT) -> dict[str, Any]:
        """The relay's view of the agent once ``test`` holds (bounded)."""
        with trio.move_on_after(within):
            await self.relay.wait_for(lambda: test(self.agent(agent_id)))
            return self.agent(agent_id)
        agent = self.agent(agent_id)
        raise AssertionError(
            f"agent {agent_id} never {what} within {within:g} s: status {agent['status']}, "
            f"activity {agent.get('activity')}, question {agent.get('question')!r}, "
            f"exit {agent.get('exit')}\n--- screen ---\n{self.screen(agent_id)}"
        )

    async def activity(self, agent_id: str, *wanted: str, within: float = WAIT
                       ) -> dict[str, Any]:
        return await self.until(agent_id, lambda a: a.get("activity") in wanted,
                                f"became {'/'.join(wanted)}", within)

    def screen(self, agent_id: str) -> str:
        result = subprocess.run(
            ["tmux", "-N", "-L", self.socket, "capture-pane", "-p", "-t", f"=relay-{agent_id}:"],
            capture_output=True, text=True, check=False,
        )
        return result.stdout or result.stderr


RealWith = Callable[..., Any]


@pytest.fixture
def real_with(
    relay: Any, start_orchestrator: Any, tmp_path: Path, clis_bin: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> RealWith:
    """An orchestrator whose providers' tables have ``overrides`` (one per test)."""
    from orchestrator.daemon._app import tmux_socket

    from ..conftest import make_settings

    async def start(**overrides: dict[str, Any]) -> Real:
        path = f"{clis_bin}{os.pathsep}{os.environ.get('PATH', os.defpath)}"
        monkeypatch.setenv("PATH", path)  # the orchestrator offers what its PATH has
        home = tmp_path / "home"
        home.mkdir()
        providers = {name: {"session": "tmux", **overrides.get(name, {})} for name in PROGRAMS}
        settings = make_settings(tmp_path, relay.url, providers=providers)
        orch = await start_orchestrator(settings=settings)
        return Real(relay, orch, tmux_socket(settings), settings.base_dir, home, path)

    return start


@pytest.fixture
async def real(real_with: RealWith) -> Real:
    real: Real = await real_with()
    return real


def processes_of(home: Path) -> list[int]:
    """Processes whose environment has HOME=``home`` (what an agent left)."""
    found = []
    needle = f"HOME={home}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue
    return found


@pytest.fixture
def stub_factory() -> Iterator[Callable[[Any], Any]]:
    started: list[Any] = []

    def start(stub: Any) -> Any:
        stub.start()
        started.append(stub)
        return stub

    yield start
    for stub in started:
        stub.stop()
