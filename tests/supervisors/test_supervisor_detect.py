"""detect(): which supervisor runs us, and our own unit."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from supervisors import (
    SUPERVISOR_ENV_KEYS,
    DirectLauncher,
    LaunchdSupervisor,
    NoneSupervisor,
    RestartError,
    SupervisorConfigError,
    SystemdLauncher,
    SystemdSupervisor,
    child_env,
    detect,
    supervisor_name,
)
from supervisors._systemd_backend import unit_from_cgroup

HYBRID = """\
9:name=systemd:/
4:memory:/process_api/01a0
0::/relay-orchestrator-ci/app.slice/relay-orchestrator.service
"""
PURE_V2_USER = (
    "0::/user.slice/user-1000.slice/user@1000.service/app.slice/relay-orchestrator.service\n"
)
SYSTEM = "0::/system.slice/relay-orchestrator.service\n"
DELEGATED = "0::/user.slice/user-1000.slice/user@1000.service/app.slice/x.service/payload\n"
SESSION = "0::/user.slice/user-1000.slice/session-2.scope\n"


@pytest.mark.parametrize(
    ("text", "unit"),
    [
        (HYBRID, "relay-orchestrator.service"),
        (PURE_V2_USER, "relay-orchestrator.service"),
        (SYSTEM, "relay-orchestrator.service"),
        (DELEGATED, "x.service"),
        (SESSION, None),
        ("0::/\n", None),
        ("", None),
    ],
)
def test_unit_from_cgroup(text: str, unit: str | None) -> None:
    assert unit_from_cgroup(text) == unit


def cgroup_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cgroup"
    path.write_text(text)
    return path


def test_systemd_when_started_by_systemd(tmp_path: Path) -> None:
    env = {"INVOCATION_ID": "abc", "MANAGERPID": "1", "NOTIFY_SOCKET": "/run/x"}
    sup = detect(env=env, proc_cgroup=cgroup_file(tmp_path, PURE_V2_USER), systemd_backend="cli")
    assert isinstance(sup, SystemdSupervisor)
    assert (sup.name, sup.self_unit, sup.can_self_upgrade) == (
        "systemd",
        "relay-orchestrator.service",
        True,
    )
    assert isinstance(sup.launcher, SystemdLauncher)
    assert sup.backend.name == "cli"
    assert sup.notifier.address == "/run/x"


def test_systemd_without_a_known_unit_cannot_self_upgrade(tmp_path: Path) -> None:
    sup = detect(
        env={"INVOCATION_ID": "abc"},
        proc_cgroup=cgroup_file(tmp_path, SESSION),
        systemd_backend="cli",
    )
    assert sup.name == "systemd"
    assert sup.self_unit is None
    assert not sup.can_self_upgrade


def test_self_unit_setting_wins(tmp_path: Path) -> None:
    sup = detect(
        "systemd",
        "my-orchestrator",
        env={},
        proc_cgroup=cgroup_file(tmp_path, SESSION),
        systemd_backend="cli",
    )
    assert sup.self_unit == "my-orchestrator.service"
    assert sup.can_self_upgrade
    with pytest.raises(SupervisorConfigError, match="unit name"):
        detect("systemd", "bad name!", env={}, systemd_backend="cli")


def test_launchd_when_started_by_launchd() -> None:
    sup = detect(env={"XPC_SERVICE_NAME": "relay-orchestrator"})
    assert isinstance(sup, LaunchdSupervisor)
    assert (sup.name, sup.self_unit, sup.can_self_upgrade) == (
        "launchd",
        "relay-orchestrator",
        True,
    )
    assert isinstance(sup.launcher, DirectLauncher)
    assert sup.uid == os.getuid()


@pytest.mark.parametrize("value", ["0", "application.com.apple.Terminal.1234", ""])
def test_a_terminal_on_macos_is_not_launchd(value: str) -> None:
    assert detect(env={"XPC_SERVICE_NAME": value}).name == "none"


async def test_none_in_the_foreground() -> None:
    sup = detect(env={})
    assert isinstance(sup, NoneSupervisor)
    assert (sup.name, sup.self_unit, sup.can_self_upgrade) == ("none", None, False)
    assert isinstance(sup.launcher, DirectLauncher)
    assert not sup.notify_ready()
    with pytest.raises(RestartError, match="self-upgrade needs systemd or launchd"):
        await sup.restart_self()


def test_a_named_choice_is_taken_as_given() -> None:
    env = {"INVOCATION_ID": "abc"}
    assert detect("none", env=env).name == "none"
    assert detect("launchd", "lbl", env=env).self_unit == "lbl"
    with pytest.raises(SupervisorConfigError, match="--supervisor must be one of"):
        detect("upstart", env=env)


@pytest.mark.parametrize(("choice", "env", "name"), [
    ("auto", {"INVOCATION_ID": "abc"}, "systemd"),
    ("auto", {"XPC_SERVICE_NAME": "relay-orchestrator"}, "launchd"),
    ("auto", {"XPC_SERVICE_NAME": "0"}, "none"),
    ("auto", {}, "none"),
    ("launchd", {"INVOCATION_ID": "abc"}, "launchd"),
])
def test_supervisor_name_is_what_detect_picks_without_opening_anything(
    choice: str, env: dict[str, str], name: str
) -> None:
    assert supervisor_name(choice, env) == name
    if name != "systemd":  # detect would open a backend for systemd
        assert detect(choice, env=env).name == name
    with pytest.raises(SupervisorConfigError, match="--supervisor must be one of"):
        supervisor_name("upstart", env)


def test_child_env_drops_what_the_supervisor_set_for_us() -> None:
    env = {key: "x" for key in SUPERVISOR_ENV_KEYS} | {"PATH": "/bin", "HOME": "/h"}
    assert child_env(env) == {"PATH": "/bin", "HOME": "/h"}
