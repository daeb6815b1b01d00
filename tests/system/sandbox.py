"""The installed service under a real ``systemd --user``, as the system tests drive it.

Shared by ``tests/system`` and ``bench/upgrade.py`` (not a test module):

- ``build_wheelhouse``: wheels of this checkout at several versions (the
  find-links directory) and its dependencies as a local PEP 503 index, so
  that pip, run by the test user, finds everything on this machine;
- ``UserHost``: run ``relay-orchestrator`` and ``systemctl --user`` as the
  sandbox's test user (async, cancellable: callers bound them, ``bounded``),
  read the manager's view of a unit;
- ``ServiceLayout``: one test's token file, config, state and base dirs, and
  the setting flags ``install`` gets;
- small helpers about agents (their unit, whether a pid is alive).

Everything runs from the test's trio loop, in which the dev relay also runs:
a blocking call here would stall the relay the service talks to.
"""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import attrs
import trio

from supervisors._systemd_backend import unit_from_cgroup

from ..supervisors.systemd_sandbox_support import (
    ENV_FILE,
    REPO,
    SANDBOX_SCRIPT,
    SystemdUser,
    read_env_file,
)

UNIT = "relay-orchestrator.service"
DISTRIBUTION = "relay-orchestrator"
# What a wheel of the project is built from (pyproject's packages, its readme).
PROJECT_FILES = ("pyproject.toml", "README.md", "orchestrator", "actors", "supervisors", "units")
T = TypeVar("T")


def checkout_version() -> str:
    with (REPO / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def bump(version: str, by: int) -> str:
    major, minor, patch = (int(x) for x in version.split(".")[:3])
    return f"{major}.{minor}.{patch + by}"


# -- wheels ------------------------------------------------------------------------------


def _append(path: Path, code: str) -> None:
    path.write_text(path.read_text() + "\n\n# broken on purpose by the tests\n" + code + "\n")


def break_package_import(tree: Path) -> None:
    """Nothing imports: ``--version`` fails too (the install's verification sees it)."""
    _append(tree / "orchestrator" / "cli" / "_main.py",
            'raise ImportError("broken on purpose (package)")')


def break_run_import(tree: Path) -> None:
    """``--version`` works; ``run`` cannot import what it needs (its logging module)."""
    _append(tree / "orchestrator" / "_logging.py", 'raise ImportError("broken on purpose (run)")')


def break_run_start(tree: Path) -> None:
    """Everything imports; ``run`` exits 1 before it registers."""
    _append(
        tree / "orchestrator" / "daemon" / "_app.py",
        "async def run_orchestrator(*args, **kwargs):\n"
        "    raise SystemExit('broken on purpose: run exits before registering')",
    )


@attrs.frozen(kw_only=True)
class Wheelhouse:
    root: Path
    links: Path  # the project's wheels: --find-links
    index: Path  # the dependencies: a PEP 503 index, --index-url
    versions: tuple[str, ...]

    @property
    def index_url(self) -> str:
        return self.index.as_uri()


def _copy_tree(dest: Path, version: str) -> None:
    for name in PROJECT_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    pyproject = dest / "pyproject.toml"
    text, n = re.subn(r'(?m)^version = "[^"]*"$', f'version = "{version}"', pyproject.read_text())
    assert n == 1, "pyproject.toml: no version line"
    pyproject.write_text(text)


def _dependency_pins() -> list[str]:
    """name==version of every distribution in this environment (a constraints file)."""
    pins = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name and name.lower() != DISTRIBUTION:
            pins[name.lower()] = f"{name}=={dist.version}"
    return sorted(pins.values())


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _write_index(index: Path, files: Sequence[Path]) -> None:
    projects: dict[str, list[Path]] = {}
    for file in files:
        projects.setdefault(_canonical(file.name.split("-")[0]), []).append(file)
    for project, found in projects.items():
        folder = index / project
        folder.mkdir(parents=True)
        links = []
        for file in found:
            shutil.copy2(file, folder / file.name)
            links.append(f'<a href="{file.name}">{file.name}</a><br>')
        (folder / "index.html").write_text(
            "<!DOCTYPE html><html><body>\n" + "\n".join(links) + "\n</body></html>\n"
        )
    (index / "index.html").write_text(
        "<!DOCTYPE html><html><body>\n"
        + "\n".join(f'<a href="{p}/">{p}</a><br>' for p in sorted(projects))
        + "\n</body></html>\n"
    )


def _run_all(commands: Sequence[Sequence[str]], timeout: float) -> None:
    """Run the commands at once; raise with the output of the first that fails."""
    procs = [
        subprocess.Popen(
            list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        for argv in commands
    ]
    failures = []
    for argv, proc in zip(commands, procs, strict=True):
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        if proc.returncode != 0:
            tail = "\n".join(out.decode(errors="replace").strip().splitlines()[-15:])
            failures.append(f"{' '.join(argv[:5])} … exited {proc.returncode}:\n{tail}")
    if failures:
        raise RuntimeError("\n\n".join(failures))


def build_wheelhouse(
    dest: Path,
    variants: Mapping[str, Callable[[Path], None] | None],
    *,
    python: str = sys.executable,
    timeout: float = 300.0,
) -> Wheelhouse:
    """Wheels of this checkout at each version of ``variants`` (each tree changed by
    its function, if any), and the dependencies they need, under ``dest``.

    Builds run as the caller (root), with pip's own configuration; the result
    is readable by everyone (the test user installs from it).
    """
    links, index = dest / "links", dest / "index"
    links.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="relay-wheels-") as tmp:
        trees = []
        for version, change in variants.items():
            tree = Path(tmp) / f"src-{version}"
            tree.mkdir()
            _copy_tree(tree, version)
            if change is not None:
                change(tree)
            trees.append(tree)
        pip = [python, "-m", "pip", "--disable-pip-version-check", "-q"]
        _run_all(
            [[*pip, "wheel", "--no-deps", "-w", str(links), str(tree)] for tree in trees], timeout
        )
        first = sorted(links.glob("*.whl"))[0]
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text("\n".join(_dependency_pins()) + "\n")
        deps = Path(tmp) / "deps"
        _run_all(
            [[*pip, "download", "--only-binary=:all:", "-c", str(constraints), "-d", str(deps),
              str(first)]],
            timeout,
        )  # fmt: skip
        _write_index(index, [p for p in deps.iterdir() if not p.name.startswith("relay_")])
    for path in (dest, *dest.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    built = sorted(p.name.split("-")[1] for p in links.glob("*.whl"))
    assert sorted(variants) == built, f"built {built}, wanted {sorted(variants)}"
    return Wheelhouse(root=dest, links=links, index=index, versions=tuple(variants))


# -- the test user's side ------------------------------------------------------------------


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def unit_of(pid: int) -> str | None:
    """The service unit whose cgroup holds ``pid``."""
    try:
        return unit_from_cgroup(Path(f"/proc/{pid}/cgroup").read_text())
    except OSError:
        return None


@attrs.define(eq=False)
class Ran:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return (f"{' '.join(self.argv[:6])} … exited {self.returncode}\n"
                f"stdout: {self.stdout[-3000:]}\nstderr: {self.stderr[-3000:]}")


@contextmanager
def bounded(seconds: float, what: str, detail: Callable[[], str] | None = None) -> Iterator[None]:
    """``trio.fail_after``, failing the test with what was awaited (and ``detail()``)."""
    try:
        with trio.fail_after(seconds):
            yield
    except trio.TooSlowError:
        extra = f"\n{detail()}" if detail is not None else ""
        raise AssertionError(f"timed out after {seconds:g} s waiting for {what}{extra}") from None


@attrs.define(eq=False)
class UserHost:
    """Commands as the sandbox's test user, from a trio loop (callers bound them)."""

    user: SystemdUser

    async def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        extra_env: Mapping[str, str] | None = None,
    ) -> Ran:
        proc = await trio.run_process(
            list(argv), capture_stdout=True, capture_stderr=True, check=False,
            stdin=b"", **self.user.popen_kwargs(extra_env),
        )  # fmt: skip
        ran = Ran(list(argv), proc.returncode, proc.stdout.decode(errors="replace"),
                  proc.stderr.decode(errors="replace"))
        if check and ran.returncode != 0:
            raise AssertionError(f"as {self.user.name}: {ran}\n{self.log_tail()}")
        return ran

    async def cli(self, *args: str, check: bool = True) -> Ran:
        """``relay-orchestrator ARGS`` run from this checkout's environment."""
        return await self.run([self.user.python, "-m", "orchestrator", *args], check=check)

    async def systemctl(self, *args: str, check: bool = True) -> str:
        return (await self.run(["systemctl", "--user", *args], check=check)).stdout

    async def show(self, unit: str, *props: str) -> dict[str, str]:
        """Unit properties; one that is empty is left out (as ``systemctl show`` does)."""
        out = await self.systemctl("show", "--no-pager", "-p", ",".join(props), "--", unit)
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    async def main_pid(self, unit: str = UNIT) -> int:
        return int((await self.show(unit, "MainPID"))["MainPID"])

    def log_tail(self, n: int = 40) -> str:
        """The manager's output (the units' output goes there: no journald)."""
        try:
            lines = self.user.log.read_text(errors="replace").splitlines()[-n:]
        except OSError:
            return "(no manager log)"
        return "manager log (last lines):\n" + "\n".join(lines)

    # -- files in the user's home, written as root ---------------------------------

    def chown(self, *paths: Path) -> None:
        for path in paths:
            os.chown(path, self.user.uid, self.user.gid)

    def write_file(self, path: Path, text: str, mode: int = 0o644) -> Path:
        path.write_text(text)
        path.chmod(mode)
        self.chown(path)
        return path

    @property
    def unit_dir(self) -> Path:
        return self.user.home / ".config" / "systemd" / "user"

    @property
    def config_dir(self) -> Path:
        return self.user.home / ".config" / "relay-orchestrator"

    def dropin(self, name: str, environment: Mapping[str, str]) -> Path:
        """A drop-in for the service (the test's, not install's): extra environment."""
        folder = self.unit_dir / f"{UNIT}.d"
        for path in (self.user.home / ".config", self.unit_dir.parent, self.unit_dir, folder):
            if not path.exists():
                path.mkdir()
                self.chown(path)
        lines = "".join(f"Environment={k}={v}\n" for k, v in environment.items())
        return self.write_file(folder / name, f"[Service]\n{lines}")

    async def remove_dropin(self, path: Path) -> None:
        await trio.to_thread.run_sync(_remove_file_and_folder, path)
        await self.systemctl("daemon-reload")

    async def stop_units(self, units: Sequence[str]) -> None:
        if units:
            await self.systemctl("stop", "--", *units, check=False)


def _remove_file_and_folder(path: Path) -> None:
    path.unlink(missing_ok=True)
    try:
        path.parent.rmdir()
    except OSError:
        pass  # not empty: not only ours


@attrs.frozen(kw_only=True)
class ServiceLayout:
    """One test's files for an installed orchestrator (owned by the test user)."""

    work: Path
    token: str
    orch_id: str

    @property
    def token_file(self) -> Path:
        return self.work / "token"

    @property
    def config(self) -> Path:
        return self.work / "config.toml"

    @property
    def state_dir(self) -> Path:
        return self.work / "state"

    @property
    def base_dir(self) -> Path:
        return self.work / "base"

    @property
    def runtime_root(self) -> Path:
        return self.work / "runtime"

    @classmethod
    def create(cls, host: UserHost, label: str, token: str) -> ServiceLayout:
        work = host.user.workdir(label)
        layout = cls(work=work, token=token, orch_id=f"orch-{label}-{uuid.uuid4().hex[:6]}")
        host.write_file(layout.token_file, token + "\n", 0o600)
        host.write_file(
            layout.config, '[providers.command]\nenabled = true\nsession = "plain"\n', 0o644
        )
        layout.base_dir.mkdir()
        host.chown(layout.base_dir)
        return layout

    def install_flags(self, relay_url: str, *, heartbeat: float = 1.0) -> list[str]:
        return [
            "--relay-url", relay_url, "--token-file", str(self.token_file),
            "--state-dir", str(self.state_dir), "--base-dir", str(self.base_dir),
            "--heartbeat-interval", f"{heartbeat:g}", "--config", str(self.config),
            "--id", self.orch_id,
        ]  # fmt: skip

    def runtime_flags(self, wheels: Wheelhouse) -> list[str]:
        return [
            "--runtime-root", str(self.runtime_root),
            "--find-links", str(wheels.links), "--index-url", wheels.index_url,
        ]  # fmt: skip

    def current(self) -> str | None:
        try:
            return Path(os.readlink(self.runtime_root / "current")).name
        except OSError:
            return None

    def installed_versions(self) -> list[str]:
        folder = self.runtime_root / "versions"
        return sorted(p.name for p in folder.iterdir()) if folder.exists() else []

    def outcome_marker(self) -> dict[str, Any] | None:
        try:
            return dict(json.loads((self.state_dir / "upgrade-outcome.json").read_text()))
        except OSError:
            return None


def spawn_params(base_dir: Path, argv: Sequence[str], **extra: Any) -> dict[str, Any]:
    """An agent.spawn for the command provider (argv run as is)."""
    return {
        "action": "spawn",
        "provider": "command",
        "providerArgs": list(argv),
        "cwd": str(base_dir),
        "spawnRequestId": f"sp_{uuid.uuid4().hex}",
        **extra,
    }


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


# -- one installed service per user ---------------------------------------------------------

SLOT_WAIT = 600.0  # seconds a test waits for another session's test to finish with the unit
OUR_DROPIN = "50-relay-tests.conf"


@contextmanager
def service_slot(user: SystemdUser, wait: float = SLOT_WAIT) -> Iterator[None]:
    """Hold the test user's ``relay-orchestrator.service`` for one test (or bench).

    The user has one such unit, and several pytest sessions on one machine
    share the sandbox: a lock file in the user's test directory lets one at a
    time install it. A drop-in of ours that a killed run left is removed.
    """
    folder = user.home / "relay-tests"
    folder.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait
    with (folder / ".service.lock").open("a") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"{UNIT} stayed in use by another test run for {wait:g} s"
                    ) from None
                time.sleep(0.1)
        try:
            stale = user.home / ".config" / "systemd" / "user" / f"{UNIT}.d" / OUR_DROPIN
            stale.unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# -- outside pytest (bench/upgrade.py) -------------------------------------------------------


@contextmanager
def sandbox_user() -> Iterator[SystemdUser]:
    """The sandbox's test user for a script: the sandbox is started when it is not
    up (root only) and then stopped again; one already up is left as it was."""
    started = False
    if not ENV_FILE.exists():
        if os.geteuid() != 0:
            raise SystemExit("the systemd sandbox needs root (.ci/systemd-sandbox.sh start)")
        proc = subprocess.run(["bash", str(SANDBOX_SCRIPT), "start"], capture_output=True,
                              text=True, timeout=120, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"the systemd sandbox did not start: {proc.stderr.strip()}")
        started = True
    try:
        raw = read_env_file(ENV_FILE)
        name, uid, home = raw["RELAY_CI_USER"], int(raw["RELAY_CI_UID"]), Path(raw["RELAY_CI_HOME"])
        env = {
            "HOME": str(home), "USER": name, "LOGNAME": name, "SHELL": "/bin/sh",
            "LANG": "C.UTF-8", "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            "XDG_RUNTIME_DIR": raw["XDG_RUNTIME_DIR"],
            "DBUS_SESSION_BUS_ADDRESS": raw["DBUS_SESSION_BUS_ADDRESS"],
        }  # fmt: skip
        yield SystemdUser(name=name, uid=uid, gid=pwd.getpwuid(uid).pw_gid, home=home,
                          log=Path(raw["RELAY_CI_LOG"]), env=env)
    finally:
        if started:
            subprocess.run(["bash", str(SANDBOX_SCRIPT), "stop"], capture_output=True,
                           timeout=120, check=False)


def manager_log_lines(user: SystemdUser, since: float, until: float) -> list[dict[str, Any]]:
    """The orchestrators' JSON log lines in the manager's output, between two wall times."""
    out = []
    try:
        text = user.log.read_text(errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and since <= float(record.get("ts", 0)) <= until:
            out.append(record)
    return out
