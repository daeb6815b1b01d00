"""Helpers of the command-line tests: what ``install`` writes, written as it writes it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import supervisors

from ..conftest import TOKEN


def record_install(home: Path, relay_url: str, kind: str, token: str = TOKEN) -> Path:
    """The files ``install`` writes, written as it writes them; the config dir."""
    config = home / ".config"
    config_dir = config / "relay-orchestrator"
    config_dir.mkdir(parents=True, mode=0o700)
    plan = supervisors.plan_install(
        kind,  # type: ignore[arg-type]
        exec_argv=[sys.executable, "-m", "orchestrator"],
        settings_env={"RELAY_ORCHESTRATOR_RELAY_URL": relay_url}, token=token,
        config_dir=config_dir, home=home, runtime_root=None, uid=os.getuid(), user=None,
        xdg_config_home=config,
    )
    for step in plan.files:
        step.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(step.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, step.mode)
        with os.fdopen(fd, "w") as fh:
            fh.write(step.content)
    fd = os.open(config_dir / "installed.env", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"RELAY_ORCHESTRATOR_RELAY_URL={relay_url}\n")
    return config_dir
