"""Command params, validated into typed values before anything runs.

Every field PROTOCOL.md section 3.5 names is type-checked, the informational
ones included; unknown fields are ignored (forward compatibility); ``null``
counts as absent. A bad field fails the command with one sentence naming it:
``invalid params.timeoutMs: expected integer``. ``CommandRejected`` carries
that sentence; it never holds an ``env`` value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import attrs

PERMISSION_MODES = (
    "guarded",
    "default",
    "acceptEdits",
    "plan",
    "read-only",
    "auto",
    "full-auto",
    "dontAsk",
    "bypassPermissions",
    "yolo",
)
REQUESTED_WORKSPACE_MODES = ("shared", "isolated", "inherit")
SELECTOR_KEYS = ("agentId", "spawnRequestId", "policyName", "tmuxSession")

MAX_TEXT = 4096  # ids, names, labels, models
MAX_PROMPT = 100_000  # one argv element may hold 128 KiB on Linux
MAX_ITEMS = 256
MAX_ENV_VALUE = 32_768
MAX_ENV_TOTAL = 1_000_000
MAX_TIMEOUT_MS = 86_400_000
MAX_EPOCH_MS = 2**53  # what a JSON number holds exactly

_AGENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


class CommandRejected(Exception):
    """The command fails; ``str(exc)`` is the one sentence settled as its ``error``."""


def _invalid(field: str, reason: str) -> CommandRejected:
    return CommandRejected(f"invalid {field}: {reason}")


class _Fields:
    """Typed reads of one JSON object, each naming its field when it fails."""

    def __init__(self, value: object, prefix: str) -> None:
        if not isinstance(value, dict):
            raise _invalid(prefix, "expected object")
        self.raw: dict[str, Any] = value
        self.prefix = prefix

    def name(self, key: str) -> str:
        return f"{self.prefix}.{key}"

    def text(self, key: str, *, limit: int = MAX_TEXT, required: bool = False) -> str | None:
        value = self.raw.get(key)
        if value is None:
            if required:
                raise _invalid(self.name(key), "expected string")
            return None
        return check_text(self.name(key), value, limit=limit)

    def integer(self, key: str, *, minimum: int, maximum: int) -> int | None:
        value = self.raw.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise _invalid(self.name(key), "expected integer")
        if not minimum <= value <= maximum:
            raise _invalid(self.name(key), f"must be between {minimum} and {maximum}")
        return value

    def boolean(self, key: str) -> bool | None:
        value = self.raw.get(key)
        if value is None:
            return None
        if not isinstance(value, bool):
            raise _invalid(self.name(key), "expected boolean")
        return value

    def choice(self, key: str, choices: tuple[str, ...]) -> str | None:
        value = self.text(key)
        if value is not None and value not in choices:
            raise _invalid(self.name(key), f"expected one of {', '.join(choices)}")
        return value

    def texts(self, key: str, *, limit: int = MAX_TEXT) -> tuple[str, ...]:
        value = self.raw.get(key)
        if value is None:
            return ()
        if not isinstance(value, list):
            raise _invalid(self.name(key), "expected array of strings")
        if len(value) > MAX_ITEMS:
            raise _invalid(self.name(key), f"more than {MAX_ITEMS} items")
        return tuple(
            check_text(f"{self.name(key)}[{i}]", item, limit=limit) for i, item in enumerate(value)
        )

    def obj(self, key: str) -> dict[str, Any] | None:
        value = self.raw.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise _invalid(self.name(key), "expected object")
        return value


def check_text(field: str, value: object, *, limit: int = MAX_TEXT) -> str:
    if not isinstance(value, str):
        raise _invalid(field, "expected string")
    if len(value) > limit:
        raise _invalid(field, f"longer than {limit} characters")
    if "\0" in value:
        raise _invalid(field, "must not contain NUL")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise _invalid(field, "is not valid text") from None
    return value


def _env(fields: _Fields) -> dict[str, str]:
    value = fields.raw.get("env")
    field = fields.name("env")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _invalid(field, "expected object of strings")
    if len(value) > MAX_ITEMS:
        raise _invalid(field, f"more than {MAX_ITEMS} variables")
    env: dict[str, str] = {}
    total = 0
    for key, item in value.items():
        # Names are shown (ascii-escaped), values never.
        if not key or "=" in key or "\0" in key or len(key) > 256:
            raise _invalid(field, f"invalid variable name {ascii(key)[:80]}")
        try:
            key.encode()
        except UnicodeEncodeError:
            raise _invalid(field, f"invalid variable name {ascii(key)[:80]}") from None
        name = f"{field}.{key}"
        if not isinstance(item, str):
            raise _invalid(name, "expected string")
        if "\0" in item:
            raise _invalid(name, "value must not contain NUL")
        if len(item) > MAX_ENV_VALUE:
            raise _invalid(name, f"value longer than {MAX_ENV_VALUE} characters")
        try:
            item.encode()
        except UnicodeEncodeError:
            raise _invalid(name, "value is not valid text") from None
        total += len(key) + len(item)
        env[key] = item
    if total > MAX_ENV_TOTAL:
        raise _invalid(field, f"larger than {MAX_ENV_TOTAL} characters in all")
    return env


def _informational(fields: _Fields) -> None:
    """Fields the orchestrator does not act on, checked all the same."""
    fields.text("action")
    fields.text("reason")
    fields.text("requestedBy")
    fields.text("orchestratorId")
    fields.integer("requestedAt", minimum=0, maximum=MAX_EPOCH_MS)


def _agent_id(fields: _Fields, key: str = "agentId") -> str | None:
    value = fields.text(key)
    if value is not None and not _AGENT_ID.match(value):
        raise _invalid(
            fields.name(key), "expected 1 to 128 letters, digits, '_' or '-' (not first)"
        )
    return value


@attrs.frozen(kw_only=True)
class SpawnParams:
    """A validated SpawnParams (PROTOCOL.md section 3.5)."""

    provider: str
    cwd: str | None = None
    workspace_mode: str = "inherit"
    model: str | None = None
    provider_model: str | None = None
    effort: str | None = None
    profile: str | None = None
    agent_profile: dict[str, Any] | None = None
    label: str | None = None
    tags: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = ()
    approval_mode: str | None = None
    permission_mode: str | None = None
    provider_args: tuple[str, ...] = ()
    prompt: str | None = None
    headless: bool | None = None
    policy_name: str | None = None
    spawn_request_id: str | None = None
    agent_id: str | None = None
    env: Mapping[str, str] = attrs.field(factory=dict, repr=False)  # never in a repr
    requested_by: str | None = None
    requested_at: int | None = None

    @property
    def mode(self) -> str | None:
        """The permission mode: ``permissionMode``, else ``approvalMode``."""
        return self.permission_mode or self.approval_mode

    def to_wire(self) -> dict[str, Any]:
        """The camelCase SpawnParams (with ``env``: for the 0600 journal only)."""
        wire = {
            "action": "spawn",
            "provider": self.provider,
            "cwd": self.cwd,
            "workspaceMode": self.workspace_mode,
            "model": self.model,
            "providerModel": self.provider_model,
            "effort": self.effort,
            "profile": self.profile,
            "agentProfile": self.agent_profile,
            "label": self.label,
            "tags": list(self.tags),
            "capabilities": list(self.capabilities),
            "approvalMode": self.approval_mode,
            "permissionMode": self.permission_mode,
            "providerArgs": list(self.provider_args),
            "prompt": self.prompt,
            "headless": self.headless,
            "policyName": self.policy_name,
            "spawnRequestId": self.spawn_request_id,
            "agentId": self.agent_id,
            "env": dict(self.env),
            "requestedBy": self.requested_by,
            "requestedAt": self.requested_at,
        }
        return {key: value for key, value in wire.items() if value is not None}


def parse_spawn(value: object, prefix: str = "params") -> SpawnParams:
    f = _Fields(value, prefix)
    _informational(f)
    permission_mode = f.choice("permissionMode", PERMISSION_MODES)
    approval_mode = f.choice("approvalMode", PERMISSION_MODES)
    return SpawnParams(
        provider=f.text("provider", limit=64, required=True) or "",
        cwd=f.text("cwd"),
        workspace_mode=f.choice("workspaceMode", REQUESTED_WORKSPACE_MODES) or "inherit",
        model=f.text("model"),
        provider_model=f.text("providerModel"),
        effort=f.text("effort"),
        profile=f.text("profile"),
        agent_profile=f.obj("agentProfile"),
        label=f.text("label"),
        tags=f.texts("tags"),
        capabilities=f.texts("capabilities"),
        approval_mode=approval_mode,
        permission_mode=permission_mode,
        provider_args=f.texts("providerArgs", limit=MAX_PROMPT),
        prompt=f.text("prompt", limit=MAX_PROMPT),
        headless=f.boolean("headless"),
        policy_name=f.text("policyName"),
        spawn_request_id=f.text("spawnRequestId"),
        agent_id=_agent_id(f),
        env=_env(f),
        requested_by=f.text("requestedBy"),
        requested_at=f.integer("requestedAt", minimum=0, maximum=MAX_EPOCH_MS),
    )


@attrs.frozen(kw_only=True)
class Selector:
    """Which agent a command is about: the first of these keys that is present."""

    key: str | None = None
    value: str | None = None


def _selector(f: _Fields) -> Selector:
    values = {key: f.text(key) for key in SELECTOR_KEYS}
    _agent_id(f)
    for key in SELECTOR_KEYS:
        if values[key]:
            return Selector(key=key, value=values[key])
    return Selector()


@attrs.frozen(kw_only=True)
class StopParams:
    selector: Selector
    graceful: bool = True
    timeout_ms: int | None = None


@attrs.frozen(kw_only=True)
class RestartParams:
    selector: Selector
    graceful: bool = True
    timeout_ms: int | None = None
    restart_spawn: SpawnParams | None = None  # None: the agent's last SpawnParams


@attrs.frozen(kw_only=True)
class CompactParams:
    selector: Selector
    always_reload: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class HostParams:
    """``orchestrator.restart`` and ``orchestrator.shutdown``: one agent, or all."""

    selector: Selector
    graceful: bool = True
    timeout_ms: int | None = None


def _stopping(f: _Fields) -> tuple[bool, int | None]:
    graceful = f.boolean("graceful")
    timeout = f.integer("timeoutMs", minimum=0, maximum=MAX_TIMEOUT_MS)
    return (True if graceful is None else graceful), timeout


def parse_stop(value: object) -> StopParams:
    f = _Fields(value, "params")
    _informational(f)
    graceful, timeout = _stopping(f)
    return StopParams(selector=_selector(f), graceful=graceful, timeout_ms=timeout)


def parse_restart(value: object) -> RestartParams:
    f = _Fields(value, "params")
    _informational(f)
    graceful, timeout = _stopping(f)
    raw = f.raw.get("restartSpawn")
    spawn = None if raw is None else parse_spawn(raw, "params.restartSpawn")
    return RestartParams(
        selector=_selector(f), graceful=graceful, timeout_ms=timeout, restart_spawn=spawn
    )


def parse_compact(value: object) -> CompactParams:
    f = _Fields(value, "params")
    _informational(f)
    memory = f.obj("memory")
    reload: tuple[str, ...] = ()
    if memory is not None:
        reload = _Fields(memory, "params.memory").texts("alwaysReload")
    return CompactParams(selector=_selector(f), always_reload=reload)


def parse_host(value: object) -> HostParams:
    f = _Fields(value, "params")
    _informational(f)
    graceful, timeout = _stopping(f)
    return HostParams(selector=_selector(f), graceful=graceful, timeout_ms=timeout)
