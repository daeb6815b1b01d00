"""Claude Code, pinned, in tmux: first-run questions, activity, input only when ready."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from ..model_stubs.anthropic import AnthropicStub, cli_env
from .conftest import WAIT, Real, RealWith

pytestmark = pytest.mark.slow


@pytest.fixture
def stub(stub_factory: Any) -> AnthropicStub:
    stub: AnthropicStub = stub_factory(AnthropicStub(reply="stub reply"))
    return stub


async def test_a_new_folder_gets_past_trust_and_api_key_and_the_prompt_arrives_once(
    real: Real, stub: AnthropicStub
) -> None:
    env = real.env(cli_env(str(real.home), stub.url))
    prompt = "-starts with a dash\nline two \"double\" 'single' $(echo hi) `uname`; rm -rf /nope"
    spawned = await real.spawn("claude", "ag_cl", real.base / "fresh", env, prompt=prompt)
    assert spawned["status"] == "succeeded", spawned["error"]
    agent = await real.activity("ag_cl", "ready", "busy")
    assert agent["status"] == "running"
    chat = await trio.to_thread.run_sync(stub.wait_for, lambda r: r.kind == "chat", WAIT)
    assert chat.last_user_text == prompt
    await real.activity("ag_cl", "ready")
    assert [r.last_user_text for r in stub.chats()] == [prompt]  # once
    trusted, approved = _answers(real.home, real.base / "fresh")
    assert trusted and approved == [env["ANTHROPIC_API_KEY"][-20:]]


async def test_trust_never_leaves_the_question_to_a_person_and_compact_types_nothing(
    real_with: RealWith, stub: AnthropicStub
) -> None:
    real = await real_with(claude={"trust_workspace": "never"})
    env = real.env(cli_env(str(real.home), stub.url))
    spawned = await real.spawn("claude", "ag_ask", real.base / "untrusted", env)
    assert spawned["status"] == "succeeded", spawned["error"]
    agent = await real.activity("ag_ask", "asking")
    assert "Is this a project you created or one you trust?" in agent["question"]
    assert "Yes, I trust this folder" in agent["question"]
    before = real.screen("ag_ask")
    compacted = await real.action("ag_ask", "compact")
    assert compacted["status"] == "failed"
    assert compacted["error"].startswith("agent is waiting for an answer: ")
    assert "trust" in compacted["error"]
    assert real.screen("ag_ask") == before  # nothing typed
    assert real.agent("ag_ask")["activity"] == "asking"
    assert _answers(real.home, real.base / "untrusted") == (False, [env["ANTHROPIC_API_KEY"][-20:]])


async def test_without_accept_env_api_key_the_key_question_is_left_to_a_person(
    real_with: RealWith, stub: AnthropicStub
) -> None:
    real = await real_with(claude={"accept_env_api_key": False})
    env = real.env(cli_env(str(real.home), stub.url))
    spawned = await real.spawn("claude", "ag_key", real.base / "keyed", env)
    assert spawned["status"] == "succeeded", spawned["error"]
    agent = await real.until(
        "ag_key", lambda a: "use this API key" in (a.get("question") or ""), "asked for its key")
    assert agent["activity"] == "asking"
    assert _answers(real.home, real.base / "keyed") == (True, [])  # the folder, not the key


async def test_trust_worktrees_trusts_only_the_worktrees_the_orchestrator_made(
    real_with: RealWith, stub: AnthropicStub
) -> None:
    import subprocess

    real = await real_with(claude={"trust_workspace": "worktrees"})
    env = real.env(cli_env(str(real.home), stub.url))
    repo = real.base / "repo"
    repo.mkdir()
    for argv in (["git", "init", "-q"], ["git", "-c", "user.email=t@t", "-c", "user.name=t",
                                         "commit", "-q", "--allow-empty", "-m", "init"]):
        subprocess.run(argv, cwd=repo, check=True)
    isolated = await real.spawn("claude", "ag_wt", repo, env, workspaceMode="isolated")
    assert isolated["status"] == "succeeded", isolated["error"]
    shared = await real.spawn("claude", "ag_sh", repo, env, workspaceMode="shared")
    assert shared["status"] == "succeeded", shared["error"]
    await real.activity("ag_wt", "ready")  # its worktree: trusted
    agent = await real.activity("ag_sh", "asking")  # the user's own checkout: a person says
    assert "trust" in agent["question"]


def _answers(home: Any, cwd: Any) -> tuple[bool, list[str]]:
    """What claude itself saved of the two answers (its own config file)."""
    import json

    config = json.loads((home / ".claude.json").read_text())
    trusted = bool(config.get("projects", {}).get(str(cwd), {}).get("hasTrustDialogAccepted"))
    return trusted, list(config.get("customApiKeyResponses", {}).get("approved", []))
