"""``attach AGENT`` in a real terminal: a pane of a tmux server of the test's own.

The agent runs in a tmux session of the orchestrator's fleet; ``attach``
runs in a pane of another tmux server (so it is nested: ``$TMUX`` is set
there), and the test reads that pane back with ``capture-pane``. Whether a
client is read-only is tmux's own answer (``list-clients``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from orchestrator.daemon._app import tmux_socket

from ..conftest import FAKE_AGENT, cli_env
from .e2e import settle

pytestmark = pytest.mark.slow
WAIT = 30.0
GREETING = "hello from the agent you attached to"


def tmux(socket: str, *args: str, env: dict[str, str] | None = None) -> str:
    return subprocess.run(["tmux", "-L", socket, *args], capture_output=True, text=True,
                          timeout=WAIT, env=env, check=True).stdout


async def spawn(relay: Any, orch: Any, base: Path, agent_id: str, label: str) -> None:
    done = await settle(relay, relay.create_command(orch.agent_id, "agent.spawn", {
        "provider": "command", "agentId": agent_id, "label": label, "cwd": str(base),
        "providerArgs": [sys.executable, FAKE_AGENT, "--print", GREETING]}))
    assert done["status"] == "succeeded", done["error"]


def attach_argv(state: Path, config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator", "attach", *args, "--state-dir", str(state),
            "--config", str(config)]


@pytest.fixture
def outer() -> Any:
    """A tmux server of the test's own, for the terminals ``attach`` runs in."""
    socket = f"relay-test-outer-{os.getpid()}"
    yield socket
    subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, timeout=WAIT)


async def until_in_pane(socket: str, target: str, text: str) -> str:
    with trio.move_on_after(WAIT):
        while text not in (screen := tmux(socket, "capture-pane", "-p", "-t", target)):
            await trio.sleep(0.05)
        return screen
    raise AssertionError(f"{text!r} never showed in {target}:\n"
                         f"{tmux(socket, 'capture-pane', '-p', '-t', target)}")


async def test_attach_shows_the_agents_screen_read_only_or_not(
    relay: Any, start_orchestrator: Any, tmp_path: Path, outer: str,
) -> None:
    orch = await start_orchestrator(providers={"command": {"enabled": True, "session": "tmux"}})
    base = (tmp_path / "base").resolve()
    await spawn(relay, orch, base, "ag_att", "watched")
    socket = tmux_socket(orch.settings)
    state, config = orch.settings.state_dir, tmp_path / "config.toml"
    env = cli_env(HOME=str(tmp_path / "home"), XDG_CONFIG_HOME=str(tmp_path / "home" / "cfg"))
    # By label, then by its session's name with --read-only: one terminal each.
    tmux(outer, "-f", "/dev/null", "new-session", "-d", "-s", "rw", "-x", "120", "-y", "40",
         "--", *attach_argv(state, config, "watched"), env=env)
    tmux(outer, "new-session", "-d", "-s", "ro", "-x", "120", "-y", "40",
         "--", *attach_argv(state, config, "relay-ag_att", "--read-only"), env=env)
    for terminal in ("rw", "ro"):
        await until_in_pane(outer, f"={terminal}:", GREETING)
    with trio.fail_after(WAIT):
        while len(clients := tmux(socket, "list-clients", "-F",
                                  "#{client_readonly} #{session_name}").split("\n")[:-1]) < 2:
            await trio.sleep(0.05)
    assert sorted(clients) == ["0 relay-ag_att", "1 relay-ag_att"]
    # Keys typed in the read-only terminal go nowhere; in the other, to the agent.
    tmux(outer, "send-keys", "-t", "=ro:", "print typed-in-read-only", "Enter")
    tmux(outer, "send-keys", "-t", "=rw:", "print typed-by-a-person", "Enter")
    screen = await until_in_pane(outer, "=rw:", "\ntyped-by-a-person")
    assert "typed-in-read-only" not in screen


async def test_attach_refuses_a_plain_session_and_an_unknown_agent_in_one_sentence(
    relay: Any, start_orchestrator: Any, tmp_path: Path,
) -> None:
    orch = await start_orchestrator(providers={"command": {"enabled": True, "session": "plain"}})
    await spawn(relay, orch, (tmp_path / "base").resolve(), "ag_plain", "plainly")
    state, config = orch.settings.state_dir, tmp_path / "config.toml"

    def attach(query: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(attach_argv(state, config, query), capture_output=True,
                              text=True, timeout=WAIT, stdin=subprocess.DEVNULL,
                              env=cli_env(HOME=str(tmp_path / "home")))

    out = await trio.to_thread.run_sync(attach, "plainly")
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr == (
        "relay-orchestrator: agent ag_plain runs in a plain session, which has no terminal to "
        "attach to: read its output with `relay-orchestrator logs ag_plain -f`\n")
    out = await trio.to_thread.run_sync(attach, "nobody")
    assert out.returncode == 1
    assert out.stderr == f"relay-orchestrator: no agent matches 'nobody' in {state}\n"
