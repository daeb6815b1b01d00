"""The public surface of ``actors``: what the orchestrator may use."""

import actors


def test_public_names_are_pinned() -> None:
    assert sorted(actors.__all__) == [
        "AgentFleet",
        "AgentStore",
        "BUILTIN_PROVIDERS",
        "CONFIG_READER",
        "CommandRejected",
        "FieldError",
        "Fields",
        "FleetConfig",
        "LogFollower",
        "MemoryStore",
        "ProviderConfig",
        "Reporter",
        "agent_log_path",
        "login_evidence",
        "login_places",
        "provider_config_from_table",
        "rotate_if_needed",
        "tail_lines",
    ]
    for name in actors.__all__:
        value = getattr(actors, name)
        if callable(value):
            assert value.__module__.startswith("actors._")


def test_command_rejected_is_an_exception_whose_text_is_the_error() -> None:
    exc = actors.CommandRejected("no managed agent matches agentId=ag_x")
    assert isinstance(exc, Exception)
    assert str(exc) == "no managed agent matches agentId=ag_x"
