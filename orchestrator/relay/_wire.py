"""Wire types of the relay command bus and the one converter for them.

Every field is snake_case here and camelCase on the wire; the converter
renames in both directions. Inbound structuring ignores unknown keys
(forward compatibility); a value of the wrong type is turned into one
sentence naming the field.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


class CommandStatus(enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@attrs.frozen(kw_only=True)
class Command:
    """A command on the bus (PROTOCOL.md 3.2)."""

    id: str
    type: str
    target: str = ""
    source: str = ""
    correlation_id: str | None = None
    params: Any = None
    status: CommandStatus = CommandStatus.PENDING
    result: Any = None
    error: str | None = None
    created_at: int = 0
    updated_at: int = 0


@attrs.frozen(kw_only=True)
class Capabilities:
    relay_command_bus: bool = True
    self_upgrade: bool = False


@attrs.frozen(kw_only=True)
class Registration:
    """The body of ``POST /api/orchestrators`` (PROTOCOL.md 1)."""

    id: str
    hostname: str
    version: str
    pid: int
    started_at: int
    providers: list[str]
    base_dir: str
    capabilities: Capabilities
    supervisor: str
    self_unit: str | None
    agents: list[dict[str, Any]]


@attrs.frozen(kw_only=True)
class RegistrationAnswer:
    id: str
    agent_id: str
    status: str = "online"


@attrs.frozen(kw_only=True)
class Load:
    cpu_percent: float
    memory_rss: int
    agent_count: int


@attrs.frozen(kw_only=True)
class Heartbeat:
    version: str
    agents: list[dict[str, Any]]
    load: Load


@attrs.frozen(kw_only=True)
class Outcome:
    """How a command ended: the body of the settling PATCH."""

    status: CommandStatus
    result: Any = None
    error: str | None = None

    @classmethod
    def succeeded(cls, result: Any) -> Outcome:
        return cls(status=CommandStatus.SUCCEEDED, result=result)

    @classmethod
    def failed(cls, error: str) -> Outcome:
        return cls(status=CommandStatus.FAILED, error=error)

    def body(self) -> dict[str, Any]:
        if self.status is CommandStatus.SUCCEEDED:
            return {"status": "succeeded", "result": self.result}
        return {"status": self.status.value, "error": self.error}


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter()
    for cls in (Command, Capabilities, Registration, RegistrationAnswer, Load, Heartbeat):
        renames: dict[str, Any] = {
            a.name: override(rename=_camel(a.name)) for a in attrs.fields(cls)}
        conv.register_structure_hook(cls, make_dict_structure_fn(cls, conv, **renames))
        conv.register_unstructure_hook(cls, make_dict_unstructure_fn(cls, conv, **renames))
    return conv


converter = _make_converter()


class WireError(ValueError):
    """A relay message that cannot be read; the message names the field."""


def structure_command(raw: object) -> Command:
    try:
        return converter.structure(raw, Command)
    except Exception as exc:  # cattrs raises ClassValidationError / KeyError / TypeError
        if isinstance(exc, cattrs.BaseValidationError):
            msgs = cattrs.transform_error(exc)
        else:
            msgs = [str(exc)]
        raise WireError("invalid command: " + "; ".join(msgs)) from exc


def unstructure(value: object) -> Any:
    return converter.unstructure(value)
