"""``install``, ``uninstall``, and the settings
``install`` recorded, which ``status`` and ``logs`` read too.

``install`` records the settings it was given (as the unit's environment,
and in ``<config dir>/installed.env`` so that ``status``, ``logs``,
``uninstall`` and ``upgrade`` use them when given none), stores the token in
a file only its owner can read, and returns once the service is up — or
exits 1 with the service's last log lines. ``--dry-run`` prints every file
and command and changes nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import trio

import supervisors

from .._errors import ConfigError
from .._settings import (
    Settings,
    add_setting_flags,
    check_token,
    default_config_path,
    load_settings,
    read_secret_file,
    read_token_file,
)
from .._version import DISTRIBUTION, current_version
from ._installed import installed_service

INSTALLED_ENV = "installed.env"


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("install", help="install as a systemd --user service or launchd agent")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--systemd", dest="kind", action="store_const", const="systemd",
                      help="a systemd --user unit (default on Linux)")
    kind.add_argument("--launchd", dest="kind", action="store_const", const="launchd",
                      help="a launchd LaunchAgent (default on macOS)")
    p.add_argument("--dry-run", action="store_true", help="print what it would do; change nothing")
    add_setting_flags(p)
    p.set_defaults(func=cmd_install)

    p = sub.add_parser("uninstall", help="stop, disable and remove the service")
    p.add_argument("--purge", action="store_true", help="also remove agents' state")
    p.add_argument("--dry-run", action="store_true", help="print what it would do; change nothing")
    add_setting_flags(p)
    p.set_defaults(func=cmd_uninstall)


def config_dir() -> Path:
    return default_config_path().parent


def recorded_env() -> dict[str, str]:
    """The settings ``install`` recorded (KEY=VALUE lines), or nothing."""
    path = config_dir() / INSTALLED_ENV
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.startswith("RELAY_ORCHESTRATOR_"):
            out[key.strip()] = value.strip()
    return out


def settings_with_recorded(args: argparse.Namespace, *, check_files: bool = True,
                           with_token: bool = False) -> Settings:
    """Flags and environment as usual; what install recorded fills the gaps.

    ``with_token`` (commands that talk to the relay): the token install
    stored too, when the settings have none (``recorded_token_file``)."""
    recorded = recorded_env()
    settings = load_settings(args, environ={**recorded, **os.environ}, check_files=check_files)
    path = recorded_token_file(settings, recorded) if with_token else None
    if path is None:
        return settings
    return attrs.evolve(settings, token_env=read_recorded_token(path))


# Where install stores the token: systemd's EnvironmentFile=, launchd's --token-file.
TOKEN_FILES = ("token.env", supervisors.LAUNCHD_TOKEN_FILE)


def recorded_token_file(settings: Settings, recorded: dict[str, str] | None = None
                        ) -> Path | None:
    """The file ``install`` stored the token in, when ``settings`` have no
    token of their own and name the relay ``install`` recorded (a relay named
    by a flag or the environment never gets a token it was not given)."""
    if settings.token_file is not None or settings.token_env is not None:
        return None
    recorded = recorded_env() if recorded is None else recorded
    url = recorded.get("RELAY_ORCHESTRATOR_RELAY_URL", "").rstrip("/")
    if not url or settings.relay_url != url:
        return None
    for name in TOKEN_FILES:
        path = config_dir() / name
        if path.exists():
            return path
    return None


def read_recorded_token(path: Path) -> str:
    """The token in a file ``install`` wrote; ConfigError, with the fix, when it
    cannot be read, is readable by group or others, or holds none."""
    what = "the token file install wrote,"
    if path.name != "token.env":
        return read_token_file(path, what)
    text = read_secret_file(path, what)
    token = supervisors.parse_env_file(text).get(supervisors.TOKEN_ENV, "").strip()
    if not token:
        raise ConfigError(f"{path}: no {supervisors.TOKEN_ENV}= line")
    return check_token(token, f"{what} {path}")


def host_kind() -> str:
    return "launchd" if sys.platform == "darwin" else "systemd"


def _exec_argv() -> list[str]:
    return [sys.executable, "-m", "orchestrator"]


def _project_requirement(version: str, settings: Settings | None = None) -> str:
    """What ``install --runtime-root`` asks pip for: its own version.

    From the configured find-links or index when there is one (pip looks
    there beside its default index); else from the local project this
    installation came from, else the index.
    """
    if settings is not None and (settings.find_links or settings.index_url):
        return f"{DISTRIBUTION}=={version}"
    from importlib import metadata  # install only: `run` never loads it

    try:
        dist = metadata.distribution(DISTRIBUTION)
        raw = dist.read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        raw = None
    if raw:
        url: str = json.loads(raw).get("url", "")
        if url.startswith("file://"):
            return url[len("file://"):]
    return f"{DISTRIBUTION}=={version}"


def _service_env(settings_env: dict[str, str]) -> dict[str, str]:
    """The unit's environment: the settings, and the PATH of the shell that ran
    ``install`` (as ``pm2 startup`` records it), so that agent CLIs installed
    with npm, pipx or into ``~/.local/bin`` are found under the supervisor,
    whose own PATH holds only the system's directories."""
    path = os.environ.get("PATH")
    return {**settings_env, "PATH": path} if path else dict(settings_env)


def cmd_install(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    if not settings.relay_url:
        raise ConfigError("--relay-url is required (or RELAY_ORCHESTRATOR_RELAY_URL)")
    token = settings.read_token()
    if token is None:
        raise ConfigError("no relay token: give --token-file or set RELAY_ORCHESTRATOR_TOKEN")
    kind = args.kind or host_kind()
    settings_env = {k: v for k, v in settings.as_env().items()
                    if k != "RELAY_ORCHESTRATOR_TOKEN_FILE"}
    if args.config:
        settings_env["RELAY_ORCHESTRATOR_CONFIG"] = str(Path(args.config).resolve())
    for key in ("RELAY_ORCHESTRATOR_STATE_DIR", "RELAY_ORCHESTRATOR_BASE_DIR",
                "RELAY_ORCHESTRATOR_RUNTIME_ROOT"):
        if key in settings_env:
            settings_env[key] = str(Path(settings_env[key]).resolve())
    user = pwd.getpwuid(os.getuid()).pw_name
    plan = supervisors.plan_install(
        kind,  # type: ignore[arg-type]
        exec_argv=_exec_argv(),
        settings_env=_service_env(settings_env),
        token=token,
        config_dir=config_dir(),
        home=Path.home(),
        runtime_root=settings.runtime_root.resolve() if settings.runtime_root else None,
        uid=os.getuid(),
        user=user if kind == "systemd" else None,
        xdg_config_home=Path(os.environ["XDG_CONFIG_HOME"]) if os.environ.get("XDG_CONFIG_HOME")
        else None,
    )
    recorded = "".join(f"{k}={v}\n" for k, v in sorted(settings_env.items()))
    version = current_version()
    if args.dry_run:
        if settings.runtime_root:
            root = settings.runtime_root.resolve()
            print(f"would create {root}/versions/{version} (python -m venv; pip install "
                  f"{_project_requirement(version, settings)})")
            print(f"would write {root}/bin/relay-orchestrator (stable entry) and point "
                  f"{root}/current at versions/{version}")
        print(f"would write {config_dir() / INSTALLED_ENV} (mode 0600):")
        for line in recorded.splitlines():
            print(f"    {line}")
        print(plan.render_dry_run(), end="")
        return 0
    if settings.runtime_root:
        _install_runtime(settings, version)
    path = config_dir() / INSTALLED_ENV
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(recorded)
    print(f"installing the {kind} service {plan.unit} …", file=sys.stderr, flush=True)
    try:
        notes = trio.run(supervisors.apply, plan)
    except supervisors.InstallError as exc:
        print(f"relay-orchestrator: install failed: {exc}", file=sys.stderr)
        print(_service_log_tail(kind, plan.unit), file=sys.stderr)
        return 1
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"{plan.unit} is up ({kind}); relay {settings.relay_url}")
    return 0


def _install_runtime(settings: Settings, version: str) -> None:
    from ..upgrade import _runtime
    from ..upgrade._install import InstallFailed, install_runtime_version

    root = settings.runtime_root.resolve()  # type: ignore[union-attr]
    print(f"creating {root}/versions/{version} (this takes a little while) …", file=sys.stderr,
          flush=True)
    try:
        if _runtime.current_target(root) != version:
            trio.run(install_runtime_version, settings, root, version,
                     _project_requirement(version, settings))
    except InstallFailed as exc:
        raise SystemExit(f"relay-orchestrator: runtime install failed: {exc}") from exc
    _runtime.write_stable_entry(root)
    _runtime.switch_current(root, version)


def _service_log_tail(kind: str, unit: str) -> str:
    if kind == "systemd":
        for argv in (["journalctl", "--user", "-u", unit, "-n", "20", "--no-pager"],
                     ["systemctl", "--user", "status", unit, "--no-pager", "-n", "20"]):
            if shutil.which(argv[0]):
                proc = subprocess.run(argv, capture_output=True, text=True, timeout=20)
                if proc.stdout.strip():
                    return proc.stdout.strip()
    return "(no service log available)"


def cmd_uninstall(args: argparse.Namespace) -> int:
    settings = settings_with_recorded(args)
    home = Path.home()
    xdg = Path(os.environ["XDG_CONFIG_HOME"]) if os.environ.get("XDG_CONFIG_HOME") else None
    kind = installed_service() or host_kind()  # what install wrote, else the host's kind
    plan = supervisors.plan_uninstall(
        kind,  # type: ignore[arg-type]
        config_dir=config_dir(), home=home, uid=os.getuid(), xdg_config_home=xdg,
        purge_paths=[settings.state_dir] if args.purge else [],
    )
    if args.dry_run:
        print(plan.render_dry_run(), end="")
        print(f"would remove {config_dir() / INSTALLED_ENV}")
        return 0
    try:
        notes = trio.run(supervisors.apply, plan)
    except supervisors.InstallError as exc:
        print(f"relay-orchestrator: uninstall failed: {exc}", file=sys.stderr)
        return 1
    (config_dir() / INSTALLED_ENV).unlink(missing_ok=True)
    for note in notes:
        if note:
            print(f"note: {note}", file=sys.stderr)
    kept = "" if args.purge else f"; agents and their state kept in {settings.state_dir}"
    print(f"{plan.unit} removed{kept}")
    return 0
