"""Provider tables of the config file, and the fleet's settings."""

from pathlib import Path

import pytest

from actors import BUILTIN_PROVIDERS, FleetConfig, ProviderConfig, provider_config_from_table


def test_builtins_keep_their_defaults_under_overrides() -> None:
    claude = provider_config_from_table("claude", {"session": "plain", "memory_max": "4G"})
    assert claude.kind == "claude"
    assert claude.command == ("claude",)
    assert claude.session == "plain"
    assert claude.memory_max == "4G"
    assert claude.compact_input == "/compact"
    assert claude.session_id_args == ("--session-id", "{session_id}")


def test_command_is_off_until_enabled() -> None:
    assert BUILTIN_PROVIDERS["command"].enabled is False
    command = provider_config_from_table("command", {"enabled": True})
    assert command.enabled is True
    assert command.command == ()
    assert command.quit_input is None


def test_the_cli_providers_quit_as_a_person_would_and_trust_base_dir() -> None:
    assert BUILTIN_PROVIDERS["claude"].quit_input == "/exit"
    assert BUILTIN_PROVIDERS["codex"].quit_input == "/quit"
    assert BUILTIN_PROVIDERS["gemini"].quit_input == "/quit"
    for name in ("claude", "codex", "gemini"):
        assert BUILTIN_PROVIDERS[name].trust_workspace == "base-dir"
        assert BUILTIN_PROVIDERS[name].accept_env_api_key is True
        assert BUILTIN_PROVIDERS[name].compact_timeout == pytest.approx(600)


def test_compact_settle_seconds_is_gone_but_an_old_config_still_loads(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = provider_config_from_table("claude", {"compact_settle_seconds": 3})
    assert config == BUILTIN_PROVIDERS["claude"]
    assert "compact_settle_seconds is no longer used" in caplog.text


def test_every_key_is_accepted() -> None:
    config = provider_config_from_table(
        "command",
        {
            "enabled": True,
            "session": "auto",
            "executable": "/opt/agent",
            "args": ["--fast"],
            "compact_input": "/compact now",
            "compact_timeout": 90,
            "trust_workspace": "worktrees",
            "accept_env_api_key": False,
            "enter_after": 0.2,
            "quit_input": "/exit",
            "memory_max": "512M",
            "cpu_quota": "200%",
            "tasks_max": 512,
            "log_max_bytes": 1_000_000,
            "log_backups": 2,
            "session_id_args": ["--id", "{sessionId}"],
            "resume_args": ["--resume", "{sessionId}"],
            "resume_dead_agents": "after-reboot",
        },
    )
    assert config.session is None
    assert config.command == ("/opt/agent",)
    assert config.tasks_max == "512"
    assert config.quit_input == "/exit"
    assert config.resume_dead_agents == "after-reboot"
    assert config.compact_timeout == 90
    assert config.trust_workspace == "worktrees"
    assert config.accept_env_api_key is False
    assert config.enter_after == pytest.approx(0.2)


def test_a_provider_added_by_config() -> None:
    config = provider_config_from_table("aider", {"command": ["aider", "--yes"]})
    assert config == ProviderConfig(name="aider", command=("aider", "--yes"))
    with pytest.raises(ValueError, match="^command: "):
        provider_config_from_table("aider", {})


@pytest.mark.parametrize(
    ("table", "error"),
    [
        ({"colour": "red"}, "colour: unknown key"),
        ({"enabled": "yes"}, "enabled: expected true or false"),
        ({"session": "screen"}, "session: must be one of tmux, plain, auto"),
        ({"command": 3}, "command: expected a list of strings"),
        ({"command": []}, "command: must name a program"),
        ({"args": [1]}, "args: expected a string"),
        ({"compact_settle_seconds": "1"}, "compact_settle_seconds: expected a number"),
        ({"compact_settle_seconds": -1}, "compact_settle_seconds: must be between 0 and 3600"),
        ({"compact_timeout": 0}, "compact_timeout: must be between 1 and 86400"),
        ({"trust_workspace": "all"}, "trust_workspace: must be one of base-dir, worktrees, never"),
        ({"accept_env_api_key": "yes"}, "accept_env_api_key: expected true or false"),
        ({"enter_after": 10}, "enter_after: must be between 0 and 5"),
        ({"memory_max": "lots"}, "memory_max: not in systemd syntax: 'lots'"),
        ({"cpu_quota": "2"}, "cpu_quota: not in systemd syntax: '2'"),
        ({"log_max_bytes": True}, "log_max_bytes: expected an integer"),
        ({"log_backups": 1000}, "log_backups: must be between 0 and 100"),
        ({"resume_dead_agents": "sometimes"}, "resume_dead_agents: must be one of"),
        ({"kind": "cursor"}, "kind: must be one of claude, codex, gemini, command"),
    ],
)
def test_bad_tables_name_the_key(table: dict[str, object], error: str) -> None:
    with pytest.raises(ValueError) as caught:
        provider_config_from_table("command", table)
    assert str(caught.value).startswith(error)


def test_bad_provider_name() -> None:
    with pytest.raises(ValueError, match="provider name"):
        provider_config_from_table("Bad Name", {})


def test_fleet_config_defaults(tmp_path: Path) -> None:
    config = FleetConfig(base_dir=tmp_path, state_dir=tmp_path / "state", providers={})
    assert config.default_workspace_mode == "shared"
    assert config.stop_timeout == 10.0
    assert config.provider("claude") is BUILTIN_PROVIDERS["claude"]
    assert config.provider("nope") is None
    assert config.provider_names() == ["claude", "codex", "command", "gemini"]
    with pytest.raises(ValueError):
        FleetConfig(base_dir=tmp_path, state_dir=tmp_path, default_workspace_mode="inherit")
