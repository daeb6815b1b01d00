"""Command params, validated into typed values before anything runs.

Every field PROTOCOL.md section 3.5 names is type-checked, the informational
ones included; unknown fields are ignored (forward compatibility); ``null``
counts as absent. A bad field fails the command with one sentence naming it:
``invalid params.timeoutMs: expected integer``. ``CommandRejected`` carries
that sentence; it never holds an ``env`` value. The fields are read with the
shared reader (``_fields.py``); each ``parse_*`` turns its ``FieldError``
into the command's sentence.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar

import attrs

from ._fields import MAX_ITEMS, FieldError, Fields

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

MAX_PROMPT = 100_000  # one argv element may hold 128 KiB on Linux
MAX_ENV_VALUE = 32_768
MAX_ENV_TOTAL = 1_000_000
MAX_TIMEOUT_MS = 86_400_000
MAX_EPOCH_MS = 2**53  # what a JSON number holds exactly

_AGENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


class CommandRejected(Exception):
    """The command fails; ``str(exc)`` is the one sentence settled as its ``error``."""


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _rejecting(parse: Callable[_P, _R]) -> Callable[_P, _R]:
    """A bad field fails the command: ``FieldError`` becomes ``CommandRejected``."""

    @functools.wraps(parse)
    def read(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return parse(*args, **kwargs)
        except FieldError as exc:
            raise CommandRejected(f"invalid {exc}") from None

    return read


def _env(fields: Fields) -> dict[str, str]:
    value = fields.raw.get("env")
    field = fields.name("env")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise FieldError(field, "expected object of strings")
    if len(value) > MAX_ITEMS:
        raise FieldError(field, f"more than {MAX_ITEMS} variables")
    env: dict[str, str] = {}
    total = 0
    for key, item in value.items():
        # Names are shown (ascii-escaped), values never.
        if not key or "=" in key or "\0" in key or len(key) > 256:
            raise FieldError(field, f"invalid variable name {ascii(key)[:80]}")
        try:
            key.encode()
        except UnicodeEncodeError:
            raise FieldError(field, f"invalid variable name {ascii(key)[:80]}") from None
        name = f"{field}.{key}"
        if not isinstance(item, str):
            raise FieldError(name, "expected string")
        if "\0" in item:
            raise FieldError(name, "value must not contain NUL")
        if len(item) > MAX_ENV_VALUE:
            raise FieldError(name, f"value longer than {MAX_ENV_VALUE} characters")
        try:
            item.encode()
        except UnicodeEncodeError:
            raise FieldError(name, "value is not valid text") from None
        total += len(key) + len(item)
        env[key] = item
    if total > MAX_ENV_TOTAL:
        raise FieldError(field, f"larger than {MAX_ENV_TOTAL} characters in all")
    return env


def _informational(fields: Fields) -> None:
    """Fields the orchestrator does not act on, checked all the same."""
    fields.text("action")
    fields.text("reason")
    fields.text("requestedBy")
    fields.text("orchestratorId")
    fields.integer("requestedAt", minimum=0, maximum=MAX_EPOCH_MS)


def _agent_id(fields: Fields, key: str = "agentId") -> str | None:
    value = fields.text(key)
    if value is not None and not _AGENT_ID.match(value):
        raise FieldError(
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


@_rejecting
def parse_spawn(value: object, prefix: str = "params") -> SpawnParams:
    f = Fields(value, prefix)
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


def _selector(f: Fields) -> Selector:
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


def _stopping(f: Fields) -> tuple[bool, int | None]:
    graceful = f.boolean("graceful")
    timeout = f.integer("timeoutMs", minimum=0, maximum=MAX_TIMEOUT_MS)
    return (True if graceful is None else graceful), timeout


@_rejecting
def parse_stop(value: object) -> StopParams:
    f = Fields(value, "params")
    _informational(f)
    graceful, timeout = _stopping(f)
    return StopParams(selector=_selector(f), graceful=graceful, timeout_ms=timeout)


@_rejecting
def parse_restart(value: object) -> RestartParams:
    f = Fields(value, "params")
    _informational(f)
    graceful, timeout = _stopping(f)
    raw = f.raw.get("restartSpawn")
    spawn = None if raw is None else parse_spawn(raw, "params.restartSpawn")
    return RestartParams(
        selector=_selector(f), graceful=graceful, timeout_ms=timeout, restart_spawn=spawn
    )


@_rejecting
def parse_compact(value: object) -> CompactParams:
    f = Fields(value, "params")
    _informational(f)
    memory = f.obj("memory")
    reload: tuple[str, ...] = ()
    if memory is not None:
        reload = Fields(memory, "params.memory").texts("alwaysReload")
    return CompactParams(selector=_selector(f), always_reload=reload)


@_rejecting
def parse_host(value: object) -> HostParams:
    f = Fields(value, "params")
    _informational(f)
    graceful, timeout = _stopping(f)
    return HostParams(selector=_selector(f), graceful=graceful, timeout_ms=timeout)
