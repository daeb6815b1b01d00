"""``run``: the orchestrator in the foreground until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import gc
import logging
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from .._errors import ConfigError
from .._settings import Settings, add_setting_flags, load_settings
from ._exit import EXIT_OK

if TYPE_CHECKING:
    from .._daemon_log import LogPlace

log = logging.getLogger("relay_orchestrator.cli")

STARTING_GRACE = 3.0  # a stop asked for during start-up waits this long for it


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("run", help="run the orchestrator in the foreground")
    add_setting_flags(p)
    p.add_argument("--verbose", action="store_true", help="log the wire")
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    if not settings.relay_url:
        raise ConfigError("--relay-url is required (or RELAY_ORCHESTRATOR_RELAY_URL)")
    if settings.read_token() is None:
        raise ConfigError("no relay token: give --token-file or set RELAY_ORCHESTRATOR_TOKEN")
    import supervisors

    from .._daemon_log import log_place
    from .._logging import setup_logging
    from ..daemon._app import fleet_config

    fleet_config(settings)  # a bad [providers.<name>] table exits 2, naming its key
    place = log_place(supervisors.supervisor_name(settings.supervisor),
                      self_unit=settings.self_unit, state_dir=settings.state_dir)
    setup_logging(settings.log_format, verbose=getattr(args, "verbose", False), place=place,
                  max_bytes=settings.log_max_bytes, backups=settings.log_backups)
    # What is loaded by now (modules, classes: some 40k objects) lives as long
    # as the process: out of the cyclic collector's way, whose full passes
    # otherwise rescan it all, landing in the middle of a spawn burst or a
    # heartbeat (docs/performance.md, "Garbage collector").
    gc.freeze()
    trio.run(_run_until_signal, settings, place)
    return EXIT_OK


async def _run_until_signal(settings: Settings, place: LogPlace | None = None) -> None:
    from ..daemon._app import run_orchestrator

    # The signal receiver exists before anything starts: a SIGTERM during
    # start-up is a clean stop too, never a KeyboardInterrupt traceback.
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            running: list[Callable[[], None]] = []

            async def serve(
                *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED
            ) -> None:
                await run_orchestrator(settings, log_place=place, task_status=task_status)
                nursery.cancel_scope.cancel()

            started = trio.Event()

            async def watch() -> None:
                async for signum in signals:
                    log.info("received %s; stopping", signal.Signals(signum).name)
                    with trio.move_on_after(STARTING_GRACE):
                        await started.wait()  # stop it properly once it is up
                    if running:
                        running[0]()
                    else:
                        nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(watch)
            orch: Any = await nursery.start(serve)
            running.append(orch.stop)
            started.set()
