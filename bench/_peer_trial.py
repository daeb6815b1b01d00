"""One trial of one peer tool; run by bench/peers.py, prints one JSON object.

    python bench/_peer_trial.py TOOL --n N --idle SECONDS [--workdir DIR]

TOOL: ``floor`` (a Popen loop), ``supervisord``, ``circus``, ``pm2``,
``systemd`` (``systemd-run --user``; run this as the sandbox's user),
``tmux-loop`` (``tmux new-session -d`` N times). Every tool manages N
named processes of ``sleep 1000``; each trial measures, in seconds:

- ``start``: from the request to all N running;
- ``crash``: from a SIGKILL of one to the tool reporting it (its own API);
- ``restart``: from asking the tool to restart one to it running again;
- ``rss`` (bytes) and ``idle_cpu`` (% of one core, over ``--idle`` s) of the
  tool's own daemon with the N processes running (``--idle 0``: skipped).

Standard library only, plus the tool's own client library where it has one
(supervisor, circus: this runs in the bench's peers venv for those). Kills
only what it started, by pid, and stops its own daemons.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SLEEP = ["/bin/sleep", "1000"]
POLL = 0.001
TICKS = os.sysconf("SC_CLK_TCK")


# -- /proc: RSS and CPU of a pid (no psutil: this also runs as the sandbox user) ------

def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int) -> float:
    data = Path(f"/proc/{pid}/stat").read_bytes()
    fields = data[data.rfind(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def idle_cpu(pid: int, seconds: float) -> float | None:
    if seconds <= 0:
        return None
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - c0) / (time.monotonic() - t0) * 100


def wait_until(predicate: Any, timeout: float, what: str, poll: float = POLL) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(poll)


def kill_pids(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# -- floor: a Popen loop ----------------------------------------------------------------

def trial_floor(n: int, idle: float, work: Path) -> dict[str, Any]:
    devnull = subprocess.DEVNULL
    t0 = time.perf_counter()
    procs = [subprocess.Popen(SLEEP, stdin=devnull, stdout=devnull, stderr=devnull,
                              start_new_session=True) for _ in range(n)]
    start = time.perf_counter() - t0
    try:
        victim = procs[0]
        fd = os.pidfd_open(victim.pid)
        t0 = time.perf_counter()
        os.kill(victim.pid, signal.SIGKILL)
        select.select([fd], [], [])
        victim.wait()
        crash = time.perf_counter() - t0
        os.close(fd)
        t0 = time.perf_counter()
        procs[1].kill()
        procs[1].wait()
        procs[1] = subprocess.Popen(SLEEP, stdin=devnull, stdout=devnull, stderr=devnull,
                                    start_new_session=True)
        restart = time.perf_counter() - t0
        return {"start": start, "crash": crash, "restart": restart, "rss": rss(os.getpid()),
                "idle_cpu": idle_cpu(os.getpid(), idle), "daemon": "the Popen loop's python"}
    finally:
        kill_pids([p.pid for p in procs])
        for p in procs:
            p.wait()


# -- supervisord ------------------------------------------------------------------------

def trial_supervisord(n: int, idle: float, work: Path) -> dict[str, Any]:
    import xmlrpc.client

    from supervisor.xmlrpc import SupervisorTransport  # the peers venv has it

    sock = work / "supervisor.sock"
    conf = work / "supervisord.conf"
    lines = [
        "[unix_http_server]", f"file={sock}", "",
        "[supervisord]", "nodaemon=true", f"logfile={work / 'supervisord.log'}",
        f"pidfile={work / 'supervisord.pid'}", "loglevel=warn", "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface", "",
    ]
    for i in range(n):
        lines += [f"[program:p{i}]", f"command={' '.join(SLEEP)}", "autostart=false",
                  "autorestart=false", "startsecs=0", "stdout_logfile=NONE",
                  "stderr_logfile=NONE", ""]
    conf.write_text("\n".join(lines))
    daemon = subprocess.Popen([str(Path(sys.executable).parent / "supervisord"), "-c", str(conf)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    def proxy() -> Any:
        return xmlrpc.client.ServerProxy(
            "http://127.0.0.1", transport=SupervisorTransport(None, None, f"unix://{sock}"))

    rpc = proxy()
    children: list[int] = []
    try:
        def up() -> bool:
            try:
                return proxy().supervisor.getState()["statename"] == "RUNNING"
            except (OSError, xmlrpc.client.Error):
                return False

        wait_until(up, 30, "supervisord", poll=0.01)
        t0 = time.perf_counter()
        rpc.supervisor.startAllProcesses(True)
        infos = rpc.supervisor.getAllProcessInfo()
        start = time.perf_counter() - t0
        assert all(i["statename"] == "RUNNING" for i in infos), infos
        children = [i["pid"] for i in infos]
        victim = rpc.supervisor.getProcessInfo("p0")["pid"]
        t0 = time.perf_counter()
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: rpc.supervisor.getProcessInfo("p0")["statename"] != "RUNNING",
                   30, "supervisord to notice")
        crash = time.perf_counter() - t0
        t0 = time.perf_counter()
        rpc.supervisor.stopProcess("p1", True)
        rpc.supervisor.startProcess("p1", True)
        restart = time.perf_counter() - t0
        children = [i["pid"] for i in rpc.supervisor.getAllProcessInfo() if i["pid"]]
        return {"start": start, "crash": crash, "restart": restart, "rss": rss(daemon.pid),
                "idle_cpu": idle_cpu(daemon.pid, idle), "daemon": "supervisord"}
    finally:
        try:
            rpc.supervisor.shutdown()
            daemon.wait(30)
        except Exception:
            daemon.kill()
            daemon.wait()
        kill_pids(children)


# -- circus -----------------------------------------------------------------------------

def trial_circus(n: int, idle: float, work: Path) -> dict[str, Any]:
    from circus.client import CircusClient  # the peers venv has it

    endpoint = f"ipc://{work / 'circus.sock'}"
    conf = work / "circus.ini"
    lines = ["[circus]", f"endpoint = {endpoint}", f"pubsub_endpoint = ipc://{work / 'pub.sock'}",
             "statsd = False", "check_delay = 5", ""]
    for i in range(n):
        lines += [f"[watcher:p{i}]", f"cmd = {' '.join(SLEEP)}", "numprocesses = 1",
                  "respawn = False", "copy_env = True", ""]
    conf.write_text("\n".join(lines))
    daemon = subprocess.Popen([str(Path(sys.executable).parent / "circusd"), str(conf)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = CircusClient(endpoint=endpoint, timeout=30)
    children: list[int] = []

    def call(command: str, **properties: Any) -> dict[str, Any]:
        answer: dict[str, Any] = client.call({"command": command, "properties": properties})
        if answer.get("status") != "ok":
            raise RuntimeError(f"circus {command}: {answer}")
        return answer

    def pids(name: str) -> list[int]:
        return [int(p) for p in call("list", name=name).get("pids", [])]

    try:
        def up() -> bool:
            try:
                return client.call({"command": "status", "properties": {}}).get("status") == "ok"
            except Exception:
                return False

        wait_until(up, 30, "circusd", poll=0.05)
        # circusd starts its watchers as it comes up; stop them, so that one
        # "start" request is what is timed (as startAllProcesses for supervisord)
        wait_until(lambda: all(pids(f"p{i}") for i in range(n)), 60, "circus watchers")
        wait_until(lambda: _try(lambda: call("stop", waiting=True)), 30, "circus to take stop",
                   poll=0.05)
        wait_until(lambda: not any(pids(f"p{i}") for i in range(n)), 60, "circus to stop")
        t0 = time.perf_counter()
        call("start", waiting=True)
        wait_until(lambda: all(pids(f"p{i}") for i in range(n)), 60, "circus watchers")
        start = time.perf_counter() - t0
        victim = pids("p0")[0]
        t0 = time.perf_counter()
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: victim not in pids("p0"), 30, "circus to notice")
        crash = time.perf_counter() - t0
        t0 = time.perf_counter()
        call("restart", name="p1", waiting=True)
        wait_until(lambda: bool(pids("p1")), 30, "circus restart")
        restart = time.perf_counter() - t0
        children = [pid for i in range(n) for pid in pids(f"p{i}")]
        return {"start": start, "crash": crash, "restart": restart, "rss": rss(daemon.pid),
                "idle_cpu": idle_cpu(daemon.pid, idle), "daemon": "circusd"}
    finally:
        try:
            call("quit", waiting=True)
            daemon.wait(30)
        except Exception:
            daemon.kill()
            daemon.wait()
        kill_pids(children)


def _try(fn: Any) -> bool:
    try:
        fn()
    except RuntimeError:
        return False
    return True


# -- PM2 --------------------------------------------------------------------------------

PM2_DRIVER = Path(__file__).resolve().parent / "_pm2_driver.js"


def trial_pm2(n: int, idle: float, work: Path) -> dict[str, Any]:
    modules = Path(os.environ["BENCH_PM2_MODULES"])
    env = dict(os.environ, PM2_HOME=str(work / "pm2"), NODE_PATH=str(modules))
    pm2 = [str(modules / ".bin" / "pm2")]
    driver = subprocess.run(["node", str(PM2_DRIVER), str(n)], env=env, capture_output=True,
                            text=True, timeout=300)
    try:
        if driver.returncode != 0:
            raise RuntimeError(f"pm2 driver failed: {driver.stderr.strip()[-500:]}")
        last = [line for line in driver.stdout.splitlines() if line.startswith("{")][-1]
        result: dict[str, Any] = json.loads(last)
        god = int((work / "pm2" / "pm2.pid").read_text())
        result.update(rss=rss(god), idle_cpu=idle_cpu(god, idle), daemon="PM2 God daemon")
        return result
    finally:
        children = []
        listing = subprocess.run([*pm2, "jlist"], env=env, capture_output=True, text=True,
                                 timeout=60)
        try:
            listed = json.loads(listing.stdout[listing.stdout.index("["):])
            children = [int(app["pid"]) for app in listed if app.get("pid")]
        except ValueError:
            pass
        subprocess.run([*pm2, "kill"], env=env, capture_output=True, timeout=60)
        kill_pids(children)


# -- systemd --user (run as the sandbox user) -------------------------------------------

def _systemctl(*args: str) -> str:
    return subprocess.run(["systemctl", "--user", *args], capture_output=True, text=True,
                          check=True).stdout


def _show(unit: str, *props: str) -> dict[str, str]:
    out = _systemctl("show", "-p", ",".join(props), "--", unit)
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def trial_systemd(n: int, idle: float, work: Path) -> dict[str, Any]:
    tag = f"relaybench-{os.getpid()}"
    units = [f"{tag}-p{i}.service" for i in range(n)]
    try:
        t0 = time.perf_counter()
        for unit in units:  # systemd-run returns once the unit's process runs
            subprocess.run(["systemd-run", "--user", "--quiet", "--collect", f"--unit={unit}",
                            "--", *SLEEP], check=True, capture_output=True)
        start = time.perf_counter() - t0
        victim = int(_show(units[0], "MainPID")["MainPID"])
        t0 = time.perf_counter()
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: _show(units[0], "ActiveState")["ActiveState"] != "active", 30,
                   "systemd to notice")
        crash = time.perf_counter() - t0
        t0 = time.perf_counter()
        _systemctl("restart", units[1])
        restart = time.perf_counter() - t0
        manager = int(_show("init.scope", "MainPID").get("MainPID") or 0) or _manager_pid()
        return {"start": start, "crash": crash, "restart": restart, "rss": rss(manager),
                "idle_cpu": idle_cpu(manager, idle), "daemon": "systemd --user (shared)"}
    finally:
        subprocess.run(["systemctl", "--user", "stop", "--", *units], capture_output=True)
        subprocess.run(["systemctl", "--user", "reset-failed", "--", *units],
                       capture_output=True)


def _manager_pid() -> int:
    out = subprocess.run(["pgrep", "-u", str(os.getuid()), "-x", "systemd"],
                         capture_output=True, text=True).stdout.split()
    return int(out[0])


# -- tmux: a plain loop of new-session -d -----------------------------------------------

def trial_tmux_loop(n: int, idle: float, work: Path) -> dict[str, Any]:
    socket_name = f"relaybench-{os.getpid()}"
    tmux = ["tmux", "-L", socket_name]
    try:
        t0 = time.perf_counter()
        for i in range(n):
            subprocess.run([*tmux, "new-session", "-d", "-s", f"s{i}", *SLEEP], check=True)
        start = time.perf_counter() - t0
        server = int(subprocess.run([*tmux, "display-message", "-p", "#{pid}"],
                                    capture_output=True, text=True).stdout)
        return {"start": start, "rss": rss(server), "idle_cpu": idle_cpu(server, idle),
                "daemon": "tmux server"}
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)


TRIALS = {
    "floor": trial_floor,
    "supervisord": trial_supervisord,
    "circus": trial_circus,
    "pm2": trial_pm2,
    "systemd": trial_systemd,
    "tmux-loop": trial_tmux_loop,
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("tool", choices=sorted(TRIALS))
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--idle", type=float, default=0.0)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix=f"relaybench-{args.tool}-"))
    try:
        result = TRIALS[args.tool](args.n, args.idle, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
