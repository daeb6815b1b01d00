"""The public surface of each package is pinned (trio's test_exports)."""

from __future__ import annotations

import subprocess
import sys

import actors
import orchestrator
import supervisors


def test_orchestrator_exports() -> None:
    assert sorted(orchestrator.__all__) == sorted([
        "Command", "CommandStatus", "ConfigError", "Journal", "Orchestrator",
        "OrchestratorError", "Outcome", "RelayAuthError", "RelayClient", "RelayConflict",
        "RelayError", "RelayNotFound", "RelayUnavailable", "Settings", "__version__",
        "load_settings", "run_orchestrator",
    ])
    for name in orchestrator.__all__:
        assert hasattr(orchestrator, name)


def test_every_exported_name_exists() -> None:
    for module in (actors, supervisors, orchestrator):
        for name in module.__all__:
            assert hasattr(module, name), (module.__name__, name)


def test_run_does_not_import_the_dev_relay_stack() -> None:
    code = ("import sys, orchestrator._cli, orchestrator._app; "
            "print(sorted(m for m in ('hypercorn', 'starlette', 'orchestrator._dev_relay') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
