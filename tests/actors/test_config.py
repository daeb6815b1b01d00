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
    assert command.compact_settle_seconds == pytest.approx(0.2)


def test_every_key_is_accepted() -> None:
    config = provider_config_from_table(
        "command",
        {
            "enabled": True,
            "session": "auto",
            "executable": "/opt/agent",
            "args": ["--fast"],
            "compact_input": "/compact now",
            "compact_settle_seconds": 1.5,
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
