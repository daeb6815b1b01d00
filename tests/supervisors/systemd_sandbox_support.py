"""The systemd --user sandbox as the tests see it (see conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Mapping, Sequence
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
