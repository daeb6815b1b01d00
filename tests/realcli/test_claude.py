"""Claude Code, pinned, in tmux: first-run questions, activity, input only when ready."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from ..model_stubs.anthropic import AnthropicStub, cli_env
from .conftest import WAIT, Real

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
    relay: Any, start_orchestrator: Any, tmp_path: Any, clis_bin: Any, stub: AnthropicStub,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os

    from orchestrator.daemon._app import tmux_socket

    from ..conftest import make_settings

    path = f"{clis_bin}{os.pathsep}{os.environ['PATH']}"
    monkeypatch.setenv("PATH", path)
    settings = make_settings(
        tmp_path, relay.url, providers={"claude": {"session": "tmux", "trust_workspace": "never"}}
    )
    orch = await start_orchestrator(settings=settings)
    home = tmp_path / "home"
    home.mkdir()
    real = Real(relay, orch, tmux_socket(settings), settings.base_dir, home, path)
    env = real.env(cli_env(str(home), stub.url))
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


def _answers(home: Any, cwd: Any) -> tuple[bool, list[str]]:
    """What claude itself saved of the two answers (its own config file)."""
    import json

    config = json.loads((home / ".claude.json").read_text())
    trusted = bool(config.get("projects", {}).get(str(cwd), {}).get("hasTrustDialogAccepted"))
    return trusted, list(config.get("customApiKeyResponses", {}).get("approved", []))
