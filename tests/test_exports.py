"""The public surface of each package is pinned (trio's test_exports)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

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
    """Nothing of the ``orchestrator.devrelay`` package (nor starlette) in a
    fresh interpreter that has imported what ``run`` imports and read its
    command line."""
    code = textwrap.dedent("""
        import sys
        import orchestrator.cli._main, orchestrator.daemon._app, orchestrator._logging
        orchestrator.cli._main.build_parser().parse_args(["run", "--relay-url", "http://127.0.0.1:1"])
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("hypercorn", "starlette")
                     or m == "orchestrator.devrelay" or m.startswith("orchestrator.devrelay.")))
        import orchestrator.devrelay._relay
        print("orchestrator.devrelay._relay" in sys.modules)  # the check sees the package
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == ["[]", "True"]
