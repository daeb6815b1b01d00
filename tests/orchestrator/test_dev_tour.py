"""What a new user sees: ``dev``, ``dev --demo`` and the README's own commands."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from ..conftest import cli_env

ROOT = Path(__file__).resolve().parents[2]


def read_until(proc: subprocess.Popen[str], pattern: str, timeout: float = 60) -> list[str]:
    """Lines of stdout up to the first matching ``pattern`` (bounded)."""
    import queue
    import threading

    assert proc.stdout is not None
    stream = proc.stdout
    lines: list[str] = []
    q: queue.Queue[str | None] = getattr(proc, "_lines_q", None) or queue.Queue()
    if not hasattr(proc, "_lines_q"):
        proc._lines_q = q  # type: ignore[attr-defined]

        def pump() -> None:
            for line in stream:
                q.put(line.rstrip("\n"))
            q.put(None)

        threading.Thread(target=pump, daemon=True).start()
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            line = q.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            break
        lines.append(line)
        if re.search(pattern, line):
            return lines
        if time.monotonic() > deadline:
            break
    raise AssertionError(f"no line matching {pattern!r} within {timeout}s; got:\n"
                         + "\n".join(lines))


def descendants(pid: int) -> list[int]:
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def left_behind(home: Path) -> list[str]:
    """Processes still running with this test's HOME (agents, tmux servers…)."""
    found = []
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            if p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if p.environ().get("HOME") == str(home):
                found.append(f"{p.pid} {' '.join(p.info['cmdline'] or [])}")
        except (psutil.Error, OSError):
            continue
    return found


def end_left_behind(home: Path) -> None:
    """End what this test's HOME still runs (by pid: only this test's own)."""
    for line in left_behind(home):
        try:
            psutil.Process(int(line.split()[0])).kill()
        except psutil.Error:
            pass


def stop_and_check_clean(proc: subprocess.Popen[str], agent_pids: list[int],
                         home: Path | None = None) -> None:
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=15) == 0
    for pid in agent_pids:
        alive = psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        assert not alive, f"dev left agent {pid} behind"
    if home is not None:
        assert left_behind(home) == []


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    h = tmp_path / "home"
    h.mkdir()
    yield h


def dev_env(home: Path) -> dict[str, str]:
    env = cli_env(HOME=str(home), PYTHONUNBUFFERED="1")
    for key in ("XDG_STATE_HOME", "XDG_CONFIG_HOME", "TMUX"):
        env.pop(key, None)
    return env


def test_dev_demo_walks_through_and_leaves_nothing_behind(home: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "dev", "--demo", "--log-format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=dev_env(home),
        cwd=home,
    )
    try:
        lines = read_until(proc, r"^demo done", timeout=90)
        text = "\n".join(lines)
        url = re.search(r"dev relay:\s+(\S+)", text)[1]  # type: ignore[index]
        token = re.search(r"token:\s+(\S+)", text)[1]  # type: ignore[index]
        for step in ("[demo 1/4] spawning", "[demo 2/4] compacting", "reloaded NOTES.md",
                     "[demo 3/4] restarting", "[demo 4/4] stopping"):
            assert step in text
        orchs = httpx.get(f"{url}/api/orchestrators", headers={"Authorization": f"Bearer {token}"},
                          trust_env=False).json()
        orchs = orchs.get("orchestrators", orchs) if isinstance(orchs, dict) else orchs
        agents = orchs[0]["agents"]
        demo = next(a for a in agents if a["agentId"] == "ag_demo")
        assert demo["status"] == "running" and demo["restartCount"] >= 1
        log = next(home.glob(".local/state/relay-orchestrator/dev/agents/ag_demo/output.log"))
        content = log.read_text()
        assert "got: /compact" in content
        assert "got: Remember: the relay is the source of truth." in content
        stop_and_check_clean(proc, [demo["pid"]], home)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()


def readme_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```sh\n(.*?)\n```", text, re.S)


def test_readme_starts_with_the_two_commands() -> None:
    blocks = readme_blocks()
    assert "relay-orchestrator dev" in blocks[0]
    assert "pytest" in blocks[1]
    ci = (ROOT / ".ci" / "run").read_text()
    test_cmd = blocks[1].split("&&")[-1].strip()
    assert test_cmd in ci, "CI must run the README's test command"


@pytest.mark.slow
def test_readme_commands_work_as_written(tmp_path: Path, home: Path) -> None:
    """Install and run ``dev`` exactly as the README says; use the curl line it prints."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    checkout = tmp_path / "checkout"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        src = ROOT / name
        if src.is_file():
            dst = checkout / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    install_and_dev = readme_blocks()[0]
    env = dev_env(home)
    proc = subprocess.Popen(["bash", "-c", install_and_dev], cwd=checkout, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    try:
        lines = read_until(proc, r"^Ctrl-C", timeout=300)
        spawn_line = lines[lines.index("spawn a demo agent:") + 1].strip()
        out = subprocess.run(["bash", "-c", spawn_line], capture_output=True, text=True,
                             timeout=30, env=env)
        assert out.returncode == 0, out.stderr
        assert '"type":"agent.spawn"' in out.stdout.replace(" ", "")
        see = lines[lines.index("see the commands:") + 1].strip()
        import json
        import time

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            cmds = json.loads(subprocess.run(["bash", "-c", see], capture_output=True,
                                             text=True, timeout=30, env=env).stdout)
            cmds = cmds.get("commands", cmds) if isinstance(cmds, dict) else cmds
            if cmds and cmds[-1]["status"] in ("succeeded", "failed"):
                break
            time.sleep(0.1)
        assert cmds[-1]["status"] == "succeeded", cmds[-1]
        pid = cmds[-1]["result"]["pid"]
        # The printed way to read the agent's output works as printed (once, not -f).
        watch = [line.strip() for line in
                 lines[lines.index("watch it:") + 1: lines.index("stop it:")]]
        status_line = next(line for line in watch if " status " in line)
        logs_line = next(line for line in watch if " logs " in line)
        assert status_line.endswith(" --watch") and logs_line.endswith(" -f")
        # Once, not live: the status as printed, then the log.
        def demo_row(out: str) -> bool:
            return any(row.split()[:2] == ["demo", "running"] for row in out.splitlines())

        deadline = time.monotonic() + 30  # the status file: rewritten at most once a second
        while True:
            seen = subprocess.run(["bash", "-c", status_line[: -len(" --watch")]],
                                  capture_output=True, text=True, timeout=30, env=env)
            assert seen.returncode == 0, seen.stderr
            if demo_row(seen.stdout) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert demo_row(seen.stdout), seen.stdout
        if shutil.which("tmux"):
            attach_line = next(line for line in watch if " attach " in line)
            assert attach_line.endswith(" ag_demo")
        read = subprocess.run(["bash", "-c", logs_line[: -len(" -f")] + " -n 5"],
                              capture_output=True, text=True, timeout=30, env=env)
        assert read.returncode == 0, read.stderr
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=20) == 0
        assert not (psutil.pid_exists(pid)
                    and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
        assert left_behind(home) == []
    finally:
        if proc.poll() is None:  # a failed assertion: end it as a person would first
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        end_left_behind(home)  # what a dev killed mid-way leaves (its agents' tmux)
        if proc.stdout:
            proc.stdout.close()
