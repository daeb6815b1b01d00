"""Providers: argv of each CLI, and which ones this host offers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from actors import FleetConfig, MemoryStore, provider_config_from_table
from actors._config import BUILTIN_PROVIDERS
from actors._params import parse_spawn
from actors._providers import Provider, reload_input
from supervisors._launch import DirectLauncher

from .conftest import WAIT, Harness


def argv(provider: str, **params: object) -> list[str]:
    spawn = parse_spawn({"provider": provider, **params})
    return Provider(BUILTIN_PROVIDERS[provider]).argv(spawn)


def test_claude_argv_uses_its_own_flags_with_the_prompt_last() -> None:
    assert argv(
        "claude",
        model="sonnet",
        providerModel="claude-sonnet-4-5",
        effort="high",
        permissionMode="acceptEdits",
        providerArgs=["--verbose"],
        prompt="Review open PRs",
    ) == [
        "claude",
        "--model",
        "claude-sonnet-4-5",
        "--effort",
        "high",
        "--permission-mode",
        "acceptEdits",
        "--verbose",
        "Review open PRs",
    ]
    assert argv("claude", approvalMode="guarded") == ["claude", "--permission-mode", "default"]
    assert argv("claude", prompt="--help") == ["claude", "--", "--help"]


def test_claude_session_and_resume_args() -> None:
    provider = Provider(BUILTIN_PROVIDERS["claude"])
    spawn = parse_spawn({"provider": "claude", "prompt": "go"})
    assert provider.argv(spawn, session_id="abc") == ["claude", "--session-id", "abc", "go"]
    assert provider.argv(spawn, session_id="abc", resume=True) == ["claude", "--resume", "abc"]


def test_codex_argv() -> None:
    assert argv(
        "codex", model="gpt-5", effort="high", permissionMode="full-auto", prompt="fix it"
    ) == [
        "codex",
        "--no-daemon",
        "--model",
        "gpt-5",
        "-c",
        'model_reasoning_effort="high"',
        *("--sandbox", "workspace-write", "--ask-for-approval", "on-request"),
        "fix it",
    ]
    assert argv("codex", permissionMode="yolo") == [
        "codex",
        "--no-daemon",
        "--dangerously-bypass-approvals-and-sandbox",
    ]
    assert argv("codex", permissionMode="read-only") == [
        "codex", "--no-daemon", "--sandbox", "read-only"
    ]  # fmt: skip
    # codex 0.17x has no --full-auto: never emitted, whatever the mode.
    for mode in ("acceptEdits", "auto", "full-auto"):
        assert "--full-auto" not in argv("codex", permissionMode=mode)


def test_gemini_argv() -> None:
    assert argv("gemini", model="gemini-2.5-pro", permissionMode="yolo", prompt="hi") == [
        "gemini",
        "--model",
        "gemini-2.5-pro",
        "--approval-mode",
        "yolo",
        "--prompt-interactive=hi",
    ]
    gemini = Provider(BUILTIN_PROVIDERS["gemini"])
    spawn = parse_spawn({"provider": "gemini", "approvalMode": "plan"})
    assert gemini.argv(spawn, trusted=True) == [
        "gemini", "--approval-mode", "plan", "--skip-trust"
    ]  # fmt: skip


def test_command_argv_is_provider_args_and_needs_a_program() -> None:
    command = Provider(provider_config_from_table("command", {"enabled": True}))
    spawn = parse_spawn({"provider": "command", "providerArgs": ["sleep", "5"], "prompt": "x"})
    assert command.argv(spawn) == ["sleep", "5"]
    extra = Provider(provider_config_from_table("aider", {"command": ["aider"], "args": ["-y"]}))
    assert extra.argv(spawn) == ["aider", "-y", "sleep", "5"]


def test_reload_input_is_the_path_line_then_the_content() -> None:
    assert reload_input("NOTES.md", "a\nb\n") == "@NOTES.md\na\nb"
    assert reload_input("EMPTY.md", "") == "@EMPTY.md"


def _executable(directory: Path, name: str, body: str) -> Path:
    path = directory / name
    path.write_text(body)
    path.chmod(0o755)
    return path


def test_offered_providers_follow_path_and_config(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _executable(bin_dir, "claude", "#!/bin/sh\nexit 0\n")

    def offered(**providers: dict[str, object]) -> list[str]:
        from actors import AgentFleet

        config = FleetConfig(
            base_dir=tmp_path,
            state_dir=tmp_path / "state",
            providers={name: provider_config_from_table(name, t) for name, t in providers.items()},
            env={"PATH": str(bin_dir)},
        )
        fleet = AgentFleet(
            config, store=MemoryStore(), reporter=_Silent(), launcher=DirectLauncher()
        )
        return fleet.offered_providers()

    assert offered() == ["claude"]
    assert offered(command={"enabled": True}) == ["claude", "command"]
    assert offered(claude={"enabled": False}) == []
    _executable(bin_dir, "gemini", "#!/bin/sh\nexit 0\n")
    assert offered() == ["claude", "gemini"]


class _Silent:
    def agent_changed(self, agent: dict[str, object]) -> None:
        pass


async def test_a_claude_agent_gets_its_argv(harness: Harness) -> None:
    """A stand-in `claude` on PATH records the argv it was started with."""
    bin_dir = harness.tmp / "bin"
    bin_dir.mkdir()
    record = harness.record("argv")
    _executable(
        bin_dir,
        "claude",
        f"#!/bin/sh\nprintf '%s\\n' \"$@\" started > {record.path}\nexec sleep 600\n",
    )
    harness.env["PATH"] = f"{bin_dir}{os.pathsep}{harness.env['PATH']}"
    fleet = await harness.start(
        harness.config(
            providers={"claude": provider_config_from_table("claude", {"session": "plain"})}
        )
    )
    assert "claude" in fleet.offered_providers()
    result = await fleet.execute(
        "agent.spawn",
        {"provider": "claude", "model": "opus", "permissionMode": "plan", "prompt": "Plan it"},
        "c1",
    )
    lines = await record.until(lambda line: line == "started")
    assert lines[0] == "--session-id"
    assert lines[2:] == ["--model", "opus", "--permission-mode", "plan", "Plan it", "started"]
    report = harness.reporter.reports[-1]
    assert report["providerSessionId"] == lines[1]
    assert report["meta"]["permissionMode"] == "plan"
    with trio.fail_after(WAIT):
        stopped = await fleet.execute("agent.stop", {"agentId": result["agentId"]}, "c2")
    assert stopped["signal"] == "SIGTERM"


@pytest.mark.parametrize("provider", ["claude", "codex", "gemini"])
async def test_providers_missing_from_path_are_not_offered(harness: Harness, provider: str) -> None:
    harness.env["PATH"] = str(harness.tmp)
    fleet = await harness.start()
    assert provider not in fleet.offered_providers()
    from actors import CommandRejected

    with pytest.raises(CommandRejected) as caught:
        await fleet.execute("agent.spawn", {"provider": provider}, "c1")
    assert str(caught.value) == f"provider not available on this orchestrator: {provider}"
