"""The README's quick start, as a new user runs it: a fresh virtual environment,
a plain ``pip install .`` (no extras), then ``relay-orchestrator dev`` in a
fresh home. It must print its relay URL and end cleanly on Ctrl-C.

The package is installed from a copy of its source (what ``pip install .``
reads), so the build leaves nothing in the working tree. pip fetches the
dependencies (its cache makes a second run quick).
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "orchestrator", "actors", "supervisors", "units")
INSTALL_TIMEOUT = 600
START_TIMEOUT = 60
STOP_TIMEOUT = 20


def _copy_sources(dest: Path) -> None:
    dest.mkdir()
    for name in SOURCES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, dest / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, dest / name)


class _Output:
    """A process's stdout read as it comes (the pipe itself: no buffer hides a line)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self._fd = proc.stdout.fileno()
        self.text = ""

    def wait_for(self, pattern: re.Pattern[str], timeout: float) -> str:
        """The first line matching ``pattern``, within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not (match := pattern.search(self.text)):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._fd], [], [], left)[0]:
                raise AssertionError(f"no {pattern.pattern!r} within {timeout} s: {self.text!r}")
            data = os.read(self._fd, 65536)
            if not data:
                raise AssertionError(f"it ended before {pattern.pattern!r}: {self.text!r}")
            self.text += data.decode()
        return match[0]


@pytest.mark.slow
def test_dev_works_after_a_plain_install_and_ends_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    source = tmp_path / "src"
    _copy_sources(source)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True,
                   timeout=INSTALL_TIMEOUT)
    installed = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", "."],
        cwd=source, capture_output=True, text=True, timeout=INSTALL_TIMEOUT,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]

    home = tmp_path / "home"
    home.mkdir()
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("RELAY_ORCHESTRATOR_", "XDG_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(HOME=str(home), PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    proc = subprocess.Popen(
        [str(venv / "bin" / "relay-orchestrator"), "dev"], cwd=home, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        output = _Output(proc)
        output.wait_for(re.compile(r"(?m)^dev relay: +http://127\.0\.0\.1:\d+$"), START_TIMEOUT)
        output.wait_for(re.compile(r"(?m)^Ctrl-C stops"), START_TIMEOUT)
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        _, err_bytes = proc.communicate(timeout=STOP_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = err_bytes.decode()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "Error" not in err, err
    assert re.search(r"(?m)^token: +\S+$", output.text), output.text
    # it ran from the fresh environment, state in the fresh home
    assert (home / ".local" / "state" / "relay-orchestrator" / "dev").is_dir()
