"""Shared bench plumbing: start an orchestrator subprocess, measure a process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
WORK = ROOT / "bench" / ".work"  # scratch state dirs (gitignored)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def start_orchestrator(relay_url: str, token: str, *, heartbeat: float = 10.0,
                       extra: list[str] | None = None, env: dict[str, str] | None = None,
                       workdir: Path | None = None, session: str = "plain",
                       wrapper: list[str] | None = None,
                       config_extra: str = "") -> tuple[subprocess.Popen[bytes], Path]:
    """The orchestrator on ``relay_url``, its config the ``command`` provider
    (``session``) and then ``config_extra`` (TOML: more providers, say)."""
    # Not in /tmp: creating a file or directory there can cost far more than
    # elsewhere on the same disk (docs/performance.md, Method), which would
    # be charged to every agent's directory, FIFO and log.
    WORK.mkdir(parents=True, exist_ok=True)
    work = workdir or Path(tempfile.mkdtemp(prefix="relay-bench-", dir=WORK))
    (work / "base").mkdir(exist_ok=True)
    config = work / "config.toml"
    config.write_text(f'[providers.command]\nenabled = true\nsession = "{session}"\n'
                      + config_extra)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_ORCHESTRATOR_")}
    full_env.update(env or {})
    full_env["RELAY_ORCHESTRATOR_TOKEN"] = token
    # BENCH_ORCH_PROFILE=<file>: run the orchestrator under cProfile (CPU time), writing <file>
    profile = os.environ.get("BENCH_ORCH_PROFILE")
    prefix = ["-c", _PROFILE_SHIM, profile] if profile else ["-m", "orchestrator"]
    # wrapper: a command the orchestrator runs under (valgrind, for bench/instructions.py)
    argv = [*(wrapper or []), sys.executable, *prefix, "run", "--relay-url", relay_url,
            "--config", str(config), "--state-dir", str(work / "state"),
            "--base-dir", str(work / "base"), "--supervisor", "none",
            "--heartbeat-interval", str(heartbeat), "--log-format", "json", "--id", "orch-bench",
            *(extra or [])]
    log = open(work / "orchestrator.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(argv, env=full_env, stdout=log, stderr=log, cwd=work)
    # BENCH_ORCH_PYSPY=<file>: sample it with py-spy for 20 s (collapsed stacks into <file>)
    pyspy = os.environ.get("BENCH_ORCH_PYSPY")
    if pyspy:
        spy = shutil.which("py-spy") or str(ROOT / "bench" / ".venv-peers" / "bin" / "py-spy")
        subprocess.Popen([spy, "record", "--nonblocking", "-r", "1000", "-f", "raw", "-d", "20",
                          "-o", pyspy, "--pid", str(proc.pid)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    return proc, work


_PROFILE_SHIM = """
import cProfile, signal, sys, time
out = sys.argv.pop(1)
sys.argv[0] = "relay-orchestrator"
from orchestrator.cli._main import main
profiler = cProfile.Profile(time.process_time)
try:
    profiler.runcall(main)
except SystemExit:
    pass
finally:
    profiler.dump_stats(out)
"""


def tmux_socket(work: Path) -> str:
    """The tmux socket (``tmux -L``) of the orchestrator whose scratch dir is ``work``."""
    from types import SimpleNamespace

    from orchestrator.daemon._app import tmux_socket as socket_of

    return socket_of(SimpleNamespace(state_dir=work / "state"))  # type: ignore[arg-type]


def kill_live_agents(agents: Iterable[dict[str, Any]]) -> None:
    """SIGKILL the process group of every agent a bench left live (by its reported pid)."""
    for agent in agents:
        if agent.get("status") in ("running", "starting", "stopping") and agent.get("pid"):
            try:
                os.killpg(int(agent["pid"]), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def kill_tmux(work: Path) -> None:
    """End the tmux server of that orchestrator (it outlives the orchestrator, by
    design), and remove its socket file (tmux leaves it)."""
    tmux = ["tmux", "-L", tmux_socket(work)]
    where = subprocess.run([*tmux, "display-message", "-p", "#{socket_path}"],
                           capture_output=True, text=True, check=False).stdout.strip()
    subprocess.run([*tmux, "kill-server"], capture_output=True, check=False)
    if where:
        Path(where).unlink(missing_ok=True)


def cpu_and_rss(pid: int) -> tuple[float, int]:
    p = psutil.Process(pid)
    t = p.cpu_times()
    return t.user + t.system, p.memory_info().rss


def write_json(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2))
    return path


def fmt_row(label: str, value: str, target: str) -> str:
    return f"  {label:<38} {value:>14}   target {target}"


median = statistics.median
