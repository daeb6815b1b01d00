"""``status`` as a person and a script read it, against orchestrators on the
real dev relay: its exit status (0 running, 3 not running, 1 when it cannot
be told), colour only on a terminal and never with ``NO_COLOR``, a line per
agent with its activity, uptime, restarts, memory and CPU, and where the
orchestrator's log is. ``status --watch`` runs in a real tmux pane, read
back with ``capture-pane``."""

from __future__ import annotations

import json
import os
import pty
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from orchestrator.cli._status import render_status, size, uptime
from orchestrator.cli._watch import clip

from ..conftest import FAKE_AGENT, cli_env
from .e2e import settle

FAKE_TUI = str(Path(__file__).parents[1] / "fake_tui.py")
WAIT = 20
needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


def status_argv(state_dir: Path | str, tmp_path: Path, *extra: str) -> list[str]:
    config = tmp_path / "config.toml"
    config.touch()
    return [sys.executable, "-m", "orchestrator", "status", "--state-dir", str(state_dir),
            "--config", str(config), *extra]


async def run_status(state_dir: Path | str, tmp_path: Path, *extra: str,
                     **env: str) -> subprocess.CompletedProcess[str]:
    argv = status_argv(state_dir, tmp_path, *extra)
    return await trio.to_thread.run_sync(lambda: subprocess.run(
        argv, capture_output=True, text=True, timeout=30,
        env=cli_env(XDG_CONFIG_HOME=str(tmp_path / "xdg"), **env)))


def on_a_terminal(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run ``argv`` with its standard output a terminal (a pty); its exit and output."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(argv, stdout=slave, stderr=subprocess.DEVNULL, env=env)
        os.close(slave)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the other end closed
                break
            if not chunk:
                break
            chunks.append(chunk)
        return proc.wait(timeout=30), b"".join(chunks).decode()
    finally:
        os.close(master)


async def wait_until(check: Callable[[], Any], what: str, state: Path | None = None) -> Any:
    """A file another process writes, polled at short intervals (no event to wait on)."""
    try:
        with trio.fail_after(WAIT):
            while not (found := await trio.to_thread.run_sync(check)):
                await trio.sleep(0.05)
    except trio.TooSlowError:
        seen = (state / "status.json").read_text() if state and (state / "status.json").exists() \
            else "(no status file)"
        raise AssertionError(f"timed out waiting for {what}; status.json: {seen}") from None
    return found


# -- exit status -------------------------------------------------------------------


async def test_exit_status_is_3_without_an_orchestrator_and_1_for_a_broken_status_file(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    out = await run_status(state, tmp_path)
    assert out.returncode == 3, out.stderr
    assert out.stdout.splitlines()[0].endswith("not running")
    out = await run_status(state, tmp_path, "--json")
    assert out.returncode == 3 and json.loads(out.stdout)["running"] is False

    state.mkdir()
    # A status file left by a process that is gone (its pid now free).
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True, timeout=30)
    (state / "status.json").write_text(json.dumps({"id": "orch-gone", "pid": int(gone.stdout),
                                                   "relay": {"connected": True}, "agents": []}))
    out = await run_status(state, tmp_path)
    assert out.returncode == 3
    assert "orch-gone" in out.stdout and "not running" in out.stdout
    assert "disconnected" in out.stdout

    # A pid that is alive but started after the orchestrator that wrote the file: not it.
    (state / "status.json").write_text(json.dumps(
        {"id": "orch-old", "pid": os.getpid(), "startedAt": 1000, "agents": []}))
    assert (await run_status(state, tmp_path)).returncode == 3

    (state / "status.json").write_text("{not json")
    out = await run_status(state, tmp_path)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "cannot read the status file" in out.stderr

    # JSON, but not a status file's: one sentence too, never a traceback.
    for text, why in (('["x"]', "not a JSON object"), ('{"relay": "up"}', "its relay is not "
                      "an object"), ('{"agents": [1]}', "its agents are not a list of objects")):
        (state / "status.json").write_text(text)
        for extra in ((), ("--json",)):
            out = await run_status(state, tmp_path, *extra)
            assert (out.returncode, out.stdout) == (1, ""), text
            assert out.stderr == (f"relay-orchestrator: cannot read the status file "
                                  f"{state / 'status.json'}: not a status file: {why}\n")


async def test_a_running_orchestrator_exits_0_and_says_where_its_log_is(
    relay: Any, start_orchestrator: Any, tmp_path: Path,
) -> None:
    orch = await start_orchestrator(id="orch-up")
    state = orch.settings.state_dir
    await wait_until(lambda: (state / "status.json").exists(), "a status file")
    out = await run_status(state, tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("orchestrator orch-up") and lines[0].endswith("running")
    assert lines[1].startswith(f"process      pid {os.getpid()}  up ")
    assert "memory " in lines[1] and "memory -" not in lines[1]
    # In-process (as under `dev`): no log file, said in one line.
    assert "log          standard error of the process that runs it (no log file)" in lines
    data = json.loads((await run_status(state, tmp_path, "--json")).stdout)
    assert data["running"] is True and data["pid"] == os.getpid()
    assert data["log"] == {"stderr": True}
    assert isinstance(data["startedAt"], int) and data["heartbeatInterval"] == 10.0


@pytest.mark.slow  # heartbeats in real time
async def test_an_idle_orchestrator_without_agents_leaves_its_status_file_alone(
    relay: Any, start_orchestrator: Any, tmp_path: Path,
) -> None:
    """Heartbeats with nothing to sample write nothing: no disk write a beat."""
    orch = await start_orchestrator(id="orch-idle", heartbeat_interval="0.2")
    path = orch.settings.state_dir / "status.json"
    await wait_until(lambda: path.exists() and json.loads(path.read_text())["relay"]
                     .get("connected"), "a connected status file")

    async def beats(n: int) -> None:
        start = (relay.orchestrator("orch-idle") or {}).get("heartbeats", 0)
        with trio.fail_after(WAIT):
            await relay.wait_for(lambda: (relay.orchestrator("orch-idle") or {})
                                 .get("heartbeats", 0) >= start + n)

    await beats(8)  # past the writer's once-a-second coalescing of the start's changes
    written = path.stat().st_mtime_ns, json.loads(path.read_text())["updatedAt"]
    await beats(8)
    assert (path.stat().st_mtime_ns, json.loads(path.read_text())["updatedAt"]) == written


# -- colour ------------------------------------------------------------------------


async def test_colour_only_on_a_terminal_and_never_with_no_color(
    relay: Any, start_orchestrator: Any, tmp_path: Path,
) -> None:
    orch = await start_orchestrator(id="orch-colour")
    state = orch.settings.state_dir
    await wait_until(lambda: (state / "status.json").exists(), "a status file")
    argv = status_argv(state, tmp_path)
    env = cli_env(XDG_CONFIG_HOME=str(tmp_path / "xdg"), TERM="xterm")
    env.pop("NO_COLOR", None)
    code, text = await trio.to_thread.run_sync(on_a_terminal, argv, env)
    assert code == 0 and "\033[32mrunning\033[0m" in text
    for no_color in ({"NO_COLOR": "1"}, {"NO_COLOR": "yes please"}, {"TERM": "dumb"}):
        code, text = await trio.to_thread.run_sync(on_a_terminal, argv, {**env, **no_color})
        assert code == 0 and "running" in text and "\033[" not in text, no_color
    out = await run_status(state, tmp_path)  # a pipe: no colour either
    assert out.returncode == 0 and "\033[" not in out.stdout
    # NO_COLOR set but empty counts as not set (no-color.org).
    code, text = await trio.to_thread.run_sync(on_a_terminal, argv, {**env, "NO_COLOR": ""})
    assert "\033[32m" in text


# -- a line per agent ----------------------------------------------------------------


def tui_providers(base: Path) -> dict[str, Any]:
    """Providers of claude's kind whose program is the fake screen: real activity."""
    tui = {"kind": "claude", "command": [sys.executable, FAKE_TUI], "session": "tmux",
           "trust_workspace": "never"}
    return {
        "command": {"enabled": True, "session": "plain"},
        "screen": tui,
        "asker": {**tui, "args": ["--ask", "Do you want to delete build/?"]},
    }


@pytest.mark.slow
@needs_tmux
async def test_each_agent_shows_activity_uptime_restarts_memory_and_cpu(
    relay: Any, start_orchestrator: Any, tmp_path: Path,
) -> None:
    base = tmp_path / "base"
    base.mkdir()
    orch = await start_orchestrator(id="orch-agents", providers=tui_providers(base),
                                    heartbeat_interval="0.5")
    spawns = [
        {"provider": "screen", "agentId": "ag_ready", "label": "reviewer"},
        {"provider": "asker", "agentId": "ag_ask", "label": "cleaner"},
        {"provider": "command", "agentId": "ag_plain", "label": "server",
         "providerArgs": [sys.executable, FAKE_AGENT]},
    ]
    for params in spawns:
        done = await settle(relay, relay.create_command(orch.agent_id, "agent.spawn",
                                                        {"cwd": str(base), **params}))
        assert done["status"] == "succeeded", done["error"]
    state = orch.settings.state_dir

    def agents_measured() -> dict[str, Any] | None:
        try:
            data = json.loads((state / "status.json").read_text())
        except (OSError, ValueError):
            return None
        by_id = {a["agentId"]: a for a in data["agents"]}
        ok = (by_id.get("ag_ready", {}).get("activity") == "ready"
              and by_id.get("ag_ask", {}).get("activity") == "asking"
              and all((a.get("usage") or {}).get("memoryRss") for a in by_id.values())
              and len(by_id) == 3)
        return by_id if ok else None

    by_id = await wait_until(agents_measured, "activities and usage in status.json", state)
    assert "activity" not in by_id["ag_plain"]  # a plain command: no screen to read

    out = await run_status(state, tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    header = next(line for line in lines if line.lstrip().startswith("AGENT"))
    assert header.split() == ["AGENT", "STATUS", "ACTIVITY", "PID", "UPTIME", "RESTARTS",
                              "MEM", "CPU", "LAST", "EXIT", "BRANCH"]
    rows = {line.split()[0]: line.split() for line in lines if line.startswith("  ")
            and not line.startswith("    ") and not line.lstrip().startswith("AGENT")}
    assert rows["reviewer"][1:4] == ["running", "ready", str(by_id["ag_ready"]["pid"])]
    assert rows["cleaner"][1:3] == ["running", "asking"]
    assert rows["server"][1:3] == ["running", "-"]
    for row in rows.values():
        assert row[4].endswith("s") and row[5] == "0"  # uptime, restarts
        assert row[6][-1] in "BKMG" and row[7].endswith("%")  # memory, CPU
    asks = lines.index("      asks: Do you want to delete build/?")  # under its agent's row
    assert lines[asks - 1].startswith("  cleaner ")

    # A restart counts, and the row follows the new process.
    done = await settle(relay, relay.create_command(orch.agent_id, "agent.restart",
                                                    {"agentId": "ag_plain"}))
    assert done["status"] == "succeeded", done["error"]

    def restarted() -> bool:
        data = json.loads((state / "status.json").read_text())
        agent = next(a for a in data["agents"] if a["agentId"] == "ag_plain")
        return agent["restartCount"] == 1 and agent["status"] == "running"

    await wait_until(restarted, "the restart in status.json")
    out = await run_status(state, tmp_path)
    row = next(line.split() for line in out.stdout.splitlines() if line.startswith("  server"))
    assert row[5] == "1"


def test_rendering_helpers() -> None:
    assert [size(n) for n in (0, None, 512, 2048, 75_000_000, 3 * 2**30)] == [
        "-", "-", "512B", "2.0K", "71.5M", "3.0G"]
    assert [uptime(0, ms) for ms in (5_000, 185_000, 7_260_000, 90_000_000)] == [
        "5s", "3m05s", "2h01m", "1d01h"]
    assert clip("\033[32mrunning\033[0m and more", 4) == "\033[32mrunn\033[0m"
    assert clip("short", 80) == "short"
    text = render_status({"id": "o", "running": False, "agents": [
        {"agentId": "ag_1", "status": "exited", "restartCount": 2, "activity": "ready",
         "exit": {"exitCode": 1}, "usage": {"memoryRss": 10, "cpuPercent": 1.0}}]})
    row = next(line for line in text.splitlines() if line.startswith("  ag_1")).split()
    # An agent that is not running has no activity, pid, uptime or usage to show.
    assert row == ["ag_1", "exited", "-", "-", "-", "2", "-", "-", "code", "1", "-"]


# -- status --watch in a real tmux pane ------------------------------------------------


class Pane:
    """A tmux server of the test's own (``-L``), one pane running a command."""

    def __init__(self, tmp_path: Path) -> None:
        self.socket = f"relay-test-watch-{uuid.uuid4().hex[:8]}"
        self.conf = tmp_path / "tmux.conf"
        self.conf.write_text("set -g history-limit 1000\n")

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, "-f", str(self.conf), *args],
                              capture_output=True, text=True, timeout=30, check=True).stdout

    def start(self, argv: list[str], env: dict[str, str]) -> None:
        """``argv`` in the pane, from a shell that prints its exit status after it
        and stays, as a person's shell would (tmux may drop what a pane printed
        last when its process ends at once). The shell outlives Ctrl-C: it traps
        SIGINT with a handler, which its child does not inherit."""
        script = 'trap true INT; "$@"; echo "exited $?"; exec sleep 600'
        subprocess.run(["tmux", "-L", self.socket, "-f", str(self.conf), "new-session", "-d",
                        "-s", "watch", "-x", "120", "-y", "30", "--",
                        "sh", "-c", script, "sh", *argv],
                       env=env, capture_output=True, timeout=30, check=True)

    def screen(self, *flags: str) -> str:
        return self.tmux("capture-pane", "-p", "-t", "watch", *flags)

    def show(self, fmt: str) -> str:
        return self.tmux("display-message", "-p", "-t", "watch", fmt).strip()

    def kill(self) -> None:
        """End the test's own server, and remove the socket file it leaves."""
        found = subprocess.run(["tmux", "-L", self.socket, "display-message", "-p",
                                "#{socket_path}"], capture_output=True, text=True, timeout=30,
                               check=False)
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True,
                       timeout=30, check=False)
        if found.returncode == 0 and found.stdout.strip():
            Path(found.stdout.strip()).unlink(missing_ok=True)


@pytest.fixture
def pane(tmp_path: Path) -> Iterator[Pane]:
    p = Pane(tmp_path)
    yield p
    p.kill()  # only the test's own server


async def screen_with(pane: Pane, check: Callable[[str], bool], what: str,
                      *flags: str) -> str:
    """The pane's screen once ``check`` holds (a bounded poll: tmux has no event for it)."""
    text = ""
    try:
        with trio.fail_after(WAIT):
            while not check(text := await trio.to_thread.run_sync(pane.screen, *flags)):
                await trio.sleep(0.05)
    except trio.TooSlowError:
        raise AssertionError(f"timed out waiting for {what}; the pane shows:\n{text}") from None
    return text


@pytest.mark.slow
@needs_tmux
@pytest.mark.parametrize("no_color", ["", "1"])
async def test_watch_redraws_in_place_and_ends_cleanly_on_ctrl_c(
    relay: Any, start_orchestrator: Any, tmp_path: Path, pane: Pane, no_color: str,
) -> None:
    orch = await start_orchestrator(id="orch-watch", heartbeat_interval="0.5")
    base = tmp_path / "base"
    state = orch.settings.state_dir
    done = await settle(relay, relay.create_command(orch.agent_id, "agent.spawn", {
        "provider": "command", "agentId": "ag_w1", "label": "first", "cwd": str(base),
        "providerArgs": [sys.executable, FAKE_AGENT]}))
    assert done["status"] == "succeeded", done["error"]
    env = cli_env(XDG_CONFIG_HOME=str(tmp_path / "xdg"), TERM="xterm-256color",
                  NO_COLOR=no_color)
    await trio.to_thread.run_sync(pane.start, status_argv(state, tmp_path, "--watch",
                                                          "--interval", "0.2"), env)

    first = await screen_with(pane, lambda s: "first" in s and "running" in s, "the first view")
    lines = first.splitlines()
    assert lines[0].startswith("relay-orchestrator status on ") and "every 0.2s" in lines[0]
    assert "(Ctrl-C to quit)" in lines[0]
    assert any(line.startswith("orchestrator orch-watch") for line in lines)
    assert pane.show("#{alternate_on}") == "1"  # full screen, the shell's screen kept aside
    colored = await trio.to_thread.run_sync(pane.screen, "-e")
    assert ("\033[32m" in colored) is (not no_color)  # green "running" unless NO_COLOR

    # A second agent appears in the same place: the view is redrawn, not scrolled.
    done = await settle(relay, relay.create_command(orch.agent_id, "agent.spawn", {
        "provider": "command", "agentId": "ag_w2", "label": "second", "cwd": str(base),
        "providerArgs": [sys.executable, FAKE_AGENT]}))
    assert done["status"] == "succeeded", done["error"]
    second = await screen_with(pane, lambda s: "second" in s, "the second agent")
    assert second.splitlines()[0].startswith("relay-orchestrator status on ")
    assert second.count("orchestrator orch-watch") == 1
    assert pane.show("#{history_size}") == "0"  # nothing scrolled off the top

    await trio.to_thread.run_sync(pane.tmux, "send-keys", "-t", "watch", "C-c")
    after = await screen_with(pane, lambda s: "exited " in s, "the end of status --watch")
    assert "exited 0" in after
    assert pane.show("#{alternate_on}") == "0"  # the shell's screen is back
    assert "Traceback" not in after and "KeyboardInterrupt" not in after


def popen_status(argv: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(argv, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env)


async def test_watch_off_a_terminal_prints_view_after_view_without_escapes(
    tmp_path: Path,
) -> None:
    argv = status_argv(tmp_path / "state", tmp_path, "--watch", "--interval", "0.1")
    proc = popen_status(argv, cli_env(XDG_CONFIG_HOME=str(tmp_path / "xdg"), TERM="xterm"))
    assert proc.stdout is not None and proc.stderr is not None
    try:
        titles = 0
        with trio.fail_after(WAIT):
            while titles < 2:
                line = await trio.to_thread.run_sync(proc.stdout.readline)
                assert line, "status --watch ended by itself"
                assert "\033" not in line
                titles += line.startswith("relay-orchestrator status on ")
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(WAIT):
            assert await trio.to_thread.run_sync(proc.wait) == 0
        assert proc.stderr.read() == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


async def test_watch_refuses_json_and_a_bad_interval(tmp_path: Path) -> None:
    for extra in (("--json",), ("--interval", "0"), ("--interval", "5000")):
        out = await run_status(tmp_path / "state", tmp_path, "--watch", *extra)
        assert out.returncode == 2 and out.stdout == "", extra
        assert out.stderr.startswith("relay-orchestrator: status: ") and \
            out.stderr.count("\n") == 1
