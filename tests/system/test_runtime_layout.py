"""The runtime-prefix layout on disk: the stable entry's rollback, pruning, new venvs.

The stable entry is run for real (``sh``) over a runtime root whose versions
are small stand-ins: ``bin/python`` answers the import check (or fails it
with a traceback), ``bin/relay-orchestrator`` says which version ran.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import trio

from orchestrator.upgrade import _runtime
from orchestrator.upgrade._install import create_venv, running_pip

PYTHON_OK = "#!/bin/sh\nexit 0\n"
PYTHON_BROKEN = (
    "#!/bin/sh\n"
    "echo 'Traceback (most recent call last):' >&2\n"
    "echo '  File \"x.py\", line 1, in <module>' >&2\n"
    "echo 'ImportError: cannot import name run' >&2\n"
    "exit 1\n"
)


def make_version(root: Path, version: str, python: str = PYTHON_OK) -> None:
    bin_dir = _runtime.version_dir(root, version) / "bin"
    bin_dir.mkdir(parents=True)
    for name, text in (("python", python),
                       ("relay-orchestrator", f'#!/bin/sh\necho "ran {version} $*"\n')):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "runtime"
    make_version(root, "1.0.0")
    _runtime.write_stable_entry(root)
    _runtime.switch_current(root, "1.0.0")
    return root


def start(root: Path) -> str:
    """One start of the unit: the stable entry with ``run``."""
    proc = subprocess.run([str(root / "bin" / "relay-orchestrator"), "run"], capture_output=True,
                          text=True, timeout=30, check=True)
    return proc.stdout.strip()


def upgrade_to(root: Path, version: str, python: str = PYTHON_OK) -> None:
    make_version(root, version, python)
    _runtime.mark_pending(root, _runtime.current_target(root) or "")
    _runtime.switch_current(root, version)


def test_without_a_pending_upgrade_it_runs_current(root: Path) -> None:
    assert start(root) == "ran 1.0.0 run"
    assert start(root) == "ran 1.0.0 run"
    assert not (root / _runtime.ROLLBACK_REASON).exists()


def test_a_new_version_that_comes_up_is_kept(root: Path) -> None:
    upgrade_to(root, "1.1.0")
    assert start(root) == "ran 1.1.0 run"
    assert (root / _runtime.PENDING).read_text() == "1.0.0\n1\n"  # counted
    _runtime.clear_pending(root)  # what the new process does once registered
    assert start(root) == "ran 1.1.0 run"
    assert _runtime.take_rollback_reason(root) is None


def test_one_that_cannot_import_is_rolled_back_at_its_second_start(root: Path) -> None:
    upgrade_to(root, "1.1.0", PYTHON_BROKEN)
    assert start(root) == "ran 1.1.0 run"  # the first start costs nothing extra
    assert start(root) == "ran 1.0.0 run"  # it did not register: checked, rolled back
    assert _runtime.current_target(root) == "1.0.0"
    assert not (root / _runtime.PENDING).exists()
    assert _runtime.take_rollback_reason(root) == (
        "new version failed to start: Traceback (most recent call last):   "
        'File "x.py", line 1, in <module> ImportError: cannot import name run'
    )
    assert _runtime.take_rollback_reason(root) is None  # read once


def test_one_that_never_comes_up_is_rolled_back_at_its_third_start(root: Path) -> None:
    upgrade_to(root, "1.1.0")
    assert [start(root) for _ in range(3)] == ["ran 1.1.0 run", "ran 1.1.0 run", "ran 1.0.0 run"]
    assert _runtime.current_target(root) == "1.0.0"
    assert _runtime.take_rollback_reason(root) == "new version did not come up after 2 starts"


def test_no_rollback_to_a_version_that_is_gone(root: Path) -> None:
    upgrade_to(root, "1.1.0", PYTHON_BROKEN)
    (root / _runtime.PENDING).write_text("0.9.0\n0\n")
    assert [start(root) for _ in range(3)] == ["ran 1.1.0 run"] * 3
    assert _runtime.current_target(root) == "1.1.0"


def test_pruning_keeps_current_and_the_version_to_go_back_to(tmp_path: Path) -> None:
    root = tmp_path / "runtime"
    versions = ["1.0.0", "1.1.0", "1.2.0", "1.3.0", "1.4.0"]
    for age, version in enumerate(versions):
        make_version(root, version)
        stamp = time.time() - 100 + age
        os.utime(_runtime.version_dir(root, version), (stamp, stamp))
    _runtime.switch_current(root, "1.4.0")
    removed = _runtime.prune_versions(root, keep=3, protect=["1.0.0"])
    assert sorted(removed) == ["1.1.0"]
    assert sorted(p.name for p in (root / "versions").iterdir()) == [
        "1.0.0", "1.2.0", "1.3.0", "1.4.0"]


async def test_a_new_environment_gets_the_running_pip(tmp_path: Path) -> None:
    seed = running_pip()
    assert seed is not None, "this test runs from a virtual environment with pip"
    target = tmp_path / "venv"
    await create_venv(target)
    with trio.fail_after(60):
        proc = await trio.run_process([str(target / "bin" / "python"), "-m", "pip", "--version"],
                                      capture_stdout=True)
    out = proc.stdout.decode()
    assert out.startswith("pip ")
    assert str(target) in out  # its own copy, not the running one
