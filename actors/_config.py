"""Configuration of the agent fleet and of each provider.

``ProviderConfig`` is one ``[providers.<name>]`` table of the config file,
merged over the built-in defaults of that name (``claude``, ``codex``,
``gemini``, ``command``); a name that is not built in adds a provider of
its own (``kind`` says how its argv is built, ``command`` what it runs).
``FleetConfig`` is what ``AgentFleet`` needs from the orchestrator's settings.

Argv styles (``kind``):

- ``claude``, ``codex``, ``gemini``: the CLI's own flags for model, effort,
  permission mode and prompt (see ``_providers.py``);
- ``command``: ``command + args + providerArgs``; the built-in ``command``
  provider has an empty ``command``, so ``providerArgs[0]`` is the program.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from ._fields import CONFIG_READER, FieldError

log = logging.getLogger("relay_orchestrator.actors")

SESSION_KINDS = ("tmux", "plain")
RESUME_POLICIES = ("never", "after-reboot", "always")
ARGV_KINDS = ("claude", "codex", "gemini", "command")
WORKSPACE_MODES = ("shared", "isolated")
TRUST_POLICIES = ("base-dir", "worktrees", "never")

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
# systemd resource-control syntax, loosely: "4G", "512M", "80%", "infinity".
_MEMORY = re.compile(r"^(?:\d+(?:\.\d+)?[KMGTPE]?|\d+(?:\.\d+)?%|infinity)$")
_CPU = re.compile(r"^\d+(?:\.\d+)?%$")
_TASKS = re.compile(r"^(?:\d+|\d+(?:\.\d+)?%|infinity)$")


@attrs.frozen(kw_only=True)
class ProviderConfig:
    """How one kind of agent CLI is launched and talked to."""

    name: str
    kind: str = "command"
    # None: the built-ins are on unless their executable is missing; `command`
    # is off unless the config turns it on; providers added by config are on.
    enabled: bool = True
    session: str | None = None  # "tmux" | "plain" | None = tmux when on PATH
    command: tuple[str, ...] = ()  # program (and fixed args); () for `command`
    args: tuple[str, ...] = ()  # extra args right after `command`
    compact_input: str = "/compact"
    # How long a compaction may take, from /compact to the agent ready again.
    compact_timeout: float = 600.0
    quit_input: str | None = None  # typed before SIGTERM when set (and the agent ready)
    # Which folders the orchestrator tells the CLI to trust when it asks:
    # "base-dir" (any cwd, all within baseDir), "worktrees" (only worktrees
    # the orchestrator made), "never" (the question is left to a person).
    trust_workspace: str = "base-dir"
    # Answer the CLI's "use this API key?" with yes when the spawn's env has it.
    accept_env_api_key: bool = True
    # Seconds between a paste and its Enter (a CLI that takes a quick Enter
    # after a paste as a newline in it needs a moment).
    enter_after: float = 0.0
    memory_max: str | None = None
    cpu_quota: str | None = None
    tasks_max: str | None = None
    log_max_bytes: int = 10_000_000
    log_backups: int = 3
    # "{session_id}" (or "{sessionId}") in these is replaced by the agent's
    # provider session id.
    session_id_args: tuple[str, ...] = ()
    resume_args: tuple[str, ...] = ()
    resume_dead_agents: str = "never"

    @property
    def executable(self) -> str | None:
        return self.command[0] if self.command else None


BUILTIN_PROVIDERS: Mapping[str, ProviderConfig] = {
    "claude": ProviderConfig(
        name="claude",
        kind="claude",
        command=("claude",),
        session_id_args=("--session-id", "{session_id}"),
        resume_args=("--resume", "{session_id}"),
        quit_input="/exit",
    ),
    # codex names its session itself (learnt from its rollout file, _sessions.py).
    "codex": ProviderConfig(
        name="codex",
        kind="codex",
        command=("codex",),
        resume_args=("resume", "{session_id}"),
        quit_input="/quit",
    ),
    "gemini": ProviderConfig(
        name="gemini",
        kind="gemini",
        command=("gemini",),
        session_id_args=("--session-id", "{session_id}"),
        resume_args=("--resume", "{session_id}"),
        compact_input="/compress",
        quit_input="/quit",
        enter_after=0.3,  # an Enter right after a paste is lost by gemini
    ),
    "command": ProviderConfig(name="command", kind="command", enabled=False),
}


_READ = CONFIG_READER


def _argv(key: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple):
        raise FieldError(key, _READ.expect_strings)
    return tuple(_READ.text(key, item) for item in value)


def _limit(key: str, value: object, pattern: re.Pattern[str]) -> str:
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    text = _READ.text(key, text)
    if not pattern.match(text):
        raise FieldError(key, f"not in systemd syntax: {text!r}")
    if text != "infinity" and float(text.rstrip("%KMGTPE")) <= 0:
        raise FieldError(key, f"must be more than 0: {text!r}")
    if text.endswith("%") and key != "cpu_quota" and float(text[:-1]) > 100:
        raise FieldError(key, f"a percentage is at most 100%: {text!r}")
    return text


def provider_config_from_table(name: str, table: Mapping[str, Any]) -> ProviderConfig:
    """The provider ``name`` as the config table ``table`` overrides it.

    Raises ``FieldError`` (a ``ValueError``), ``"<key>: <reason>"``, for an
    unknown key or a bad value.
    """
    if not _NAME.match(name):
        raise FieldError(name, "a provider name is lowercase letters, digits, '_' and '-'")
    if not isinstance(table, Mapping):
        raise FieldError(name, _READ.expect_object)
    base = BUILTIN_PROVIDERS.get(name) or ProviderConfig(name=name)
    changes: dict[str, Any] = {}
    for key, value in table.items():
        if key in ("enabled", "accept_env_api_key"):
            changes[key] = _READ.boolean(key, value)
        elif key == "kind":
            changes[key] = _READ.choice(key, value, ARGV_KINDS)
        elif key == "session":
            changes[key] = _READ.choice(key, value, (*SESSION_KINDS, "auto"))
            if changes[key] == "auto":
                changes[key] = None
        elif key in ("command", "executable"):
            argv = _argv(key, value)
            if not argv or not argv[0]:
                raise FieldError(key, "must name a program")
            changes["command"] = argv
        elif key in ("args", "session_id_args", "resume_args"):
            changes[key] = _argv(key, value)
        elif key == "compact_input":
            changes[key] = _READ.text(key, value)
        elif key == "quit_input":
            changes[key] = _READ.text(key, value) or None
        elif key == "compact_timeout":
            changes[key] = _READ.number(key, value, minimum=1, maximum=86400)
        elif key == "enter_after":
            changes[key] = _READ.number(key, value, minimum=0, maximum=5)
        elif key == "trust_workspace":
            changes[key] = _READ.choice(key, value, TRUST_POLICIES)
        elif key == "compact_settle_seconds":
            # Gone: a compaction now ends when the agent is ready again.
            _READ.number(key, value, minimum=0, maximum=3600)
            log.warning("providers.%s.compact_settle_seconds is no longer used", name)
        elif key == "memory_max":
            changes[key] = _limit(key, value, _MEMORY)
        elif key == "cpu_quota":
            changes[key] = _limit(key, value, _CPU)
        elif key == "tasks_max":
            changes[key] = _limit(key, value, _TASKS)
        elif key == "log_max_bytes":
            changes[key] = _READ.integer(key, value, minimum=4096, maximum=2**40)
        elif key == "log_backups":
            changes[key] = _READ.integer(key, value, minimum=0, maximum=100)
        elif key == "resume_dead_agents":
            changes[key] = _READ.choice(key, value, RESUME_POLICIES)
        else:
            raise FieldError(key, "unknown key")
    config = attrs.evolve(base, **changes)
    if config.kind != "command" and not config.command:
        raise FieldError("command", f"provider kind {config.kind} needs a program")
    if name not in BUILTIN_PROVIDERS and not config.command and config.kind == "command":
        raise FieldError("command", "a provider added by config needs a program")
    return config


def _absolute(path: Path | str) -> Path:
    return Path(path).expanduser().absolute()


@attrs.frozen(kw_only=True)
class FleetConfig:
    """What the fleet needs from the orchestrator's settings."""

    base_dir: Path = attrs.field(converter=_absolute)
    state_dir: Path = attrs.field(converter=_absolute)
    # Config overrides only: the built-ins exist by default.
    providers: Mapping[str, ProviderConfig] = attrs.field(factory=dict)
    default_workspace_mode: str = attrs.field(
        default="shared", validator=attrs.validators.in_(WORKSPACE_MODES)
    )
    stop_timeout: float = 10.0  # seconds from SIGTERM (or quit input) to SIGKILL
    # Beyond the lead's sketch, all with defaults:
    tmux_socket: str = "relay-orchestrator"  # `tmux -L <this> attach -t relay-<agentId>`
    kill_grace: float = 5.0  # how long to wait for the reap after SIGKILL
    input_timeout: float = 30.0  # an agent must take its input within this
    log_check_interval: float = 60.0  # how often output logs are checked for rotation
    # memory_max enforced by the orchestrator: from SIGTERM to SIGKILL.
    memory_kill_grace: float = 5.0
    # Where the kernel tells this boot's id (a changed id: the host rebooted).
    boot_id_file: Path = Path("/proc/sys/kernel/random/boot_id")
    # The environment agents start from (minus the orchestrator's own
    # variables); None: the orchestrator's environment when the fleet is made.
    env: Mapping[str, str] | None = None

    def provider(self, name: str) -> ProviderConfig | None:
        return self.providers.get(name) or BUILTIN_PROVIDERS.get(name)

    def provider_names(self) -> list[str]:
        return sorted({*BUILTIN_PROVIDERS, *self.providers})
