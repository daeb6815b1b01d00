"""``relay-orchestrator ctl``: drive any relay that keeps PROTOCOL.md section 6.

Readable tables by default, ``--json`` for scripts; an error from the relay
is one clear line on stderr and exit 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .._settings import add_setting_flags
from ._relay_http import query, relay_client, segment
from ._service import settings_with_recorded

if TYPE_CHECKING:
    import httpx  # loaded by `ctl` only: `run` never needs it for an http:// relay


class CtlError(Exception):
    pass


def register(sub: Any) -> None:
    ctl = sub.add_parser("ctl", help="drive a relay: spawn, stop, restart, compact, upgrade, list")
    ctl_sub = ctl.add_subparsers(dest="ctl_command", metavar="ACTION", required=True,
                                 parser_class=type(ctl))

    def common(p: argparse.ArgumentParser) -> None:
        add_setting_flags(p)
        p.add_argument("--json", action="store_true", help="print JSON")
        p.set_defaults(func=cmd_ctl)

    p = ctl_sub.add_parser("spawn", help="spawn an agent on an orchestrator")
    p.add_argument("orchestrator", help="orchestrator id")
    p.add_argument("--provider", required=True, help="claude, codex, gemini, command, …")
    p.add_argument("--cwd", help="the agent's working directory (within the base dir)")
    p.add_argument("--label", help="a name for people")
    p.add_argument("--agent-id", help="the agent's id (default: the orchestrator makes one)")
    p.add_argument("--model", help="the model to ask the CLI for")
    p.add_argument("--prompt", help="the first prompt")
    p.add_argument("--workspace-mode", choices=["shared", "isolated", "inherit"],
                   help="shared (the cwd itself), isolated (a git worktree of its own) "
                   "or inherit (the orchestrator's default)")
    p.add_argument("--tag", action="append", default=[], dest="tags",
                   help="a tag (repeat for more)")
    p.add_argument("provider_args", nargs="*", help="providerArgs (after --)")
    common(p)
    for action in ("stop", "restart", "compact"):
        p = ctl_sub.add_parser(action, help=f"{action} an agent")
        p.add_argument("agent", help="agent id")
        if action == "stop":
            p.add_argument("--timeout-ms", type=int,
                           help="how long the agent may take to quit before SIGKILL")
        common(p)
    p = ctl_sub.add_parser("upgrade", help="ask an orchestrator to upgrade itself")
    p.add_argument("orchestrator", help="orchestrator id")
    p.add_argument("--version", dest="target_version", required=True,
                   help="the version to upgrade to")
    p.add_argument("--force", action="store_true", help="also to an older version (a downgrade)")
    common(p)
    p = ctl_sub.add_parser("agents", help="list orchestrators and their agents")
    p.add_argument("orchestrator", nargs="?", help="only this orchestrator")
    common(p)
    p = ctl_sub.add_parser("commands", help="list the relay's commands")
    p.add_argument("--target", help="only those for this target (orch:<id> or an agent id)")
    p.add_argument("--status", help="only those in this status (pending, claimed, …)")
    common(p)


def _client(args: argparse.Namespace) -> httpx.Client:
    """The relay and token of the flags, else the environment, else what
    ``install`` recorded (the token it stored only for the relay it recorded)."""
    settings = settings_with_recorded(args, with_token=True)
    return relay_client(settings, settings.read_token())


def _call(http: httpx.Client, method: str, path: str, body: Any = None) -> Any:
    import httpx

    try:
        r = http.request(method, path, json=body)
    except httpx.HTTPError as exc:
        raise CtlError(f"relay {http.base_url} unreachable: {exc}") from exc
    if r.status_code >= 400:
        try:
            answer = r.json()
        except ValueError:
            answer = None
        detail = (answer.get("error") if isinstance(answer, dict) else None) or r.text
        raise CtlError(f"relay answered {r.status_code}: {str(detail).strip()[:300]}")
    if not r.content:
        return None
    try:
        return r.json()
    except ValueError:
        raise CtlError(f"relay answered {r.status_code} to {method} {path} with a body that is "
                       f"not JSON: is {http.base_url} the relay's URL?") from None


def _objects(answer: Any, key: str, what: str) -> list[dict[str, Any]]:
    """A list answer (or ``{key: [...]}``) whose items are all JSON objects."""
    items = answer.get(key, answer) if isinstance(answer, dict) else answer
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise CtlError(f"relay answered something other than a list of {what}: "
                       f"{json.dumps(answer)[:200]}")
    return items


def cmd_ctl(args: argparse.Namespace) -> int:
    try:
        with _client(args) as http:
            out = _dispatch(http, args)
    except CtlError as exc:
        print(f"relay-orchestrator ctl: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(_render(args.ctl_command, out))
    return 0


def _dispatch(http: httpx.Client, args: argparse.Namespace) -> Any:
    action = args.ctl_command
    if action == "spawn":
        body: dict[str, Any] = {"provider": args.provider, "providerArgs": args.provider_args,
                                "tags": args.tags}
        for key, value in (("cwd", args.cwd), ("label", args.label), ("agentId", args.agent_id),
                           ("model", args.model), ("prompt", args.prompt),
                           ("workspaceMode", args.workspace_mode)):
            if value is not None:
                body[key] = value
        return _call(http, "POST", f"/api/orchestrators/{segment(args.orchestrator)}/spawn",
                     body)
    if action in ("stop", "restart", "compact"):
        body = {"action": action}
        if getattr(args, "timeout_ms", None) is not None:
            body["timeoutMs"] = args.timeout_ms
        return _call(http, "POST", f"/api/agents/{segment(args.agent)}/action", body)
    if action == "upgrade":
        return _call(http, "POST", f"/api/orchestrators/{segment(args.orchestrator)}/action",
                     {"action": "upgrade", "targetVersion": args.target_version,
                      "force": args.force})
    if action == "agents":
        if args.orchestrator:
            one = [_call(http, "GET", f"/api/orchestrators/{segment(args.orchestrator)}")]
            return _objects(one, "orchestrators", "orchestrators")
        return _objects(_call(http, "GET", "/api/orchestrators"), "orchestrators",
                        "orchestrators")
    if action == "commands":
        raw = _call(http, "GET", "/api/commands" + query(target=args.target, status=args.status))
        return _objects(raw, "commands", "commands")
    raise CtlError(f"unknown action {action}")


def _table(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


def _ago(ms: Any) -> str:
    if not isinstance(ms, int):
        return "-"
    s = max(0, int(time.time() - ms / 1000))
    if s < 60:
        return f"{s}s"
    return f"{s // 60}m" if s < 3600 else f"{s // 3600}h{s % 3600 // 60:02d}m"


def _render(action: str, out: Any) -> str:
    if action == "agents":
        lines = []
        for orch in out or []:
            lines.append(f"{orch.get('id')}  {orch.get('status')}  version {orch.get('version')}  "
                         f"{orch.get('hostname')}  supervisor {orch.get('supervisor')}")
            rows: list[tuple[str, ...]] = [
                ("AGENT", "LABEL", "STATUS", "PID", "UPTIME", "RESTARTS", "LAST EXIT", "BRANCH")]
            for a in orch.get("agents") or []:
                ex = a.get("exit") or {}
                last = "-" if not ex else (f"signal {ex['signal']}" if ex.get("signal")
                                           else f"code {ex.get('exitCode')}")
                rows.append((str(a.get("agentId")), str(a.get("label") or "-"),
                             str(a.get("status")), str(a.get("pid") or "-"),
                             _ago(a.get("startedAt")) if a.get("status") == "running" else "-",
                             str(a.get("restartCount", 0)), last,
                             str((a.get("workspace") or {}).get("branch") or "-")))
            lines.append(_table(rows) if len(rows) > 1 else "  (no agents)")
        return "\n".join(lines) or "(no orchestrators)"
    if action == "commands":
        rows = [("ID", "TYPE", "TARGET", "STATUS", "AGE", "ERROR")]
        for c in out or []:
            rows.append((str(c.get("id")), str(c.get("type")), str(c.get("target")),
                         str(c.get("status")), _ago(c.get("createdAt")),
                         str(c.get("error") or "")[:60]))
        return _table(rows)
    if isinstance(out, dict) and "id" in out and "type" in out:
        return f"{out['type']} command {out['id']} created ({out.get('status')})"
    return json.dumps(out, indent=2)
