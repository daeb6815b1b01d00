"""``status``: the local view, from the status file the running process keeps.

The running orchestrator rewrites ``<state_dir>/status.json`` (atomically,
at most once a second) whenever its connection or an agent changes, and
after each sample of its agents' usage (every heartbeat); this module reads
it back and says whether that process is still alive.

Exit codes, as ``systemctl status``: 0 running, 3 not running, 1 when the
status cannot be told (a status file that cannot be read). Colour only on a
terminal, and never with ``NO_COLOR`` set (https://no-color.org) or
``TERM=dumb``. ``--watch`` redraws the view in place (``_watch.py``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from typing import Any

import psutil

from .._daemon_log import LogPlace
from .._errors import StatusUnreadable
from .._settings import Settings, add_setting_flags
from ..daemon._status import STATUS_FILE
from ._exit import EXIT_FAIL, EXIT_OK, EXIT_USAGE
from ._installed import daemon_log, systemd_unit_file
from ._service import settings_with_recorded
from ._watch import use_color, watch

EXIT_NOT_RUNNING = 3  # systemctl status: "program is not running"
# The status file's pid is another process when that process started later
# than the orchestrator that wrote it (the pid was reused, after a reboot say).
_STARTED_SLACK_MS = 2000


def read_status(settings: Settings) -> dict[str, Any]:
    """The status file, with ``running`` (its process alive) and ``stateDir``.

    Raises ``StatusUnreadable`` for a status file that exists but cannot be read.
    """
    path = settings.state_dir / STATUS_FILE
    try:
        status: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        _check_shape(status)
    except FileNotFoundError:
        status = {"id": settings.id, "running": False, "version": None, "supervisor": None,
                  "relay": {"url": settings.relay_url, "connected": False}, "agents": []}
    except (OSError, ValueError) as exc:
        if isinstance(exc, OSError):
            reason = exc.strerror
        elif isinstance(exc, json.JSONDecodeError | UnicodeDecodeError):
            reason = f"not valid JSON ({exc})"
        else:
            reason = f"not a status file: {exc}"
        raise StatusUnreadable(f"cannot read the status file {path}: {reason}") from exc
    pid = status.get("pid")
    process = _process(pid, status.get("startedAt")) if isinstance(pid, int) else None
    status["running"] = process is not None
    if process is None:
        status.setdefault("relay", {})["connected"] = False
    else:
        try:
            status["memoryRss"] = process.memory_info().rss
        except psutil.Error:
            pass
    status["stateDir"] = str(settings.state_dir)
    return status


def _check_shape(status: object) -> None:
    """ValueError unless ``status`` has the status file's shape where the
    commands rely on it (another program's JSON, or a file cut short)."""
    if not isinstance(status, dict):
        raise ValueError("not a JSON object")
    if not isinstance(status.get("relay", {}), dict):
        raise ValueError("its relay is not an object")
    agents = status.get("agents", [])
    if not isinstance(agents, list) or not all(isinstance(a, dict) for a in agents):
        raise ValueError("its agents are not a list of objects")


def local_status(settings: Settings) -> dict[str, Any]:
    """``read_status``, with ``log`` (where the log is) and, for an installed
    systemd unit, ``unit``."""
    status = read_status(settings)
    status["log"] = daemon_log(settings, status).to_json()
    status.update(_unit_state())
    return status


def _process(pid: int, started_ms: object) -> psutil.Process | None:
    """The orchestrator's process, if it is still there (not a zombie, not a later one)."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        later = isinstance(started_ms, int) and (
            proc.create_time() * 1000 > started_ms + _STARTED_SLACK_MS)
        return None if later else proc
    except psutil.Error:
        return None


def _unit_state() -> dict[str, Any]:
    """For an installed systemd unit: its state, and a hint when it hit its start limit."""
    unit_file = systemd_unit_file()
    unit = unit_file.name
    if not unit_file.exists() or not shutil.which("systemctl"):
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


# -- rendering -----------------------------------------------------------------


def uptime(started_ms: object, now_ms: int) -> str:
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


def size(count: object) -> str:
    """Bytes as ``512B``, ``12.0K``, ``71.3M``, ``1.2G`` (powers of 1024)."""
    if not isinstance(count, int) or isinstance(count, bool) or count <= 0:
        return "-"
    value = float(count)
    for unit in ("B", "K", "M", "G"):
        if value < 1024 or unit == "G":
            return f"{count}B" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return "-"  # not reached


_STATUS_COLORS = {"running": "32", "starting": "33", "stopping": "33", "exited": "31",
                  "failed": "31", "stopped": "2"}
_ACTIVITY_COLORS = {"ready": "32", "busy": "36", "asking": "33", "needs-login": "31"}
_LIVE = ("running", "starting", "stopping")


def _agent_row(agent: dict[str, Any], now: int) -> list[str]:
    exit_info = agent.get("exit") or {}
    last_exit = "-"
    if exit_info:
        last_exit = (f"signal {exit_info.get('signal')}" if exit_info.get("signal")
                     else f"code {exit_info.get('exitCode')}")
    live = agent.get("status") in _LIVE
    usage = (agent.get("usage") or {}) if live else {}
    cpu = usage.get("cpuPercent")
    workspace = agent.get("workspace") or {}
    return [
        str(agent.get("label") or agent.get("agentId")),
        str(agent.get("status")),
        str(agent.get("activity") or "-") if live else "-",
        str(agent.get("pid") or "-") if live else "-",
        uptime(agent.get("startedAt"), now) if live else "-",
        str(agent.get("restartCount", 0)),
        size(usage.get("memoryRss")),
        f"{cpu:.1f}%" if isinstance(cpu, int | float) and usage.get("memoryRss") else "-",
        last_exit,
        str(workspace.get("branch") or "-"),
    ]


HEADER = ["AGENT", "STATUS", "ACTIVITY", "PID", "UPTIME", "RESTARTS", "MEM", "CPU",
          "LAST EXIT", "BRANCH"]


def render_status(status: dict[str, Any], *, color: bool = False,
                  now_ms: int | None = None) -> str:
    def paint(text: str, code: str | None) -> str:
        return f"\033[{code}m{text}\033[0m" if color and code else text

    now = int(time.time() * 1000) if now_ms is None else now_ms
    relay = status.get("relay") or {}
    running = bool(status.get("running"))
    state = "running" if running else "not running"
    conn = "connected" if relay.get("connected") else "disconnected"
    lines = [
        f"orchestrator {status.get('id') or '?'}  version {status.get('version') or '?'}  "
        f"{paint(state, '32' if running else '31')}",
    ]
    if running:
        lines.append(f"process      pid {status.get('pid')}  "
                     f"up {uptime(status.get('startedAt'), now)}  "
                     f"memory {size(status.get('memoryRss'))}")
    lines.append(f"supervisor   {status.get('supervisor') or '-'}"
                 + (f" ({status['selfUnit']})" if status.get("selfUnit") else ""))
    unit = status.get("unit") or {}
    if unit:
        lines.append(f"unit         {unit.get('name')}  {unit.get('ActiveState', '?')}"
                     f" ({unit.get('SubState', '?')})  restarts {unit.get('NRestarts', '?')}")
    lines.append(f"relay        {relay.get('url') or '-'}  "
                 f"{paint(conn, '32' if relay.get('connected') else '33')}"
                 + (f"  last error: {relay['lastError']}" if relay.get("lastError") else ""))
    place = LogPlace.from_json(status.get("log"))
    if place is not None:
        lines.append(f"log          {place.describe()}")
    if status.get("startLimitHit"):
        lines.append(paint(str(status["startLimitHit"]), "31"))
    for warning in status.get("warnings") or []:
        lines.append(paint(f"warning      {warning}", "33"))
    agents = status.get("agents") or []
    lines.append(f"agents       {len(agents)}"
                 + ("" if running or not agents else "  (as the orchestrator last saw them)"))
    if agents:
        rows = [HEADER, *(_agent_row(agent, now) for agent in agents)]
        widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
        for n, row in enumerate(rows):
            cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
            if n:
                cells[1] = paint(cells[1], _STATUS_COLORS.get(row[1]))
                cells[2] = paint(cells[2], _ACTIVITY_COLORS.get(row[2]))
            lines.append(("  " + "  ".join(cells)).rstrip())
            question = agents[n - 1].get("question") if n else None
            if question and row[2] in ("asking", "needs-login"):
                first = str(question).strip().splitlines()[0] if str(question).strip() else ""
                lines.append(f"      asks: {first[:100]}")
    return "\n".join(lines)


def _view(settings: Settings, color: bool) -> str:
    """What ``--watch`` shows each time: the view, or why there is none."""
    try:
        return render_status(local_status(settings), color=color)
    except StatusUnreadable as exc:
        return str(exc)


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "status", help="the local view of this host's orchestrator and its agents",
        epilog="Exit status, as systemctl status's: 0 running, 3 not running, 1 when it "
               "cannot be told (an unreadable status file). Colour only on a terminal, never "
               "with NO_COLOR set.")
    add_setting_flags(p)
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.add_argument("--watch", action="store_true",
                   help="a live view, redrawn in place until Ctrl-C")
    p.add_argument("--interval", type=float, default=2.0, metavar="SECONDS",
                   help="--watch: seconds between redraws (default 2)")
    p.set_defaults(func=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    settings = settings_with_recorded(args)
    if args.watch:
        if args.json:
            print("relay-orchestrator: status: --watch and --json do not go together",
                  file=sys.stderr)
            return EXIT_USAGE
        if not 0.1 <= args.interval <= 3600:
            print("relay-orchestrator: status: --interval must be from 0.1 to 3600 seconds",
                  file=sys.stderr)
            return EXIT_USAGE
        return watch(lambda color: _view(settings, color), interval=args.interval)
    try:
        status = local_status(settings)
    except StatusUnreadable as exc:
        print(f"relay-orchestrator: {exc}", file=sys.stderr)
        return EXIT_FAIL
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print(render_status(status, color=use_color(sys.stdout)))
    return EXIT_OK if status["running"] else EXIT_NOT_RUNNING
