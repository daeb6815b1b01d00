"""``restart`` where there is no service to restart through, and the exact
command lines it runs (stand-ins record them). The restarts themselves, with
agents that outlive them: tests/system/test_launchd_service.py (launchd
stand-in) and tests/system/test_service_commands.py (the systemd sandbox)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

from ..conftest import cli_env
from ..supervisors.stand_ins import StandIns


async def restart(tmp_path: Path, state: Path, *extra: str,
                  **env: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "config.toml"
    config.touch()
    argv = [sys.executable, "-m", "orchestrator", "restart", "--state-dir", str(state),
            "--config", str(config), *extra]
    environ = cli_env(XDG_CONFIG_HOME=str(tmp_path / "xdg"), HOME=str(tmp_path / "home"), **env)
    return await trio.to_thread.run_sync(lambda: subprocess.run(
        argv, capture_output=True, text=True, timeout=60, env=environ))


async def test_a_foreground_orchestrator_cannot_be_restarted_from_outside(
    relay: Any, start_orchestrator: Any, tmp_path: Path,
) -> None:
    orch = await start_orchestrator(id="orch-fg")
    state = orch.settings.state_dir
    with trio.fail_after(10):
        while not (state / "status.json").exists():  # noqa: ASYNC110 (a file: no event)
            await trio.sleep(0.05)
    out = await restart(tmp_path, state)
    assert (out.returncode, out.stdout) == (1, "")
    assert out.stderr == (
        f"relay-orchestrator: restart: the orchestrator (pid {os.getpid()}) runs in the "
        f"foreground, not as a service: stop it (Ctrl-C, or kill -TERM {os.getpid()}) and start "
        f"it again, or install it as a service with `relay-orchestrator install`\n")
    assert orch.presence.connected  # untouched

    out = await restart(tmp_path, tmp_path / "nothing-here")
    assert out.returncode == 1 and out.stderr.count("\n") == 1
    assert "no systemd unit or launchd agent of relay-orchestrator is installed here" in out.stderr


async def test_under_systemd_it_is_systemctl_restart_of_the_unit(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_ins = StandIns(bin_dir, tmp_path / "calls.jsonl")
    unit = tmp_path / "xdg" / "systemd" / "user" / "relay-orchestrator.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("[Service]\n")
    path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"

    stand_ins.add("systemctl", stderr="Job for relay-orchestrator.service failed.\n", code=1)
    out = await restart(tmp_path, tmp_path / "state", PATH=path)
    assert out.returncode == 1
    assert out.stderr == ("relay-orchestrator: restart: `systemctl --user restart "
                          "relay-orchestrator.service` failed (exit 1): Job for "
                          "relay-orchestrator.service failed.\n")
    # It worked, but no new process comes (the stand-in starts none): said, bounded.
    stand_ins.add("systemctl")
    out = await restart(tmp_path, tmp_path / "state", "--timeout", "0.5", PATH=path)
    assert out.returncode == 1
    assert "relay-orchestrator.service was restarted, but no new orchestrator wrote its " \
           "status within 0.5 s" in out.stderr
    assert stand_ins.argvs() == [["systemctl", "--user", "restart",
                                  "relay-orchestrator.service"]] * 2


async def test_a_timeout_that_is_not_a_positive_number_of_seconds(tmp_path: Path) -> None:
    for timeout in ("0", "-5", "nan", "inf"):
        out = await restart(tmp_path, tmp_path / "state", "--timeout", timeout)
        assert (out.returncode, out.stdout) == (2, ""), timeout
        assert out.stderr == ("relay-orchestrator: restart: --timeout must be more than 0 and "
                              "at most 3600 seconds\n")
