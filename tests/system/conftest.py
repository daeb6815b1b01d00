"""Fixtures for the system tests: the systemd --user sandbox, and wheels to install.

``systemd_user`` is the shared fixture of ``tests/conftest.py``: it skips with a
reason where the sandbox cannot be had, and fails under CI.
``wheelhouse`` builds, once per session, wheels of this checkout at the
versions the self-upgrade tests install, in a place the test user can read.
``installed_service``: the test installs the user's one
``relay-orchestrator.service``; it waits for another session's test that has it.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator

import pytest

from ..supervisors.systemd_sandbox_support import SystemdUser, unavailable
from .sandbox import (
    Wheelhouse,
    break_package_import,
    break_run_import,
    break_run_start,
    build_wheelhouse,
    bump,
    checkout_version,
    service_slot,
)

A = checkout_version()
B = bump(A, 1)
B_NO_IMPORT = bump(A, 2)  # nothing imports: refused by the install's verification
B_RUN_IMPORT = bump(A, 3)  # `run` cannot import: the stable entry rolls it back at once
B_RUN_EXITS = bump(A, 4)  # imports, exits before registering: rolled back by counting
VARIANTS = {
    A: None,
    B: None,
    B_NO_IMPORT: break_package_import,
    B_RUN_IMPORT: break_run_import,
    B_RUN_EXITS: break_run_start,
}


@pytest.fixture(scope="session")
def wheelhouse(systemd_user: SystemdUser) -> Iterator[Wheelhouse]:
    dest = systemd_user.home / "relay-tests" / f"wheelhouse-{uuid.uuid4().hex[:8]}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        try:
            wheels = build_wheelhouse(dest, VARIANTS)
        except RuntimeError as exc:  # pip could not build or download: say what it said
            unavailable(f"cannot build the wheels the self-upgrade test installs: {exc}")
        yield wheels
    finally:
        shutil.rmtree(dest, ignore_errors=True)


@pytest.fixture
def installed_service(systemd_user: SystemdUser) -> Iterator[None]:
    """This test may install the user's relay-orchestrator.service (one test at a time)."""
    with service_slot(systemd_user):
        yield
