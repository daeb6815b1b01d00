"""``relay-orchestrator dev``: the embedded dev relay and an orchestrator on it.

Prints the relay URL, the token and copy-pasteable lines that drive it, then
runs until Ctrl-C; ``--demo`` walks through spawn, compact, restart and stop
by itself and leaves the agent running to look at.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shlex
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

import attrs
import trio

from .._settings import Settings, load_settings


def dev_settings(args: argparse.Namespace, relay_url: str, token: str) -> Settings:
    settings = load_settings(args)
    providers = {name: dict(table) for name, table in settings.providers.items()}
    providers.setdefault("command", {}).setdefault("enabled", True)
    state_dir = settings.state_dir if settings.sources.get("state_dir") != "default" \
        else settings.state_dir / "dev"
    return attrs.evolve(
        settings,
        relay_url=relay_url,
        token_env=token,
        token_file=None,
        providers=providers,
        state_dir=state_dir,
        # A trial run leaves nothing behind: its agents stop with it.
        stop_agents_on_exit=True,
        heartbeat_interval=settings.heartbeat_interval
        if settings.sources.get("heartbeat_interval") != "default" else 5.0,
    )


def curl_line(url: str, token: str, path: str, body: dict[str, Any] | None = None) -> str:
    parts = ["curl", "-sS", "-X", "POST" if body is not None else "GET",
             "-H", f"Authorization: Bearer {token}"]
    if body is not None:
        parts += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
    parts.append(url + path)
    return shlex.join(parts)


def this_program() -> str:
    """How to run this command again, as the user can type it: the script
    that runs now (a venv's, not on PATH maybe), else the interpreter's -m."""
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if script is not None and script.name == "relay-orchestrator" and script.exists():
        return shlex.quote(str(script.resolve()))
    return f"{shlex.quote(sys.executable)} -m orchestrator"


def tour_lines(url: str, token: str, orch_id: str, base_dir: str, tmux: bool,
               prog: str, state_dir: str) -> list[str]:
    """``tmux``: whether agents get terminal sessions to attach to; ``prog``: this
    program; ``state_dir``: this orchestrator's (its commands need it)."""
    state = f"--state-dir {shlex.quote(state_dir)}"
    agent_id = "ag_demo"
    spawn = {"provider": "command", "agentId": agent_id, "label": "demo", "cwd": base_dir,
             "providerArgs": [sys.executable, "-m", "orchestrator.devrelay._demo_agent"],
             "tags": ["memory-reload:NOTES.md"]}
    return [
        "spawn a demo agent:",
        "  " + curl_line(url, token, f"/api/orchestrators/{orch_id}/spawn", spawn),
        "compact it:",
        "  " + curl_line(url, token, f"/api/agents/{agent_id}/action", {"action": "compact"}),
        "restart it:",
        "  " + curl_line(url, token, f"/api/agents/{agent_id}/action", {"action": "restart"}),
        "watch it:",
        f"  {prog} status {state} --watch",
        *([f"  {prog} attach {state} {agent_id}"] if tmux else []),
        f"  {prog} logs {state} {agent_id} -f",
        "stop it:",
        "  " + curl_line(url, token, f"/api/agents/{agent_id}/action", {"action": "stop"}),
        "see the commands:",
        "  " + curl_line(url, token, "/api/commands"),
    ]


async def run_dev(args: argparse.Namespace) -> None:
    from .._logging import setup_logging

    # before the relay starts: its lines go through the same handler
    setup_logging(load_settings(args).log_format, verbose=args.verbose)
    token = secrets.token_urlsafe(18)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        await _run_dev(args, token, signals)


async def _run_dev(args: argparse.Namespace, token: str, signals: Any) -> None:
    from ..daemon._app import run_orchestrator
    from ._relay import serve_dev_relay

    async with trio.open_nursery() as nursery:
        relay = await nursery.start(
            lambda task_status: serve_dev_relay(port=args.port, token=token,
                                                task_status=task_status)
        )
        settings = dev_settings(args, relay.url, token)
        async with trio.open_nursery() as orch_nursery:
            orch = await orch_nursery.start(run_orchestrator, settings)
            out = sys.stdout
            print(f"dev relay:     {relay.url}", file=out)
            print(f"token:         {token}", file=out)
            print(f"orchestrator:  {orch.id} ({orch.agent_id}), state in {settings.state_dir}",
                  file=out)
            print("", file=out)
            print("try it (a demo agent that echoes what it is sent):", file=out)
            from ._demo import demo_workdir

            work = demo_workdir(settings.base_dir, settings.state_dir)
            notes = work / "NOTES.md"
            if not notes.exists():
                notes.write_text("# Demo notes\nRemember: the relay is the source of truth.\n")
            tmux = shutil.which("tmux") is not None
            for line in tour_lines(relay.url, token, orch.id, str(work), tmux, this_program(),
                                   str(settings.state_dir)):
                print(line, file=out)
            print("\nCtrl-C stops the relay, the orchestrator and its agents.",
                  file=out, flush=True)
            if args.demo:
                from ._demo import run_demo

                await run_demo(relay, orch, out)
            async for _ in signals:
                break
            orch.stop()
        nursery.cancel_scope.cancel()
