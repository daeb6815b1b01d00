"""Bad input: every field checked, the field named, and nothing started."""

from __future__ import annotations

import shutil
from typing import Any

import pytest

from actors import CommandRejected

from .conftest import Harness

HUGE = "x" * 200_000

# (field or key changed in a good SpawnParams, value, the error it gives)
SPAWN_CASES: list[tuple[str, Any, str]] = [
    ("provider", 5, "invalid params.provider: expected string"),
    ("provider", None, "invalid params.provider: expected string"),
    ("cwd", 1, "invalid params.cwd: expected string"),
    ("cwd", HUGE, "invalid params.cwd: longer than 4096 characters"),
    (
        "workspaceMode",
        "elsewhere",
        "invalid params.workspaceMode: expected one of shared, isolated, inherit",
    ),
    ("workspaceMode", 1, "invalid params.workspaceMode: expected string"),
    ("model", [], "invalid params.model: expected string"),
    ("providerModel", 1, "invalid params.providerModel: expected string"),
    ("effort", {}, "invalid params.effort: expected string"),
    ("profile", 1, "invalid params.profile: expected string"),
    ("agentProfile", "reviewer", "invalid params.agentProfile: expected object"),
    ("label", 1, "invalid params.label: expected string"),
    ("label", "x" * 5000, "invalid params.label: longer than 4096 characters"),
    ("label", "a\0b", "invalid params.label: must not contain NUL"),
    ("label", "\ud800", "invalid params.label: is not valid text"),
    ("tags", "memory-reload:NOTES.md", "invalid params.tags: expected array of strings"),
    ("tags", ["ok", 2], "invalid params.tags[1]: expected string"),
    ("tags", ["t"] * 1000, "invalid params.tags: more than 256 items"),
    ("capabilities", {}, "invalid params.capabilities: expected array of strings"),
    ("approvalMode", "whatever", "invalid params.approvalMode: expected one of"),
    ("permissionMode", "root", "invalid params.permissionMode: expected one of"),
    ("permissionMode", True, "invalid params.permissionMode: expected string"),
    ("providerArgs", "--verbose", "invalid params.providerArgs: expected array of strings"),
    ("providerArgs", [1], "invalid params.providerArgs[0]: expected string"),
    ("prompt", 1, "invalid params.prompt: expected string"),
    ("prompt", HUGE, "invalid params.prompt: longer than 100000 characters"),
    ("headless", "yes", "invalid params.headless: expected boolean"),
    ("policyName", 1, "invalid params.policyName: expected string"),
    ("spawnRequestId", 1, "invalid params.spawnRequestId: expected string"),
    ("agentId", 1, "invalid params.agentId: expected string"),
    ("agentId", "ag 1;rm", "invalid params.agentId: expected 1 to 128 letters"),
    ("agentId", "../ag", "invalid params.agentId: expected 1 to 128 letters"),
    ("agentId", "", "invalid params.agentId: expected 1 to 128 letters"),
    ("env", ["A=1"], "invalid params.env: expected object of strings"),
    ("env", {"A=B": "x"}, "invalid params.env: invalid variable name 'A=B'"),
    ("env", {"A\0B": "x"}, "invalid params.env: invalid variable name 'A\\x00B'"),
    ("env", {"": "x"}, "invalid params.env: invalid variable name ''"),
    ("env", {"TOKEN": 1}, "invalid params.env.TOKEN: expected string"),
    ("env", {"TOKEN": "se\0cret"}, "invalid params.env.TOKEN: value must not contain NUL"),
    ("env", {"TOKEN": HUGE}, "invalid params.env.TOKEN: value longer than 32768 characters"),
    ("env", {f"K{i}": "v" for i in range(300)}, "invalid params.env: more than 256 variables"),
    ("requestedBy", 1, "invalid params.requestedBy: expected string"),
    ("requestedAt", "now", "invalid params.requestedAt: expected integer"),
    ("requestedAt", True, "invalid params.requestedAt: expected integer"),
    ("requestedAt", 1.5, "invalid params.requestedAt: expected integer"),
    ("requestedAt", -1, "invalid params.requestedAt: must be between 0 and"),
    ("requestedAt", 2**70, "invalid params.requestedAt: must be between 0 and"),
    ("reason", 7, "invalid params.reason: expected string"),
    ("action", [], "invalid params.action: expected string"),
]


def spawn_case_params(harness: Harness, field: str, value: Any) -> dict[str, Any]:
    params = harness.spawn(agentId="ag_v")
    if value is None:
        params.pop(field, None)
    else:
        params[field] = value
    return params


def assert_nothing_ran(harness: Harness) -> None:
    assert harness.launcher.specs == []
    assert harness.reporter.reports == []
    assert harness.store.load_agents() == []


@pytest.mark.parametrize(("field", "value", "error"), SPAWN_CASES, ids=[c[0] for c in SPAWN_CASES])
async def test_bad_spawn_params_name_the_field(
    harness: Harness, field: str, value: Any, error: str
) -> None:
    fleet = await harness.start()
    with pytest.raises(CommandRejected) as caught:
        await fleet.execute("agent.spawn", spawn_case_params(harness, field, value), "c1")
    assert str(caught.value).startswith(error)
    assert len(str(caught.value)) < 300
    assert_nothing_ran(harness)
    assert fleet.agents() == []


@pytest.mark.parametrize("params", [None, [], "spawn", 5, True])
async def test_params_must_be_an_object(harness: Harness, params: Any) -> None:
    fleet = await harness.start()
    for command in ("agent.spawn", "agent.stop", "agent.restart", "agent.compact"):
        with pytest.raises(CommandRejected, match=r"^invalid params: expected object$"):
            await fleet.execute(command, params, "c1")
    for command in ("orchestrator.restart", "orchestrator.shutdown"):
        with pytest.raises(CommandRejected, match=r"^invalid params: expected object$"):
            await fleet.execute(command, params, "c1")
    assert_nothing_ran(harness)


async def test_cwd_must_stay_within_base_dir(harness: Harness) -> None:
    fleet = await harness.start()
    outside = harness.tmp / "outside"
    outside.mkdir()
    (harness.base / "escape").symlink_to(outside)
    (harness.base / "inside").mkdir()
    error = f"cwd must be within orchestrator base directory: {harness.base}"
    for cwd in ("..", "../outside", "inside/../../outside", str(outside), "/", "escape", "escape/"):
        with pytest.raises(CommandRejected) as caught:
            await fleet.execute("agent.spawn", harness.spawn(cwd=cwd), "c1")
        assert str(caught.value) == error, cwd
    with pytest.raises(CommandRejected, match="^invalid params.cwd: not a directory: missing$"):
        await fleet.execute("agent.spawn", harness.spawn(cwd="missing"), "c1")
    assert_nothing_ran(harness)
    # Relative cwds are taken within base; `..` that stays inside is fine.
    result = await fleet.execute("agent.spawn", harness.spawn(cwd="inside/../inside"), "c2")
    assert fleet.agents()[0]["cwd"] == str((harness.base / "inside").resolve())
    assert result["pid"] > 0


async def test_unknown_and_disabled_providers(harness: Harness) -> None:
    fleet = await harness.start(harness.config(command={"enabled": False}))
    for provider in ("nope", "command", "x" * 64):
        with pytest.raises(CommandRejected) as caught:
            await fleet.execute("agent.spawn", {**harness.spawn(), "provider": provider}, "c1")
        assert str(caught.value) == f"provider not available on this orchestrator: {provider}"
    with pytest.raises(CommandRejected, match="^invalid params.provider: longer than 64"):
        await fleet.execute("agent.spawn", {**harness.spawn(), "provider": "x" * 65}, "c1")
    assert_nothing_ran(harness)


@pytest.mark.skipif(shutil.which("claude") is not None, reason="claude is installed here")
async def test_builtin_provider_without_its_cli_is_not_available(harness: Harness) -> None:
    fleet = await harness.start()
    with pytest.raises(
        CommandRejected, match="^provider not available on this orchestrator: claude$"
    ):
        await fleet.execute("agent.spawn", {"provider": "claude"}, "c1")


async def test_command_provider_needs_a_program(harness: Harness) -> None:
    fleet = await harness.start()
    with pytest.raises(CommandRejected, match=r"^invalid params.providerArgs: provider command"):
        await fleet.execute("agent.spawn", {"provider": "command"}, "c1")
    with pytest.raises(CommandRejected, match="^could not start agent: program not found: nope-x$"):
        await fleet.execute(
            "agent.spawn", {"provider": "command", "providerArgs": ["nope-x"]}, "c1"
        )
    assert_nothing_ran(harness)


OTHER_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("agent.stop", {"agentId": 5}, "invalid params.agentId: expected string"),
    (
        "agent.stop",
        {"agentId": "ag_v", "timeoutMs": "5000"},
        "invalid params.timeoutMs: expected integer",
    ),
    (
        "agent.stop",
        {"agentId": "ag_v", "timeoutMs": 1.5},
        "invalid params.timeoutMs: expected integer",
    ),
    (
        "agent.stop",
        {"agentId": "ag_v", "timeoutMs": -1},
        "invalid params.timeoutMs: must be between 0",
    ),
    (
        "agent.stop",
        {"agentId": "ag_v", "timeoutMs": 10**12},
        "invalid params.timeoutMs: must be between 0",
    ),
    (
        "agent.stop",
        {"agentId": "ag_v", "graceful": "yes"},
        "invalid params.graceful: expected boolean",
    ),
    ("agent.stop", {"spawnRequestId": ["sp"]}, "invalid params.spawnRequestId: expected string"),
    ("agent.stop", {"policyName": {}}, "invalid params.policyName: expected string"),
    ("agent.stop", {"tmuxSession": 1}, "invalid params.tmuxSession: expected string"),
    (
        "agent.stop",
        {"agentId": "ag_v", "requestedAt": "x"},
        "invalid params.requestedAt: expected integer",
    ),
    (
        "agent.restart",
        {"agentId": "ag_v", "restartSpawn": "x"},
        "invalid params.restartSpawn: expected object",
    ),
    (
        "agent.restart",
        {"agentId": "ag_v", "restartSpawn": {"provider": 1}},
        "invalid params.restartSpawn.provider: expected string",
    ),
    (
        "agent.restart",
        {"agentId": "ag_v", "restartSpawn": {"provider": "command", "env": {"K": 1}}},
        "invalid params.restartSpawn.env.K: expected string",
    ),
    (
        "agent.restart",
        {"agentId": "ag_v", "timeoutMs": "1"},
        "invalid params.timeoutMs: expected integer",
    ),
    (
        "agent.compact",
        {"agentId": "ag_v", "memory": "NOTES.md"},
        "invalid params.memory: expected object",
    ),
    (
        "agent.compact",
        {"agentId": "ag_v", "memory": {"alwaysReload": "NOTES.md"}},
        "invalid params.memory.alwaysReload: expected array of strings",
    ),
    (
        "agent.compact",
        {"agentId": "ag_v", "memory": {"alwaysReload": [1]}},
        "invalid params.memory.alwaysReload[0]: expected string",
    ),
    ("orchestrator.restart", {"agentId": 1}, "invalid params.agentId: expected string"),
    ("orchestrator.shutdown", {"timeoutMs": "soon"}, "invalid params.timeoutMs: expected integer"),
]


@pytest.mark.parametrize(("command", "params", "error"), OTHER_CASES)
async def test_bad_params_of_other_commands_name_the_field(
    harness: Harness, command: str, params: dict[str, Any], error: str
) -> None:
    fleet = await harness.start()
    spawned = await fleet.execute("agent.spawn", harness.spawn(agentId="ag_v"), "c0")
    mark = harness.reporter.mark()
    with pytest.raises(CommandRejected) as caught:
        await fleet.execute(command, params, "c1")
    assert str(caught.value).startswith(error)
    assert harness.reporter.statuses("ag_v", mark) == []  # untouched
    assert len(harness.launcher.specs) == 1
    assert fleet.agents()[0]["pid"] == spawned["pid"]
    assert fleet.agents()[0]["status"] == "running"


async def test_unknown_fields_are_ignored(harness: Harness) -> None:
    fleet = await harness.start()
    params = {**harness.spawn(agentId="ag_u"), "rig": {"x": 1}, "somethingNew": [1, 2]}
    assert (await fleet.execute("agent.spawn", params, "c1"))["agentId"] == "ag_u"
    stop = {"agentId": "ag_u", "futureField": {"a": None}, "prompt": None}
    assert (await fleet.execute("agent.stop", stop, "c2"))["agentId"] == "ag_u"
