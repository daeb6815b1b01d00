"""``relay-orchestrator logs``: an agent's output, or the orchestrator's own
log; last lines and follow.

An agent's log is ``<state_dir>/agents/<agentId>/output.log``, rotated by
taking its head off into ``output.log.1`` … (``actors._output``, which also
reads it). Following survives rotations without losing a line: the reader
keeps an absolute position, and reads what rotations moved away from the
backups that hold it.

With no agent, the orchestrator's own log (``_daemon_log.py``): under
systemd ``journalctl --user -u <unit> -n N [-f]`` takes over (exec); under
launchd and in the foreground its log file, rotated as an agent's is, read
the same way.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import actors

from .._errors import StatusUnreadable
from .._settings import Settings, add_setting_flags
from ._agents import find_agent
from ._exit import EXIT_FAIL, EXIT_OK, EXIT_USAGE
from ._installed import daemon_log
from ._service import settings_with_recorded
from ._status import read_status

POLL = 0.2  # follow: a file has no portable change event, so it is looked at (tail -f: each second)


def find_agent_log(state_dir: Path, query: str) -> Path | None:
    """The log of the agent whose agentId, label or tmux session is ``query``."""
    found = find_agent(state_dir, query)
    path = None if found is None else actors.agent_log_path(state_dir, found.agent_id)
    return path if path is not None and path.exists() else None


def tail_log(path: Path, count: int) -> list[str]:
    """Exactly the last ``count`` lines (fewer when the log has fewer), across rotations."""
    return actors.tail_lines(path, count)


def follow_log(path: Path, *, start_at_end: bool = True, poll: float = POLL,
               stop_after: float | None = None,
               follower: actors.LogFollower | None = None) -> Iterator[str]:
    """Yield each new line of ``path`` as it is written, across rotations."""
    follower = follower or actors.LogFollower(path, from_end=start_at_end)
    partial = b""
    deadline = None if stop_after is None else time.monotonic() + stop_after
    while deadline is None or time.monotonic() < deadline:
        *lines, partial = (partial + follower.read()).split(b"\n")
        for line in lines:
            yield line.decode(errors="replace")
        if not lines:
            time.sleep(poll)


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("logs", help="an agent's output, or the orchestrator's own log")
    p.add_argument("agent", nargs="?", default=None,
                   help="agentId, label or tmux session (none: the orchestrator's own log)")
    p.add_argument("-n", type=int, default=20, help="lines (default 20)")
    p.add_argument("-f", "--follow", action="store_true", help="follow across rotations")
    add_setting_flags(p)
    p.set_defaults(func=cmd_logs)


def cmd_logs(args: argparse.Namespace) -> int:
    if args.n < 0:
        print("relay-orchestrator: logs: -n must be 0 or more", file=sys.stderr)
        return EXIT_USAGE
    settings = settings_with_recorded(args)
    if args.agent is None:
        return daemon_logs(settings, args.n, follow=args.follow)
    path = find_agent_log(settings.state_dir, args.agent)
    if path is None:
        print(f"relay-orchestrator: no agent matches {args.agent!r} in {settings.state_dir}",
              file=sys.stderr)
        return EXIT_FAIL
    return print_log(path, args.n, follow=args.follow)


def print_log(path: Path, count: int, *, follow: bool) -> int:
    """The last ``count`` lines of a log of ours, then (``follow``) each new one."""
    # The readers skip what they cannot read (the daemon must go on): here,
    # a log that cannot be read is said, not shown as an empty one.
    with open(path, "rb"):  # an OSError names the file (``_main``)
        pass
    if not follow:
        for line in tail_log(path, count):
            print(line)
        return EXIT_OK
    # The last lines and where following starts, in one look: none lost or doubled.
    follower, lines = actors.LogFollower.with_tail(path, count)
    for line in lines:
        print(line)
    sys.stdout.flush()
    try:
        for line in follow_log(path, follower=follower):
            print(line, flush=True)
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def daemon_logs(settings: Settings, count: int, *, follow: bool) -> int:
    """The orchestrator's own log: the journal (exec'd), or its log file."""
    try:
        status = read_status(settings)
    except StatusUnreadable:
        status = None  # where the log is follows from what is installed
    place = daemon_log(settings, status)
    if place.journal_unit is not None:
        argv = [*place.journal_argv(), "-n", str(count), "--no-pager", *(["-f"] if follow else [])]
        if shutil.which(argv[0]) is None:
            print(f"relay-orchestrator: the orchestrator logs to the journal of "
                  f"{place.journal_unit}, and journalctl is not on PATH", file=sys.stderr)
            return EXIT_FAIL
        sys.stdout.flush()
        os.execvp(argv[0], argv)
    if place.file is None:
        print(f"relay-orchestrator: the orchestrator of {settings.state_dir} keeps no log file: "
              f"its log is the standard error of the process that runs it (as under `dev`)",
              file=sys.stderr)
        return EXIT_FAIL
    if not place.file.exists():
        print(f"relay-orchestrator: no orchestrator log at {place.file} yet "
              f"(the orchestrator writes it once `run` starts)", file=sys.stderr)
        return EXIT_FAIL
    return print_log(place.file, count, follow=follow)
