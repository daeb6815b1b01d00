"""Codex and Gemini CLI, pinned, in tmux: first-run screens and the spawn prompt."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio

from ..model_stubs import gemini as gemini_stub
from ..model_stubs import openai as openai_stub
from .conftest import WAIT, Real

pytestmark = pytest.mark.slow

PROMPT = "-dash first\nthen \"quotes\" 'single' $(echo hi) `uname` && exit"


def git_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    return path


async def test_codex_in_a_new_repository_is_trusted_by_policy_and_gets_its_prompt(
    real: Real, stub_factory: Any
) -> None:
    stub = stub_factory(openai_stub.OpenAIStub(reply="codex stub reply"))
    env = real.env(openai_stub.cli_env(str(real.home), stub.url))
    spawned = await real.spawn("codex", "ag_cx", git_repo(real.base / "repo"), env,
                               prompt=PROMPT)
    assert spawned["status"] == "succeeded", spawned["error"]
    chat = await trio.to_thread.run_sync(stub.wait_for, lambda r: r.kind == "chat", WAIT)
    assert chat.last_user_text == PROMPT
    await real.activity("ag_cx", "ready")
    assert [r.last_user_text for r in stub.chats()] == [PROMPT]
    config = (real.home / ".codex" / "config.toml").read_text()
    assert 'trust_level = "trusted"' in config  # what codex saves for the answer


async def test_codex_without_a_login_is_reported_needs_login(real: Real) -> None:
    env = real.env({"HOME": str(real.home), "CODEX_HOME": str(real.home / ".codex")})
    (real.home / ".codex").mkdir()
    spawned = await real.spawn("codex", "ag_nl", real.base / "plain", env)
    assert spawned["status"] == "succeeded", spawned["error"]
    agent = await real.activity("ag_nl", "needs-login")
    assert "Sign in with ChatGPT" in agent["question"]
    compacted = await real.action("ag_nl", "compact")
    assert compacted["status"] == "failed"
    assert compacted["error"].startswith("agent is waiting for an answer: ")


async def test_gemini_trusts_by_its_own_flag_and_gets_its_prompt(
    real: Real, stub_factory: Any
) -> None:
    stub = stub_factory(gemini_stub.GeminiStub(reply="gemini stub reply"))
    env = real.env(gemini_stub.cli_env(str(real.home), stub.url))
    spawned = await real.spawn("gemini", "ag_gm", real.base / "fresh", env, prompt=PROMPT)
    assert spawned["status"] == "succeeded", spawned["error"]
    chat = await trio.to_thread.run_sync(stub.wait_for, lambda r: r.kind == "chat", WAIT)
    assert chat.last_user_text == PROMPT
    await real.activity("ag_gm", "ready")
    assert [r.last_user_text for r in stub.chats()] == [PROMPT]
