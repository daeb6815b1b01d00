"""``dev``: an embedded dev relay and an orchestrator on it (imported when run)."""

from __future__ import annotations

import argparse
from typing import Any

import trio

from .._settings import add_setting_flags
from ._exit import EXIT_OK


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("dev", help="start a dev relay and an orchestrator on it, until Ctrl-C")
    add_setting_flags(p)
    p.add_argument("--port", type=int, default=0, help="dev relay port (default: a free one)")
    p.add_argument("--demo", action="store_true", help="walk through spawn, compact, restart, stop")
    p.add_argument("--verbose", action="store_true", help="log the wire")
    p.set_defaults(func=cmd_dev)


def cmd_dev(args: argparse.Namespace) -> int:
    from ..devrelay._dev import run_dev

    trio.run(run_dev, args)
    return EXIT_OK
