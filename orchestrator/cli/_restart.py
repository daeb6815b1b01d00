"""``restart``: the orchestrator restarted by the service that runs it.

- systemd: ``systemctl --user restart relay-orchestrator.service``, which
  returns once the new process is ready (``Type=notify``: registered with
  the relay, or after its ready timeout).
- launchd: ``launchctl kickstart -k gui/<uid>/<label>``, which stops the job
  and starts it again (never ``bootout``: that unloads it).
- the foreground, or nothing installed: one sentence, exit 1; there is no
  one to start the process again.

Either way agents keep running: they are in units of their own (systemd,
``KillMode=process``) or sessions of their own that launchd leaves alone
(``AbandonProcessGroup``), and the new process adopts them. ``restart``
returns once the new process has written its status file (a file has no
portable change event: it is looked at every ``POLL`` seconds, at most
``--timeout`` seconds).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from typing import Any

import supervisors

from .._errors import StatusUnreadable
from .._settings import Settings, add_setting_flags
from ._exit import EXIT_FAIL, EXIT_OK, EXIT_USAGE
from ._installed import installed_service, launchd_label
from ._service import settings_with_recorded
from ._status import read_status

POLL = 0.1
DEFAULT_TIMEOUT = 60.0


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("restart", help="restart the orchestrator through systemd or launchd")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                   help=f"how long to wait for the new process (default {DEFAULT_TIMEOUT:g})")
    add_setting_flags(p)
    p.set_defaults(func=cmd_restart)


def restart_argv(kind: str, status: dict[str, Any] | None) -> list[str]:
    if kind == "systemd":
        return ["systemctl", "--user", "restart", supervisors.SYSTEMD_UNIT]
    return supervisors.launchd_kickstart_argv(os.getuid(), launchd_label(status))


def _fail(message: str) -> int:
    print(f"relay-orchestrator: restart: {message}", file=sys.stderr)
    return EXIT_FAIL


def cmd_restart(args: argparse.Namespace) -> int:
    if not 0 < args.timeout <= 3600:  # nan too: it is not within
        print("relay-orchestrator: restart: --timeout must be more than 0 and at most 3600 "
              "seconds", file=sys.stderr)
        return EXIT_USAGE
    return restart_service(settings_with_recorded(args), timeout=args.timeout)


def restart_service(settings: Settings, *, timeout: float = DEFAULT_TIMEOUT,
                    after_upgrade: bool = False) -> int:
    """Restart the installed service and wait for its new process; ``after_upgrade``:
    with no service installed, say what to do and succeed (the install did)."""
    try:
        status: dict[str, Any] | None = read_status(settings)
    except StatusUnreadable:
        status = None
    running = bool(status and status.get("running"))
    old_pid = status.get("pid") if status and running else None
    kind = installed_service(status)
    if kind is None:
        if after_upgrade:
            print("no installed service found: restart the orchestrator to run the new version")
            return EXIT_OK
        if running:
            return _fail(
                f"the orchestrator (pid {old_pid}) runs in the foreground, not as a service: "
                f"stop it (Ctrl-C, or kill -TERM {old_pid}) and start it again, or install it "
                f"as a service with `relay-orchestrator install`")
        return _fail("no systemd unit or launchd agent of relay-orchestrator is installed here: "
                     "start it with `relay-orchestrator run`, or install it as a service with "
                     "`relay-orchestrator install`")
    argv = restart_argv(kind, status)
    name = argv[-1]
    deadline = time.monotonic() + timeout
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return _fail(f"{argv[0]} is not on PATH")
    except subprocess.TimeoutExpired:
        return _fail(f"`{shlex.join(argv)}` took longer than {timeout:g} s")
    if proc.returncode != 0:
        output = (proc.stderr or proc.stdout).strip()
        tail = " | ".join(output.splitlines()[-3:]) or "(no output)"
        return _fail(f"`{shlex.join(argv)}` failed (exit {proc.returncode}): {tail}")
    new_pid = wait_for_new_process(settings, old_pid, deadline)
    if new_pid is None:
        return _fail(f"{name} was restarted, but no new orchestrator wrote its status within "
                     f"{timeout:g} s; read its log with `relay-orchestrator logs`")
    was = f"pid {old_pid} → {new_pid}" if old_pid else f"pid {new_pid}"
    print(f"restarted {name} ({kind}): {was}")
    return EXIT_OK


def wait_for_new_process(settings: Settings, old_pid: object, deadline: float) -> int | None:
    """The pid of a running orchestrator other than ``old_pid``, once its status file says so."""
    while True:
        try:
            status = read_status(settings)
        except StatusUnreadable:
            status = {}
        pid = status.get("pid")
        if status.get("running") and isinstance(pid, int) and pid != old_pid:
            return pid
        if time.monotonic() >= deadline:
            return None
        time.sleep(POLL)
