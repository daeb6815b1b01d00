"""``attach AGENT``: this terminal on an agent's tmux session.

An agent in a tmux session is the pane of session ``relay-<agentId>`` on
the fleet's own tmux server (``tmux -L <socket>``: ``relay-orchestrator``
for the host's orchestrator, one of its own for any other state dir, see
``orchestrator.daemon._app.tmux_socket``); the journal records both for
each agent. ``attach`` finds the agent by agentId, label or session
(``_agents.find_agent``) and replaces itself with ``tmux -L <socket>
attach-session -t =<session>``, with ``-r`` for ``--read-only`` (what is
typed goes nowhere). Detaching (the prefix key, then ``d``) leaves the
agent running. From inside another tmux the attach is nested (``$TMUX``
is not passed on): press the prefix key twice to reach the agent's session.

A plain session (a process with a pipe for input) has no terminal to
attach to: one sentence says so and where its output is; exit 1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from typing import Any

from .._settings import add_setting_flags
from ._agents import find_agent
from ._exit import EXIT_FAIL
from ._service import settings_with_recorded


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("attach", help="attach this terminal to an agent's tmux session")
    p.add_argument("agent", help="agentId, label or tmux session")
    p.add_argument("-r", "--read-only", action="store_true",
                   help="watch only: what is typed goes nowhere")
    add_setting_flags(p)
    p.set_defaults(func=cmd_attach)


def attach_argv(tmux: str, socket: str, session: str, *, read_only: bool) -> list[str]:
    return [tmux, "-L", socket, "attach-session", "-t", f"={session}",
            *(["-r"] if read_only else [])]


def _fail(message: str) -> int:
    print(f"relay-orchestrator: {message}", file=sys.stderr)
    return EXIT_FAIL


def cmd_attach(args: argparse.Namespace) -> int:
    settings = settings_with_recorded(args, check_files=False)  # no relay, no token
    found = find_agent(settings.state_dir, args.agent)
    if found is None:
        return _fail(f"no agent matches {args.agent!r} in {settings.state_dir}")
    agent_id = found.agent_id
    kind = found.session.get("kind") or ("tmux" if found.agent.get("tmuxSession") else None)
    if kind == "plain":
        return _fail(f"agent {agent_id} runs in a plain session, which has no terminal to "
                     f"attach to: read its output with `relay-orchestrator logs {agent_id} -f`")
    tmux = shutil.which("tmux")
    if tmux is None:
        return _fail("tmux is not installed here, so no agent has a terminal to attach to")
    session = str(found.session.get("name") or found.agent.get("tmuxSession")
                  or f"relay-{agent_id}")
    socket = found.session.get("socket")
    if not isinstance(socket, str) or not socket:
        from ..daemon._app import tmux_socket

        socket = tmux_socket(settings)
    try:
        there = subprocess.run([tmux, "-L", socket, "has-session", "-t", f"={session}"],
                               capture_output=True, timeout=30,
                               stdin=subprocess.DEVNULL).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        there = False
    if not there:
        status = found.agent.get("status")
        return _fail(f"agent {agent_id} has no tmux session {session} on tmux -L {socket}"
                     + (f" (the agent is {status})" if status else "")
                     + f": read its output with `relay-orchestrator logs {agent_id}`")
    env = dict(os.environ)
    if env.pop("TMUX", None) is not None:
        print("relay-orchestrator: attaching inside tmux: press the prefix key twice to reach "
              "the agent's session (C-b C-b d detaches from it)", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os.execve(tmux, attach_argv(tmux, socket, session, read_only=args.read_only), env)
