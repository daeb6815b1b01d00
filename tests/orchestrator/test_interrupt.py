"""Ctrl-C: a one-shot command cut short says so with 130 (as shells report
128 + SIGINT) and no traceback; a command that runs until stopped ends with 0."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

from ..conftest import TOKEN, cli_env


def test_ctl_cut_short_by_ctrl_c_exits_130_without_a_traceback(tmp_path: Path) -> None:
    with socket.socket() as server:  # a relay that takes the connection and never answers
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(30)
        url = f"http://127.0.0.1:{server.getsockname()[1]}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "ctl", "agents", "--relay-url", url],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=cli_env(HOME=str(tmp_path), RELAY_ORCHESTRATOR_TOKEN=TOKEN))
        try:
            conn, _ = server.accept()  # it is waiting for the answer now
            with conn:
                proc.send_signal(signal.SIGINT)
                out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and out == ""


def test_the_relay_command_ends_with_0_on_ctrl_c(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "relay", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=cli_env(HOME=str(tmp_path)))
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("dev relay listening on ")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
