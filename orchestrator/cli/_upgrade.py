"""``upgrade``: install another version the non-prefix way (pip), then restart the service."""

from __future__ import annotations

import argparse
import subprocess
import sys
from typing import Any

from .._settings import add_setting_flags
from .._version import DISTRIBUTION
from ._restart import restart_service
from ._service import settings_with_recorded


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("upgrade", help="install another version with pip, then restart the "
                       "service")
    p.add_argument("--version", dest="target_version", required=True,
                   help="the version to install (semver)")
    p.add_argument("--no-restart", action="store_true",
                   help="leave restarting to the caller")
    add_setting_flags(p)
    p.set_defaults(func=cmd_upgrade)


def cmd_upgrade(args: argparse.Namespace) -> int:
    from .._version import is_semver

    if not is_semver(args.target_version):
        print(f"relay-orchestrator: --version: not a semver version: {args.target_version}",
              file=sys.stderr)
        return 2
    # The find-links and index install recorded; no token needed.
    settings = settings_with_recorded(args, check_files=False)
    from ..upgrade._install import pip_source_args

    argv = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q",
            *pip_source_args(settings), f"{DISTRIBUTION}=={args.target_version}"]
    print(f"installing {DISTRIBUTION}=={args.target_version} …", file=sys.stderr, flush=True)
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
        print(f"relay-orchestrator: upgrade failed:\n{tail}", file=sys.stderr)
        return 1
    check = subprocess.run(
        [sys.executable, "-c",
         f"import importlib.metadata as m; print(m.version({DISTRIBUTION!r}))"],
        capture_output=True, text=True,
    )
    if check.stdout.strip() != args.target_version:
        print(f"relay-orchestrator: upgrade did not take: installed {check.stdout.strip()}",
              file=sys.stderr)
        return 1
    print(f"installed {args.target_version}")
    if not args.no_restart:
        return restart_service(settings, after_upgrade=True)
    return 0
