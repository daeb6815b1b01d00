"""Fixtures for the supervisors tests: the real systemd --user sandbox.

``systemd_user`` (session scope) gives a ``SystemdUser``: a test user with a
running ``systemd --user`` manager (``.ci/systemd-sandbox.sh``), and helpers
to run commands as that user. It reads the sandbox's env file; where there
is none and we are root, it starts the sandbox itself and stops it at the
end of the session (only what it started). Where the sandbox cannot be had
it skips with a one-line reason; with ``CI=true`` it fails instead, since CI
must run these tests.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .stand_ins import stand_ins  # noqa: F401  (a fixture for the other test modules)
from .systemd_sandbox_support import (
    ENV_FILE,
    REPO,
    SANDBOX_SCRIPT,
    SystemdUser,
    read_env_file,
    unavailable,
)


def _start_sandbox() -> None:
    proc = subprocess.run(
        ["bash", str(SANDBOX_SCRIPT), "start"], capture_output=True, text=True, timeout=120
    )
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        unavailable(f"the systemd sandbox did not start: {tail}")


def _stop_sandbox() -> None:
    subprocess.run(["bash", str(SANDBOX_SCRIPT), "stop"], capture_output=True, timeout=120)


@pytest.fixture(scope="session")
def systemd_user() -> Iterator[SystemdUser]:
    started_here = False
    if not ENV_FILE.exists():
        if os.geteuid() != 0:
            unavailable("the systemd sandbox needs root to start (.ci/systemd-sandbox.sh start)")
        if not any(Path(p).exists() for p in ("/lib/systemd/systemd", "/usr/lib/systemd/systemd")):
            unavailable("no systemd binary (apt-get install $(.ci/systemd-sandbox.sh packages))")
        if shutil.which("systemd-run") is None:
            unavailable("no systemd-run on PATH")
        _start_sandbox()
        started_here = True
    try:
        raw = read_env_file(ENV_FILE)
        name = raw["RELAY_CI_USER"]
        uid = int(raw["RELAY_CI_UID"])
        home = Path(raw["RELAY_CI_HOME"])
        if os.geteuid() != 0 and os.geteuid() != uid:
            unavailable("the systemd sandbox is there but only root can run commands as its user")
        gid = pwd.getpwuid(uid).pw_gid
        env = {
            "HOME": str(home),
            "USER": name,
            "LOGNAME": name,
            "SHELL": "/bin/sh",
            "LANG": "C.UTF-8",
            "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            "XDG_RUNTIME_DIR": raw["XDG_RUNTIME_DIR"],
            "DBUS_SESSION_BUS_ADDRESS": raw["DBUS_SESSION_BUS_ADDRESS"],
        }
        user = SystemdUser(
            name=name, uid=uid, gid=gid, home=home, log=Path(raw["RELAY_CI_LOG"]), env=env
        )
        state = user.run_as_user(["systemctl", "--user", "is-system-running"], check=False)
        if state.stdout.strip() != "running":
            unavailable(f"the sandbox's manager is not running: {state.stdout.strip()!r}")
        # The user must be able to run this project from where it is.
        for path in (Path(user.python), REPO):
            if (blocked := user.first_unreadable(path)) is not None:
                unavailable(
                    f"{name} cannot enter {blocked} (on the way to {path}): put the checkout "
                    "and its venv where other users can read them"
                )
        probe = user.run_as_user(
            [user.python, "-c", "import supervisors, trio, attrs"], check=False
        )
        if probe.returncode != 0:
            err = probe.stderr.strip().splitlines()[-1:] or ["(no output)"]
            unavailable(f"{name} cannot run {user.python} with this project: {err[0]}")
        yield user
    finally:
        if started_here:
            _stop_sandbox()
