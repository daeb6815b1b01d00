"""``dev --demo``: spawn, compact, restart and stop, narrated, through the relay.

Every step goes through the dev relay's own HTTP API (PROTOCOL.md 6) as a
person with ``curl`` would drive it; the agent is left running at the end.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TextIO

import httpx
import trio

STEP_TIMEOUT = 30.0
DEMO_AGENT = "ag_demo"


async def _command(
    relay: Any, http: httpx.AsyncClient, path: str, body: dict[str, Any],
) -> dict[str, Any]:
    response = await http.post(path, json=body)
    response.raise_for_status()
    command = response.json()
    cid = command["id"]
    with trio.fail_after(STEP_TIMEOUT):
        await relay.wait_for(
            lambda: (relay.get_command(cid) or {}).get("status") in ("succeeded", "failed")
        )
    done: dict[str, Any] = relay.get_command(cid)
    if done["status"] != "succeeded":
        raise RuntimeError(f"{command['type']} failed: {done.get('error')}")
    return done


ECHO_WAIT = 5.0  # seconds the demo waits for the agent to print a line


async def _agent_echoed(orch: Any, line: str) -> bool:
    """Wait (bounded) until the demo agent has printed ``line``: its log is a file."""
    import actors

    log = actors.agent_log_path(orch.settings.state_dir, DEMO_AGENT)
    with trio.move_on_after(ECHO_WAIT):
        while True:
            try:
                if line in log.read_text(errors="replace"):
                    return True
            except OSError:
                pass
            await trio.sleep(0.05)
    return False


def demo_workdir(base_dir: Path, state_dir: Path) -> Path:
    candidate = state_dir / "demo"
    try:
        candidate.resolve().relative_to(base_dir.resolve())
    except ValueError:
        candidate = base_dir / ".relay-orchestrator-demo"
    candidate.mkdir(parents=True, exist_ok=True)
    return candidate


async def run_demo(relay: Any, orch: Any, out: TextIO = sys.stdout) -> dict[str, Any]:
    def say(text: str) -> None:
        print(text, file=out, flush=True)

    work = demo_workdir(orch.settings.base_dir, orch.settings.state_dir)
    notes = work / "NOTES.md"
    notes.write_text("# Demo notes\nRemember: the relay is the source of truth.\n")
    spawn = {
        "provider": "command",
        "agentId": DEMO_AGENT,
        "label": "demo",
        "cwd": str(work),
        "providerArgs": [sys.executable, "-m", "orchestrator.devrelay._demo_agent"],
        "tags": ["memory-reload:NOTES.md"],
        "env": {"RELAY_AGENT_ID": DEMO_AGENT},
    }
    steps: dict[str, Any] = {}
    headers = {"Authorization": f"Bearer {relay.token}"}
    async with httpx.AsyncClient(base_url=relay.url, headers=headers, trust_env=False) as http:
        say("\n[demo 1/4] spawning agent ag_demo (a small program that echoes its input) …")
        done = await _command(relay, http, f"/api/orchestrators/{orch.id}/spawn", spawn)
        steps["spawn"] = done["result"]
        say(f"           running, pid {done['result']['pid']}"
            + (f", tmux session {done['result']['tmuxSession']}"
               if done["result"].get("tmuxSession") else ""))

        say("[demo 2/4] compacting it: /compact, then NOTES.md reloaded into it …")
        action = f"/api/agents/{DEMO_AGENT}/action"
        done = await _command(relay, http, action, {"action": "compact"})
        steps["compact"] = done["result"]
        say(f"           reloaded {', '.join(done['result'].get('reloaded') or []) or 'nothing'}")
        if await _agent_echoed(orch, "got: Remember: the relay is the source of truth."):
            say("           the agent read it back (see its log)")

        say("[demo 3/4] restarting it with the relay's restartSpawn …")
        done = await _command(relay, http, action, {"action": "restart"})
        steps["restart"] = done["result"]
        say(f"           pid {done['result']['previousPid']} → {done['result']['pid']}")

        say("[demo 4/4] stopping it, then spawning it again to leave it running for you …")
        done = await _command(relay, http, f"/api/agents/{DEMO_AGENT}/action", {"action": "stop"})
        steps["stop"] = done["result"]
        say(f"           stopped (exit code {done['result'].get('exitCode')}, "
            f"signal {done['result'].get('signal')})")
        done = await _command(relay, http, f"/api/orchestrators/{orch.id}/spawn", spawn)
        steps["respawn"] = done["result"]
    session = done["result"].get("tmuxSession")
    say(f"\ndemo done: ag_demo is running (pid {done['result']['pid']}).")
    if session:
        from ..daemon._app import tmux_socket

        socket = tmux_socket(orch.settings)
        say(f"  watch it:  tmux -L {socket} attach -t {session}")
    say(f"  its log:   relay-orchestrator logs {DEMO_AGENT} --state-dir {orch.settings.state_dir}")
    return steps
