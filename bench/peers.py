"""relay-orchestrator beside the tools users would otherwise run (issue 8).

    python bench/peers.py [--n 50 200] [--repeat 3] [--idle 60] [--tools ...]
                          [--write-docs]

For N sleeping processes (``sleep 1000``) and each tool, measured on this
machine in one run, the tools interleaved and repeated:

- start: from the request to all N running. relay-orchestrator counts the
  whole path (N ``agent.spawn`` commands created at the dev relay → claimed
  → agents running → their ``running`` reports received by the relay), and
  beside it its local part (the relay receiving the first claim → the
  orchestrator's log line for the last agent started);
- crash: a SIGKILL of one process → the tool reports it (for us: the
  ``exited`` report received by the relay), once the start is over (for us:
  every spawn command settled); for us also one right after the burst,
  while the spawn commands still settle;
- restart: asking for one process to be restarted → it runs again (for us:
  an ``agent.restart`` created at the relay → the new agent's ``running``
  report received);
- the tool's own RSS, and its CPU while idle for ``--idle`` seconds, with the
  N processes running (first repetition only);
- for us also: ``orchestrator.shutdown`` → all N reported stopped.

The floor is a plain Popen loop. ``tmux`` rows: agents in tmux sessions
against a plain loop of ``tmux new-session -d``. supervisor and circus come
from PyPI and PM2 from npm, installed into ``bench/.venv-peers`` and
``bench/.node-peers`` (gitignored); a tool whose install fails is skipped
with the reason. ``systemd-run --user`` runs under the systemd sandbox
(``.ci/systemd-sandbox.sh``, its env file in /run/relay-orchestrator-ci)
when that can be had, as the sandbox's user.

Prints a markdown table (medians, ratios to the floor of the same N) and
writes bench/results/peers.json; ``--write-docs`` puts the table into
docs/performance.md between its ``peers`` markers.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import (  # noqa: E402
    ROOT,
    cpu_and_rss,
    kill_live_agents,
    start_orchestrator,
    write_json,
)

BENCH = ROOT / "bench"
PEERS_VENV = BENCH / ".venv-peers"
NODE_DIR = BENCH / ".node-peers"
TRIAL = BENCH / "_peer_trial.py"
SANDBOX_ENV = (
    Path(os.environ.get("RELAY_CI_STATE_DIR", "/run/relay-orchestrator-ci")) / "sandbox.env"
)
DOCS = ROOT / "docs" / "performance.md"
TOKEN = "bench-token"
ALL_TOOLS = ("floor", "orchestrator", "supervisord", "circus", "pm2", "systemd",
             "tmux-loop", "orchestrator-tmux")


# -- installs ---------------------------------------------------------------------------

def install_peers(tools: list[str]) -> dict[str, str]:
    """Install what the peers need; the reason for each tool that cannot run."""
    skipped: dict[str, str] = {}
    py_tools = [t for t in ("supervisord", "circus") if t in tools]
    if py_tools:
        python = PEERS_VENV / "bin" / "python"
        if not python.exists():
            made = subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)],
                                  capture_output=True, text=True)
            if made.returncode != 0:
                for tool in py_tools:
                    skipped[tool] = f"no venv: {made.stderr.strip()[-200:]}"
        for tool, package in (("supervisord", "supervisor"), ("circus", "circus")):
            if tool in py_tools and tool not in skipped:
                got = subprocess.run([str(python), "-m", "pip", "install", "-q", package],
                                     capture_output=True, text=True)
                if got.returncode != 0:
                    skipped[tool] = f"pip install {package} failed: {got.stderr.strip()[-200:]}"
    if "pm2" in tools:
        if shutil.which("npm") is None or shutil.which("node") is None:
            skipped["pm2"] = "npm/node not on PATH"
        elif not (NODE_DIR / "node_modules" / "pm2").exists():
            NODE_DIR.mkdir(exist_ok=True)
            got = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error",
                                  "--prefix", str(NODE_DIR), "pm2"], capture_output=True, text=True)
            if got.returncode != 0:
                skipped["pm2"] = f"npm install pm2 failed: {got.stderr.strip()[-200:]}"
    if "systemd" in tools:
        reason = sandbox_unavailable()
        if reason:
            skipped["systemd"] = reason
    if any(t in tools for t in ("tmux-loop", "orchestrator-tmux")) and not shutil.which("tmux"):
        skipped["tmux-loop"] = skipped["orchestrator-tmux"] = "tmux not on PATH"
    return skipped


def sandbox_env() -> dict[str, str]:
    return dict(line.split("=", 1) for line in SANDBOX_ENV.read_text().splitlines() if "=" in line)


def sandbox_unavailable() -> str | None:
    if not SANDBOX_ENV.exists():
        if os.geteuid() != 0:
            return "no systemd sandbox, and only root can start one"
        started = subprocess.run(["bash", str(ROOT / ".ci" / "systemd-sandbox.sh"), "start"],
                                 capture_output=True, text=True, timeout=180)
        if started.returncode != 0:
            return f"the systemd sandbox did not start: {started.stderr.strip()[-200:]}"
    if os.geteuid() not in (0, int(sandbox_env()["RELAY_CI_UID"])):
        return "the systemd sandbox runs as another user"
    return None


# -- one trial --------------------------------------------------------------------------

def run_trial(tool: str, n: int, idle: float) -> dict[str, Any]:
    if tool in ("orchestrator", "orchestrator-tmux"):
        return trio.run(orchestrator_trial, n, idle, "tmux" if tool.endswith("tmux") else "plain")
    argv = [str(TRIAL), {"tmux-loop": "tmux-loop"}.get(tool, tool), "--n", str(n),
            "--idle", str(idle)]
    kwargs: dict[str, Any] = {}
    env = dict(os.environ, BENCH_PM2_MODULES=str(NODE_DIR / "node_modules"))
    if tool in ("supervisord", "circus"):
        argv.insert(0, str(PEERS_VENV / "bin" / "python"))
    elif tool == "systemd":
        raw = sandbox_env()
        uid = int(raw["RELAY_CI_UID"])
        argv.insert(0, "/usr/bin/python3")
        env = {"HOME": raw["RELAY_CI_HOME"], "USER": raw["RELAY_CI_USER"], "PATH": "/usr/bin:/bin",
               "XDG_RUNTIME_DIR": raw["XDG_RUNTIME_DIR"],
               "DBUS_SESSION_BUS_ADDRESS": raw["DBUS_SESSION_BUS_ADDRESS"]}
        if os.geteuid() != uid:
            kwargs.update(user=uid, group=pwd.getpwuid(uid).pw_gid, extra_groups=[], cwd="/")
    else:
        argv.insert(0, sys.executable)
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900, **kwargs)
    if done.returncode != 0:
        raise RuntimeError(f"{tool} trial failed: {done.stderr.strip()[-600:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def spawn_params(base: Path, agent_id: str) -> dict[str, Any]:
    return {"provider": "command", "agentId": agent_id, "cwd": str(base),
            "providerArgs": ["/bin/sleep", "1000"]}


def relay_agents(relay: Any) -> dict[str, dict[str, Any]]:
    """The relay's own record of our agents, read in place (no copy: the
    predicates run on every change at the relay, and must not slow it)."""
    orch = relay._store.orchestrators.get("orch-bench")
    return orch.agents if orch is not None else {}


async def orchestrator_trial(n: int, idle: float, session: str) -> dict[str, Any]:
    from orchestrator.devrelay._actions import agent_action
    from orchestrator.devrelay._relay import serve_dev_relay

    async with trio.open_nursery() as nursery:
        relay = await nursery.start(lambda task_status: serve_dev_relay(
            token=TOKEN, task_status=task_status))
        store = relay._store
        claims: list[float] = []
        proc, work = start_orchestrator(relay.url, TOKEN, session=session)
        base = work / "base"
        target = "orch:orch-bench"
        ids = [f"bench-{i}" for i in range(n)]
        try:
            with trio.fail_after(30):
                await relay.wait_for(lambda: (relay.orchestrator("orch-bench") or {})
                                     .get("status") == "online")
            await trio.sleep(0.5)  # the stream connects right after registration

            def running(agent_ids: list[str], pids: dict[str, int] | None = None) -> bool:
                agents = relay_agents(relay)
                return all(agents.get(a, {}).get("status") == "running"
                           and (pids is None or agents[a].get("pid") != pids.get(a))
                           for a in agent_ids)

            cpu_o, _ = cpu_and_rss(proc.pid)
            cpu_r = time.process_time()
            t_wall, t0 = time.time(), time.perf_counter()
            created = [relay.create_command(target, "agent.spawn", spawn_params(base, a))["id"]
                       for a in ids]

            async def first_claim_seen() -> None:  # woken on the relay's first change of them
                await relay.wait_for(lambda: any(relay.get_command(c)["status"] != "pending"
                                                 for c in created))
                claims.append(time.time())

            nursery.start_soon(first_claim_seen)
            with trio.fail_after(120):
                await relay.wait_for(lambda: running(ids))
            whole = time.perf_counter() - t0
            first_claim = min(claims) if claims else t_wall
            starts = [line["ts"] for line in _log_lines(work)
                      if line.get("msg", "").startswith("agent bench-")
                      and " started (pid " in line.get("msg", "")]
            local = max(starts) - first_claim if len(starts) >= n else None
            if os.environ.get("BENCH_TIMELINE"):
                starts.sort()
                print(f"timeline: created→first claim {first_claim - t_wall:.3f}s, first start "
                      f"{starts[0] - t_wall:.3f}s, median start "
                      f"{starts[len(starts) // 2] - t_wall:.3f}s, "
                      f"last start {starts[-1] - t_wall:.3f}s, all reported {whole:.3f}s; CPU: "
                      f"orchestrator {cpu_and_rss(proc.pid)[0] - cpu_o:.3f}s, relay+bench "
                      f"{time.process_time() - cpu_r:.3f}s",
                      file=sys.stderr)
            pids = {a: int(agent["pid"]) for a, agent in relay_agents(relay).items()}
            # crash right after the burst: the orchestrator still settles the N
            # spawn commands (the peers have nothing left to do at this point)
            t0 = time.perf_counter()
            os.kill(pids[ids[2]], signal.SIGKILL)
            with trio.fail_after(30):
                await relay.wait_for(lambda: relay_agents(relay)[ids[2]]["status"] == "exited")
            crash_busy = time.perf_counter() - t0
            with trio.fail_after(60):  # every spawn command settled: idle, as the peers are
                await relay.wait_for(lambda: all(
                    relay.get_command(c)["status"] in ("succeeded", "failed") for c in created))
            # crash: SIGKILL one agent → its `exited` report at the relay
            t0 = time.perf_counter()
            os.kill(pids[ids[0]], signal.SIGKILL)
            with trio.fail_after(30):
                await relay.wait_for(lambda: relay_agents(relay)[ids[0]]["status"] == "exited")
            crash = time.perf_counter() - t0
            # restart one: agent.restart created at the relay → the new agent's `running`
            t0 = time.perf_counter()
            agent_action(store, ids[1], {"action": "restart"})
            with trio.fail_after(30):
                await relay.wait_for(lambda: running([ids[1]], pids))
            restart = time.perf_counter() - t0
            await trio.sleep(1)  # the reports settle; then idle
            cpu0, _ = cpu_and_rss(proc.pid)
            t_idle = time.perf_counter()
            await trio.sleep(idle)
            cpu1, rss = cpu_and_rss(proc.pid)
            idle_cpu = (cpu1 - cpu0) / (time.perf_counter() - t_idle) * 100 if idle > 0 else None
            # stop all: orchestrator.shutdown → every agent reported stopped
            t0 = time.perf_counter()
            relay.create_command(target, "orchestrator.shutdown", {})
            live = [a for a in ids if a not in (ids[0], ids[2])]
            with trio.fail_after(60):
                await relay.wait_for(lambda: all(relay_agents(relay)[a]["status"] == "stopped"
                                                 for a in live))
            stop_all = time.perf_counter() - t0
        finally:
            kill_live_agents(relay_agents(relay).values())
            proc.terminate()
            proc.wait(10)
            if session == "tmux":  # the orchestrator leaves its tmux server up, by design
                subprocess.run(["tmux", "-L", _tmux_socket(work / "state"), "kill-server"],
                               capture_output=True, check=False)
            nursery.cancel_scope.cancel()
    shutil.rmtree(work, ignore_errors=True)
    return {"start": whole, "local": local, "crash": crash, "crash_busy": crash_busy,
            "restart": restart, "rss": rss,
            "idle_cpu": idle_cpu, "stop_all": stop_all, "daemon": "relay-orchestrator"}


def _tmux_socket(state_dir: Path) -> str:
    from types import SimpleNamespace

    from orchestrator.daemon._app import tmux_socket

    return tmux_socket(SimpleNamespace(state_dir=state_dir))  # type: ignore[arg-type]


def _log_lines(work: Path) -> list[dict[str, Any]]:
    lines = []
    for raw in (work / "orchestrator.log").read_text(errors="replace").splitlines():
        try:
            lines.append(json.loads(raw))
        except ValueError:
            pass
    return lines


# -- the table --------------------------------------------------------------------------

LABELS = {
    "floor": "fork/exec floor (Popen loop)",
    "orchestrator": "relay-orchestrator, whole path",
    "orchestrator-local": "relay-orchestrator, local part",
    "supervisord": "supervisord (startsecs 0)",
    "circus": "circus",
    "pm2": "PM2",
    "systemd": "systemd-run --user",
    "tmux-loop": "tmux floor (`new-session -d` loop)",
    "orchestrator-tmux": "relay-orchestrator, tmux sessions, whole path",
}


def med(values: list[Any]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(
    runs: dict[str, dict[int, list[dict[str, Any]]]], ns: list[int],
) -> list[dict[str, Any]]:
    rows = []
    for n in ns:
        floor = {"plain": runs.get("floor", {}).get(n, []),
                 "tmux": runs.get("tmux-loop", {}).get(n, [])}

        def ratio(
            trials: list[dict[str, Any]], key: str, kind: str, floor: dict[str, Any] = floor,
        ) -> float | None:
            pairs = [t[key] / f["start"] for t, f in zip(trials, floor[kind], strict=False)
                     if t.get(key) is not None and f.get("start")]
            return statistics.median(pairs) if pairs else None

        for tool in ALL_TOOLS:
            trials = runs.get(tool, {}).get(n, [])
            if not trials:
                continue
            kind = "tmux" if "tmux" in tool else "plain"
            row = {"tool": tool, "n": n, "runs": len(trials),
                   "start": med([t["start"] for t in trials]),
                   "ratio": ratio(trials, "start", kind),
                   "crash": med([t.get("crash") for t in trials]),
                   "restart": med([t.get("restart") for t in trials]),
                   "rss": med([t.get("rss") for t in trials]),
                   "idle_cpu": med([t.get("idle_cpu") for t in trials]),
                   "stop_all": med([t.get("stop_all") for t in trials]),
                   "crash_busy": med([t.get("crash_busy") for t in trials])}
            rows.append(row)
            if tool == "orchestrator":
                rows.append({"tool": "orchestrator-local", "n": n, "runs": len(trials),
                             "start": med([t.get("local") for t in trials]),
                             "ratio": ratio(trials, "local", "plain")})
    return rows


def _fmt(value: float | None, scale: float, unit: str, digits: int) -> str:
    return "–" if value is None else f"{value * scale:.{digits}f} {unit}".strip()


def markdown(rows: list[dict[str, Any]]) -> str:
    out = ["| tool | N | start | × floor | crash noticed | restart one | RSS | idle CPU |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        out.append("| " + " | ".join([
            LABELS[r["tool"]], str(r["n"]), _fmt(r["start"], 1, "s", 3),
            "–" if r.get("ratio") is None else f"{r['ratio']:.2f}",
            _fmt(r.get("crash"), 1000, "ms", 1), _fmt(r.get("restart"), 1000, "ms", 1),
            _fmt(r.get("rss"), 1e-6, "MB", 1), _fmt(r.get("idle_cpu"), 1, "%", 3),
        ]) + " |")
    notes = [("crash_busy", "crash noticed right after the burst, while the N spawn commands "
                            "still settle: {}", 1000, "ms", 1),
             ("stop_all", "`orchestrator.shutdown` → all reported stopped in {}", 1, "s", 3)]
    for key, text, scale, unit, digits in notes:
        ours = [r for r in rows if r.get(key) is not None]
        if ours:
            out.append("")
            out += [f"relay-orchestrator{' (tmux)' if 'tmux' in r['tool'] else ''}, "
                    f"N = {r['n']}: " + text.format(_fmt(r[key], scale, unit, digits))
                    for r in ours]
    return "\n".join(out)


def write_docs(table: str, meta: str) -> None:
    begin, end = "<!-- peers:begin -->", "<!-- peers:end -->"
    text = DOCS.read_text() if DOCS.exists() else f"# Performance\n\n{begin}\n{end}\n"
    if begin not in text:
        text += f"\n{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    DOCS.write_text(f"{head}{begin}\n{meta}\n\n{table}\n{end}{tail}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[50, 200])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--idle", type=float, default=60.0, help="idle window, seconds (0: skip)")
    ap.add_argument("--tools", nargs="+", default=list(ALL_TOOLS), choices=ALL_TOOLS)
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args()
    tools = list(args.tools)
    if "orchestrator" in tools or "orchestrator-local" in tools:
        tools = [t for t in tools if t != "floor"]
        tools.insert(0, "floor")  # every ratio needs it
    if "orchestrator-tmux" in tools and "tmux-loop" not in tools:
        tools.insert(0, "tmux-loop")
    skipped = install_peers(tools)
    for tool, reason in skipped.items():
        print(f"skipping {tool}: {reason}", file=sys.stderr)
    tools = [t for t in tools if t not in skipped]
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {}
    failures: list[str] = []
    started = time.time()
    for rep in range(args.repeat):
        for n in args.n:
            order = tools[rep % len(tools):] + tools[:rep % len(tools)]  # interleaved, rotated
            for tool in order:
                idle = args.idle if rep == 0 else 0.0
                try:
                    result = run_trial(tool, n, idle)
                except Exception as exc:  # one tool failing must not lose the others
                    failures.append(f"{tool} N={n} rep {rep}: {exc}")
                    print(f"  {failures[-1]}", file=sys.stderr)
                    continue
                runs.setdefault(tool, {}).setdefault(n, []).append(result)
                print(f"  rep {rep + 1}/{args.repeat} N={n} {tool}: start "
                      f"{result['start']:.3f} s", file=sys.stderr)
    rows = summarize(runs, args.n)
    table = markdown(rows)
    meta = (f"Measured {time.strftime('%Y-%m-%d', time.gmtime(started))} on this project's "
            f"machine ({os.cpu_count()} cores): N × `sleep 1000`, medians of {args.repeat} "
            f"interleaved runs, idle CPU over {args.idle:g} s (first run)."
            + (f" Skipped: {'; '.join(f'{t}: {r}' for t, r in skipped.items())}." if skipped
               else ""))
    print(meta)
    print()
    print(table)
    path = write_json("peers", {"n": args.n, "repeat": args.repeat, "idle_seconds": args.idle,
                                "rows": rows, "runs": runs, "skipped": skipped,
                                "failures": failures,
                                "targets": {"plain_whole_ratio": 2.5, "plain_local_ratio": 1.5,
                                            "tmux_whole_ratio": 1.5, "stop_all_seconds": 0.1}})
    print(f"\nwrote {path}", file=sys.stderr)
    if args.write_docs:
        write_docs(table, meta)
        print(f"wrote {DOCS}", file=sys.stderr)
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
