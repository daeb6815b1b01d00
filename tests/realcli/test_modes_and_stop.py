"""Every flag a provider emits is one the pinned CLI accepts; a CLI that
rejects its argv is reported with its own words; stop ends each CLI by its
own quit and leaves no process behind."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio

from actors._params import PERMISSION_MODES

from ..model_stubs import anthropic, gemini, openai
from .conftest import WAIT, Real, processes_of

pytestmark = pytest.mark.slow

RELAY_MODES = ("guarded", "default", "acceptEdits", "auto", "full-auto", "plan", "read-only",
               "dontAsk", "bypassPermissions", "yolo")
STUBS = {"claude": anthropic.AnthropicStub, "codex": openai.OpenAIStub,
         "gemini": gemini.GeminiStub}
ENVS = {"claude": anthropic.cli_env, "codex": openai.cli_env, "gemini": gemini.cli_env}
FIELDS = {  # a model and an effort of each, as the relay may send them
    "claude": {"model": "sonnet", "effort": "high"},
    "codex": {"model": "gpt-5.1-codex", "effort": "medium"},
    "gemini": {"model": "gemini-2.5-pro", "effort": "high"},
}


def test_the_relay_modes_are_the_ones_checked_here() -> None:
    assert set(RELAY_MODES) == set(PERMISSION_MODES)


def provider_env(real: Real, provider: str, stub: Any, home: Path) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    extra = {}
    if provider == "claude" and os.geteuid() == 0:
        # claude refuses bypassPermissions as root unless told it is sandboxed:
        # these tests run as root in CI, a user's agents do not.
        extra["IS_SANDBOX"] = "1"
    return real.env(ENVS[provider](str(home), stub.url), **extra)


@pytest.mark.parametrize("provider", ["claude", "codex", "gemini"])
async def test_every_approval_mode_starts_the_cli(
    real: Real, stub_factory: Any, provider: str
) -> None:
    stub = stub_factory(STUBS[provider]())
    env = provider_env(real, provider, stub, real.home)

    async def spawn(mode: str) -> None:
        agent_id = f"ag_{provider}_{mode.lower().replace('-', '_')}"
        spawned = await real.spawn(provider, agent_id, real.base / agent_id, env,
                                   approvalMode=mode, **FIELDS[provider])
        assert spawned["status"] == "succeeded", spawned["error"]
        agent = await real.until(
            agent_id,
            lambda a: a["status"] != "running" or a.get("activity") == "ready"
            or "Bypass Permissions mode" in (a.get("question") or ""),
            "got to its prompt",
        )
        assert agent["status"] == "running", f"{mode}: {agent['exit']}"
        if agent["activity"] != "ready":  # only a mode's own confirmation is left to a person
            assert (mode, agent["activity"]) in (("bypassPermissions", "asking"),
                                                 ("yolo", "asking"))

    async with trio.open_nursery() as nursery:
        for mode in RELAY_MODES:
            nursery.start_soon(spawn, mode)


@pytest.mark.parametrize(
    ("provider", "args", "words"),
    [
        ("codex", ["--full-auto"], "unexpected argument '--full-auto' found"),
        ("claude", ["--session-id", "not-a-uuid"], "Invalid session ID"),
        ("gemini", ["--approval-mode", "sometimes"], "Invalid values"),
    ],
)
async def test_a_cli_that_rejects_its_argv_is_reported_exited_in_its_own_words(
    real: Real, stub_factory: Any, provider: str, args: list[str], words: str
) -> None:
    stub = stub_factory(STUBS[provider]())
    env = provider_env(real, provider, stub, real.home)
    spawned = await real.spawn(provider, "ag_bad", real.base / "bad", env, providerArgs=args)
    assert spawned["status"] == "succeeded", spawned["error"]
    agent = await real.until("ag_bad", lambda a: a["status"] == "exited", "exited")
    assert agent["exit"]["exitCode"] not in (0, None)
    assert words in agent["exit"]["lastOutput"]
    assert "activity" not in agent


QUIT_WORDS = {
    "claude": "claude --resume",
    "codex": "codex resume",
    "gemini": "",
}


@pytest.mark.parametrize("provider", ["claude", "codex", "gemini"])
async def test_stop_quits_the_cli_as_a_person_would_and_nothing_outlives_it(
    real: Real, stub_factory: Any, provider: str, tmp_path: Path
) -> None:
    stub = stub_factory(STUBS[provider]())
    env = provider_env(real, provider, stub, real.home)
    cwd = real.base / "work"
    if provider == "codex":
        cwd.mkdir(parents=True)
        subprocess.run(["git", "init", "-q", str(cwd)], check=True)
    spawned = await real.spawn(provider, "ag_q", cwd, env, prompt="say hello")
    assert spawned["status"] == "succeeded", spawned["error"]
    await trio.to_thread.run_sync(stub.wait_for, lambda r: r.kind == "chat", WAIT)
    await real.activity("ag_q", "ready")
    assert processes_of(real.home)  # it runs
    stopped = await real.action("ag_q", "stop")
    assert stopped["status"] == "succeeded", stopped["error"]
    agent = real.agent("ag_q")
    assert agent["status"] == "stopped"
    # Ended by its own quit: exit code 0, no signal; a quit's farewell.
    assert (agent["exit"]["exitCode"], agent["exit"]["signal"]) == (0, None), agent["exit"]
    assert QUIT_WORDS[provider] in agent["exit"]["lastOutput"]
    with trio.fail_after(10):
        while left := processes_of(real.home):  # noqa: ASYNC110 (bounded)
            await trio.sleep(0.05)
    assert not left


@pytest.mark.parametrize("provider", ["claude", "codex", "gemini"])
async def test_restart_spawn_quits_the_old_cli_then_runs_the_new_argv(
    real: Real, stub_factory: Any, provider: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psutil

    stub = stub_factory(STUBS[provider]())
    env = provider_env(real, provider, stub, real.home)
    cwd = real.base / "work"
    cwd.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(cwd)], check=True)
    spawned = await real.spawn(provider, "ag_rs", cwd, env, approvalMode="default")
    assert spawned["status"] == "succeeded", spawned["error"]
    await real.activity("ag_rs", "ready")
    old_pid = spawned["result"]["pid"]
    new = {"provider": provider, "agentId": "ag_rs", "cwd": str(cwd), "env": env,
           "approvalMode": "plan", "model": FIELDS[provider]["model"]}
    reports: list[dict[str, Any]] = []  # every report of the agent the relay receives
    store_class = type(real.relay._store)
    put_agent = store_class.put_agent

    def recording(self: Any, orch_id: str, agent_id: str, body: Any) -> Any:
        reports.append(dict(body))
        return put_agent(self, orch_id, agent_id, body)

    monkeypatch.setattr(store_class, "put_agent", recording)
    command = real.relay.create_command(f"orch:{real.orch.id}", "agent.restart",
                                        {"agentId": "ag_rs", "restartSpawn": new})
    settled = await real.settle(command)
    stopped = [r for r in reports if r.get("status") == "stopped"]
    # The old CLI ended by its own quit (the stop before the new start is graceful).
    assert [(r["exit"]["exitCode"], r["exit"]["signal"]) for r in stopped] == [(0, None)]
    first_new = next(i for i, r in enumerate(reports) if r.get("pid") == settled["result"]["pid"])
    assert reports.index(stopped[0]) < first_new
    assert settled["status"] == "succeeded", settled["error"]
    assert settled["result"]["previousPid"] == old_pid
    new_pid = settled["result"]["pid"]
    assert new_pid != old_pid and not psutil.pid_exists(old_pid)
    agent = await real.activity("ag_rs", "ready")
    assert agent["pid"] == new_pid and agent["restartCount"] == 1
    assert agent["meta"]["approvalMode"] == "plan"
    argv = " ".join(psutil.Process(new_pid).cmdline())
    for child in psutil.Process(new_pid).children(recursive=True):
        argv += " " + " ".join(child.cmdline())
    assert FIELDS[provider]["model"] in argv and PLAN[provider] in argv, argv


PLAN = {  # the relay's "plan" in each CLI's argv
    "claude": "--permission-mode plan",
    "codex": "--sandbox read-only",
    "gemini": "--approval-mode plan",
}
