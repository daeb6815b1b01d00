"""What the relay asks for happens in the agent's conversation: the model
stub on loopback sees it (claude first, then codex and gemini)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from ..model_stubs import anthropic, gemini, openai
from .conftest import WAIT, Real

pytestmark = pytest.mark.slow

NOTES = "remember the milk\nand the eggs, 42 of them\n"
COMPACT_TIME = 30.0  # longer than any fixed delay would have waited


def paste(real: Real, agent_id: str, text: str) -> None:
    """Type a message into the agent as a person at its terminal would."""
    import subprocess

    target = f"=relay-{agent_id}:"
    tmux = ["tmux", "-N", "-L", real.socket]
    subprocess.run([*tmux, "load-buffer", "-b", "t", "-"], input=text.encode(), check=True)
    subprocess.run([*tmux, "paste-buffer", "-d", "-p", "-b", "t", "-t", target], check=True)
    time.sleep(0.3)  # noqa: ASYNC251 (a person's pause before Enter; a thread)
    subprocess.run([*tmux, "send-keys", "-t", target, "Enter"], check=True)


async def converse(real: Real, stub: Any, agent_id: str, text: str) -> None:
    count = len(stub.chats())
    await trio.to_thread.run_sync(paste, real, agent_id, text)
    await trio.to_thread.run_sync(
        stub.wait_for, lambda r: r.kind == "chat" and r.last_user_text == text, WAIT
    )
    assert len(stub.chats()) == count + 1
    await real.activity(agent_id, "ready")


async def test_claude_compaction_is_followed_by_the_reload_once_it_has_ended(
    real: Real, stub_factory: Any
) -> None:
    stub = stub_factory(anthropic.AnthropicStub(reply="noted"))
    env = real.env(anthropic.cli_env(str(real.home), stub.url))
    cwd = real.base / "proj"
    cwd.mkdir()
    (cwd / "NOTES.md").write_text(NOTES)
    spawned = await real.spawn("claude", "ag_cc", cwd, env, prompt="first question",
                               tags=["memory-reload:NOTES.md"])
    assert spawned["status"] == "succeeded", spawned["error"]
    await trio.to_thread.run_sync(stub.wait_for, lambda r: r.kind == "chat", WAIT)
    await real.activity("ag_cc", "ready")
    await converse(real, stub, "ag_cc", "second question")
    await converse(real, stub, "ag_cc", "third question")

    stub.compact_delay = COMPACT_TIME
    before = len(stub.requests)
    asked = trio.current_time()
    command = await real.api("POST", "/api/agents/ag_cc/action", {"action": "compact"})
    compact = await trio.to_thread.run_sync(
        stub.wait_for, lambda r: r.kind == "compact", WAIT
    )
    settled = await real.settle(command, COMPACT_TIME + WAIT)
    assert settled["status"] == "succeeded", settled["error"]
    assert settled["result"] == {"agentId": "ag_cc", "compacted": True, "reloaded": ["NOTES.md"]}
    assert trio.current_time() - asked >= COMPACT_TIME
    after = stub.requests[before:]
    kinds = [r.kind for r in after if r.kind != "other"]
    assert kinds[:2] == ["compact", "chat"], kinds  # the reload only after the compaction
    assert compact.text.count("third question") >= 1  # the conversation was compacted
    reload = next(r for r in after if r.kind == "chat")
    assert "remember the milk" in reload.text and "and the eggs, 42 of them" in reload.text
    assert "@NOTES.md" in reload.last_user_text


async def test_claude_compaction_of_an_empty_conversation_still_reloads_memory(
    real: Real, stub_factory: Any
) -> None:
    stub = stub_factory(anthropic.AnthropicStub(reply="noted"))
    env = real.env(anthropic.cli_env(str(real.home), stub.url))
    cwd = real.base / "empty"
    cwd.mkdir()
    (cwd / "NOTES.md").write_text(NOTES)
    spawned = await real.spawn("claude", "ag_ce", cwd, env, tags=["memory-reload:NOTES.md"])
    assert spawned["status"] == "succeeded", spawned["error"]
    await real.activity("ag_ce", "ready")
    settled = await real.action("ag_ce", "compact")
    assert settled["status"] == "succeeded", settled["error"]
    assert settled["result"] == {"agentId": "ag_ce", "compacted": False, "reloaded": ["NOTES.md"]}
    reload = await trio.to_thread.run_sync(stub.wait_for, lambda r: r.kind == "chat", WAIT)
    assert "remember the milk" in reload.text


async def test_claude_resumes_its_conversation_after_a_reboot(
    relay: Any, tmp_path: Path, clis_bin: Path, monkeypatch: pytest.MonkeyPatch,
    stub_factory: Any,
) -> None:
    import os
    import signal
    import subprocess
    from functools import partial

    from orchestrator._app import run_orchestrator, tmux_socket

    from ..conftest import make_settings
    from .conftest import processes_of

    boot = ["boot-a"]
    monkeypatch.setattr("actors._fleet.read_boot_id", lambda path: boot[0])
    path = f"{clis_bin}{os.pathsep}{os.environ['PATH']}"
    monkeypatch.setenv("PATH", path)
    home = tmp_path / "home"
    home.mkdir()
    settings = make_settings(tmp_path, relay.url, providers={
        "claude": {"session": "tmux", "resume_dead_agents": "after-reboot"}})
    socket = tmux_socket(settings)
    stub = stub_factory(anthropic.AnthropicStub(reply="noted"))
    env_for = {"PATH": path, "TERM": "xterm-256color",
               **anthropic.cli_env(str(home), stub.url)}
    try:
        async with trio.open_nursery() as first:
            orch = await first.start(partial(run_orchestrator, settings))
            real = Real(relay, orch, socket, settings.base_dir, home, path)
            spawned = await real.spawn("claude", "ag_rb", real.base / "proj", env_for,
                                       prompt="first question")
            assert spawned["status"] == "succeeded", spawned["error"]
            await trio.to_thread.run_sync(stub.wait_for, lambda r: r.kind == "chat", WAIT)
            await real.activity("ag_rb", "ready")
            await converse(real, stub, "ag_rb", "second question")
            session_id = real.agent("ag_rb")["providerSessionId"]
            # claude has saved the exchange (its transcript) before the power goes.
            with trio.fail_after(WAIT):
                while not any("second question" in p.read_text() for p in  # noqa: ASYNC110
                              home.glob(f".claude/projects/*/{session_id}.jsonl")):
                    await trio.sleep(0.05)
            first.cancel_scope.cancel()  # the orchestrator goes; its agent stays
        # The reboot: every process of the agent and its tmux server, killed.
        for pid in processes_of(home):
            os.kill(pid, signal.SIGKILL)
        subprocess.run(["tmux", "-N", "-L", socket, "kill-server"], capture_output=True,
                       check=False)
        boot[0] = "boot-b"
        async with trio.open_nursery() as second:
            orch = await second.start(partial(run_orchestrator, settings))
            real = Real(relay, orch, socket, settings.base_dir, home, path)
            agent = await real.until(
                "ag_rb", lambda a: a["status"] == "running" and "resumedFrom" in a["meta"],
                "was resumed")
            assert agent["meta"]["resumedFrom"]["reason"] == "host rebooted"
            assert agent["providerSessionId"] == session_id
            await real.activity("ag_rb", "ready")
            count = len(stub.chats())
            await converse(real, stub, "ag_rb", "after the reboot")
            resumed = json.dumps(stub.chats()[count].body["messages"])
            assert "first question" in resumed and "second question" in resumed
            stopped = await real.action("ag_rb", "stop")
            assert stopped["status"] == "succeeded", stopped["error"]
            second.cancel_scope.cancel()
    finally:
        for pid in processes_of(home):
            os.kill(pid, signal.SIGKILL)
        subprocess.run(["tmux", "-N", "-L", socket, "kill-server"], capture_output=True,
                       check=False)
