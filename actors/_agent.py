"""The state of one managed agent, as PROTOCOL.md section 4 reports it.

``AgentState`` is owned by the agent's actor and changes only there; every
change is stored and reported as ``to_wire()``, a full ManagedAgent::

    starting ─► running ─► stopping ─► stopped      (asked to stop)
        │          └─────────────────► exited       (ended by itself)
        └────────────────────────────► failed       (could not start)
"""

from __future__ import annotations

import enum
import time
from typing import Any

import attrs

from ._params import SpawnParams
from ._usage import Usage
from ._workspace import Workspace


class AgentStatus(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    EXITED = "exited"
    FAILED = "failed"

    @property
    def live(self) -> bool:
        return self in (AgentStatus.STARTING, AgentStatus.RUNNING, AgentStatus.STOPPING)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@attrs.frozen(kw_only=True)
class ExitInfo:
    exit_code: int | None
    signal: str | None
    last_output: str
    at: int
    reason: str | None = None  # "memory limit (4G)", "host rebooted", …

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "exitCode": self.exit_code,
            "signal": self.signal,
            "lastOutput": self.last_output,
            "at": self.at,
        }
        if self.reason:
            data["reason"] = self.reason
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> ExitInfo | None:
        if not data:
            return None
        return cls(
            exit_code=data.get("exitCode"),
            signal=data.get("signal"),
            last_output=data.get("lastOutput") or "",
            at=int(data.get("at") or 0),
            reason=data.get("reason") or None,
        )


def meta_of(params: SpawnParams, session: str | None) -> dict[str, Any]:
    """What the relay reads back to rebuild a restart (``meta.model`` …)."""
    meta = {
        "model": params.model,
        "providerModel": params.provider_model,
        "effort": params.effort,
        "approvalMode": params.approval_mode or params.permission_mode,
        "permissionMode": params.permission_mode or params.approval_mode,
        "providerArgs": list(params.provider_args),
        "profile": params.profile,
        "workspaceMode": params.workspace_mode,
        "label": params.label,
        "policyName": params.policy_name,
        "spawnRequestId": params.spawn_request_id,
        "headless": params.headless,
        "session": session,
    }
    return {key: value for key, value in meta.items() if value is not None}


@attrs.define(kw_only=True, eq=False)
class AgentState:
    agent_id: str
    provider: str
    status: AgentStatus
    cwd: str
    spawn_request_id: str | None = None
    policy_name: str | None = None
    label: str | None = None
    tags: list[str] = attrs.field(factory=list)
    pid: int | None = None
    tmux_session: str | None = None
    started_at: int | None = None
    last_spawn_at: int | None = None
    last_stop_at: int | None = None
    restart_count: int = 0
    exit: ExitInfo | None = None
    workspace: Workspace | None = None
    meta: dict[str, Any] = attrs.field(factory=dict)
    provider_session_id: str | None = None
    usage: Usage = attrs.field(factory=Usage)
    # What its screen shows (tmux agents of providers whose screens are known):
    # starting, ready, busy, asking, needs-login; the question for the last two.
    activity: str | None = None
    question: str | None = None

    @property
    def session_name(self) -> str:
        return self.tmux_session or f"relay-{self.agent_id}"

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "agentId": self.agent_id,
            "spawnRequestId": self.spawn_request_id,
            "policyName": self.policy_name,
            "provider": self.provider,
            "label": self.label,
            "tags": list(self.tags),
            "status": self.status.value,
            "pid": self.pid,
            "tmuxSession": self.tmux_session,
            "sessionName": self.session_name,
            "cwd": self.cwd,
            "startedAt": self.started_at,
            "lastSpawnAt": self.last_spawn_at,
            "lastStopAt": self.last_stop_at,
            "restartCount": self.restart_count,
            "exit": self.exit.to_json() if self.exit else None,
            "workspace": self.workspace.to_json() if self.workspace else None,
            "meta": dict(self.meta),
            "usage": self.usage.to_json(),
        }
        if self.provider_session_id:
            wire["providerSessionId"] = self.provider_session_id
        if self.activity is not None and self.status.live:
            wire["activity"] = self.activity
            if self.question is not None:
                wire["question"] = self.question
        return wire

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> AgentState:
        workspace = data.get("workspace")
        return cls(
            agent_id=data["agentId"],
            provider=data["provider"],
            status=AgentStatus(data["status"]),
            cwd=data["cwd"],
            spawn_request_id=data.get("spawnRequestId"),
            policy_name=data.get("policyName"),
            label=data.get("label"),
            tags=list(data.get("tags") or []),
            pid=data.get("pid"),
            tmux_session=data.get("tmuxSession"),
            started_at=data.get("startedAt"),
            last_spawn_at=data.get("lastSpawnAt"),
            last_stop_at=data.get("lastStopAt"),
            restart_count=int(data.get("restartCount") or 0),
            exit=ExitInfo.from_json(data.get("exit")),
            workspace=Workspace.from_json(workspace) if workspace else None,
            meta=dict(data.get("meta") or {}),
            provider_session_id=data.get("providerSessionId"),
            usage=Usage.from_json(data.get("usage")) or Usage(),
            activity=data.get("activity") if isinstance(data.get("activity"), str) else None,
            question=data.get("question") if isinstance(data.get("question"), str) else None,
        )
