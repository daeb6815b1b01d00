"""``status``: the local view, from the status file the running process keeps.

The running orchestrator rewrites ``<state_dir>/status.json`` (atomically,
at most once a second) whenever its connection or an agent changes; this
module reads it back and says whether that process is still alive.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from .._settings import Settings, add_setting_flags
from ..daemon._status import STATUS_FILE
from ._exit import EXIT_OK


def local_status(settings: Settings) -> dict[str, Any]:
    path = settings.state_dir / STATUS_FILE
    try:
        status: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"id": settings.id, "running": False, "version": None, "supervisor": None,
                "relay": {"url": settings.relay_url, "connected": False}, "agents": [],
                "stateDir": str(settings.state_dir)}
    pid = status.get("pid")
    alive = isinstance(pid, int) and psutil.pid_exists(pid)
    if alive:
        try:
            alive = psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            alive = False
    status["running"] = alive
    if not alive:
        status.setdefault("relay", {})["connected"] = False
    status["stateDir"] = str(settings.state_dir)
    status.update(_unit_state())
    return status


def _unit_state() -> dict[str, Any]:
    """For an installed systemd unit: its state, and a hint when it hit its start limit."""
    import shutil
    import subprocess

    unit = "relay-orchestrator.service"
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    if not (config / "systemd" / "user" / unit).exists() or not shutil.which("systemctl"):
        return {}
    try:
        out = subprocess.run(
            ["systemctl", "--user", "show", unit, "-p", "ActiveState,SubState,Result,NRestarts"],
            capture_output=True, text=True, timeout=10,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    state: dict[str, Any] = {"unit": {"name": unit, **props}}
    if props.get("Result") == "start-limit-hit":
        state["startLimitHit"] = (
            f"{unit} hit its start limit after repeated crashes; read its last lines with "
            f"`systemctl --user status {unit}`, fix the cause, then run "
            f"`systemctl --user reset-failed {unit}` and `systemctl --user start {unit}`"
        )
    return state


def _uptime(started_ms: object, now_ms: int) -> str:
    if not isinstance(started_ms, int):
        return "-"
    seconds = max(0, (now_ms - started_ms) // 1000)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def render_status(status: dict[str, Any], *, color: bool = False) -> str:
    def paint(text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if color else text

    relay = status.get("relay") or {}
    state = "running" if status.get("running") else "not running"
    conn = "connected" if relay.get("connected") else "disconnected"
    lines = [
        f"orchestrator {status.get('id') or '?'}  version {status.get('version') or '?'}  "
        f"{paint(state, '32' if status.get('running') else '31')}",
        f"supervisor   {status.get('supervisor') or '-'}"
        + (f" ({status['selfUnit']})" if status.get("selfUnit") else ""),
        f"relay        {relay.get('url') or '-'}  "
        f"{paint(conn, '32' if relay.get('connected') else '33')}"
        + (f"  last error: {relay['lastError']}" if relay.get("lastError") else ""),
    ]
    if status.get("startLimitHit"):
        lines.append(paint(str(status["startLimitHit"]), "31"))
    for warning in status.get("warnings") or []:
        lines.append(paint(f"warning      {warning}", "33"))
    agents = status.get("agents") or []
    lines.append(f"agents       {len(agents)}")
    if agents:
        now = int(time.time() * 1000)
        rows = [("AGENT", "STATUS", "PID", "UPTIME", "RESTARTS", "LAST EXIT", "BRANCH")]
        for agent in agents:
            exit_info = agent.get("exit") or {}
            last_exit = "-"
            if exit_info:
                last_exit = (f"signal {exit_info.get('signal')}" if exit_info.get("signal")
                             else f"code {exit_info.get('exitCode')}")
            workspace = agent.get("workspace") or {}
            rows.append((
                str(agent.get("label") or agent.get("agentId")),
                str(agent.get("status")),
                str(agent.get("pid") or "-"),
                _uptime(agent.get("startedAt"), now) if agent.get("status") == "running" else "-",
                str(agent.get("restartCount", 0)),
                last_exit,
                str(workspace.get("branch") or "-"),
            ))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for row in rows:
            cells = (cell.ljust(w) for cell, w in zip(row, widths, strict=True))
            lines.append("  " + "  ".join(cells))
    return "\n".join(lines)


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("status", help="the local view of this host's orchestrator")
    add_setting_flags(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    from ._service import settings_with_recorded

    settings = settings_with_recorded(args)
    status = local_status(settings)
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print(render_status(status, color=sys.stdout.isatty()))
    return EXIT_OK
