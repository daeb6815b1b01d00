"""The systemd --user sandbox as the tests see it (the ``systemd_user`` fixture)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest

REPO = Path(__file__).resolve().parents[2]
SANDBOX_SCRIPT = REPO / ".ci" / "systemd-sandbox.sh"
HELPER = Path(__file__).resolve().parent / "sandbox_helper.py"
STATE_DIR = Path(os.environ.get("RELAY_CI_STATE_DIR", "/run/relay-orchestrator-ci"))
ENV_FILE = STATE_DIR / "sandbox.env"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def unavailable(reason: str) -> None:
    """Skip, or fail under CI (which must have what the test needs)."""
    if in_ci():
        pytest.fail(f"CI must have it: {reason}", pytrace=False)
    pytest.skip(reason)


def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key and not key.startswith("#"):
            env[key] = value
    return env


@attrs.frozen(kw_only=True)
class SystemdUser:
    """The sandbox's test user, and how to run things as it."""

    name: str
    uid: int
    gid: int
    home: Path
    log: Path
    env: Mapping[str, str]  # the whole environment for a command run as the user
    python: str = sys.executable  # readable by the user (checked by the fixture)

    def popen_kwargs(self, extra_env: Mapping[str, str] | None = None) -> dict[str, Any]:
        env = dict(self.env)
        if extra_env:
            env.update(extra_env)
        kwargs: dict[str, Any] = {"env": env, "cwd": self.home}
        if os.geteuid() != self.uid:  # root: become the user (we may already be it)
            kwargs.update(user=self.uid, group=self.gid, extra_groups=[])
        return kwargs

    def run_as_user(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 60,
        extra_env: Mapping[str, str] | None = None,
        **kw: Any,
    ) -> subprocess.CompletedProcess[str]:
        """``subprocess.run`` as the test user, with the sandbox's environment."""
        kwargs = self.popen_kwargs(extra_env)
        kwargs.update(kw)
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False, **kwargs
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{argv} as {self.name} exited {proc.returncode}:\n"
                f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
            )
        return proc

    def systemctl(self, *args: str, check: bool = True) -> str:
        return self.run_as_user(["systemctl", "--user", *args], check=check).stdout

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.systemctl("show", "--no-pager", "-p", ",".join(props), "--", unit)
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def stop_units(self, *units: str) -> None:
        """Stop units by name (teardown: only those the test started)."""
        if units:
            self.systemctl("stop", "--", *units, check=False)

    def workdir(self, label: str) -> Path:
        """A fresh directory owned by the user, for one test."""
        path = self.home / "relay-tests" / f"{label}-{uuid.uuid4().hex[:8]}"
        path.mkdir(parents=True)
        for p in (path.parent, path):
            os.chown(p, self.uid, self.gid)
        return path

    def first_unreadable(self, path: Path) -> Path | None:
        """The first directory on the way to ``path`` that the user cannot enter."""
        chain = [str(p) for p in reversed(Path(path).parents)] + [str(path)]
        script = 'for d; do [ -x "$d" ] || { echo "$d"; exit 1; }; done'
        proc = self.run_as_user(["/bin/sh", "-c", script, "sh", *chain], check=False)
        return Path(proc.stdout.strip()) if proc.returncode else None

    def helper_argv(self, *args: str) -> list[str]:
        return [self.python, str(HELPER), *args]


def _start_sandbox() -> None:
    proc = subprocess.run(
        ["bash", str(SANDBOX_SCRIPT), "start"], capture_output=True, text=True, timeout=120
    )
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        unavailable(f"the systemd sandbox did not start: {tail}")


def _stop_sandbox() -> None:
    subprocess.run(["bash", str(SANDBOX_SCRIPT), "stop"], capture_output=True, timeout=120)


def sandbox_user() -> Iterator[SystemdUser]:
    """The ``systemd_user`` fixture's value (``tests/conftest.py``), once per session.

    A test user with a running ``systemd --user`` manager
    (``.ci/systemd-sandbox.sh``), read from the sandbox's env file; where there
    is none and we are root, the sandbox is started here and stopped at the
    end (only what was started here). Where the sandbox cannot be had it
    skips with a one-line reason; with ``CI=true`` it fails instead, since CI
    must run these tests.
    """
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
