"""Command line: ``relay-orchestrator <command>`` (INTERFACE.md).

Exit codes: 0 success, 2 usage or configuration error (one line naming the
option or file), 1 anything else.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import trio

from ._errors import ConfigError
from ._settings import Settings, add_setting_flags, load_settings
from ._version import current_version

log = logging.getLogger("relay_orchestrator")

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
STARTING_GRACE = 3.0  # a stop asked for during start-up waits this long for it


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="relay-orchestrator", description="Run AI coding agents for Agent Relay.")
    parser.add_argument("--version", action="version", version=current_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("run", help="run the orchestrator in the foreground")
    add_setting_flags(p)
    p.add_argument("--verbose", action="store_true", help="log the wire")

    p = sub.add_parser("dev", help="embedded dev relay + orchestrator, until Ctrl-C")
    add_setting_flags(p)
    p.add_argument("--port", type=int, default=0, help="dev relay port (default: a free one)")
    p.add_argument("--demo", action="store_true", help="walk through spawn, compact, restart, stop")
    p.add_argument("--verbose", action="store_true")

    p = sub.add_parser("relay", help="run only the dev relay")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--token", default=None, help="bearer token (prefer --token-file)")
    p.add_argument("--token-file", default=None)
    p.add_argument("--state-file", default=None, help="keep the relay's data across restarts")

    p = sub.add_parser("status", help="the local view of this host's orchestrator")
    add_setting_flags(p)
    p.add_argument("--json", action="store_true")

    from ._cli_more import register_more

    register_more(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    trailing: list[str] | None = None
    if "--" in argv and argv[:1] == ["ctl"]:  # ctl spawn … -- providerArgs…
        cut = argv.index("--")
        argv, trailing = argv[:cut], argv[cut + 1:]
    args = parser.parse_args(argv)
    if trailing is not None:
        args.provider_args = [*getattr(args, "provider_args", []), *trailing]
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    handler: Callable[[argparse.Namespace], int] = COMMANDS.get(args.command) or args.func
    try:
        return handler(args)
    except ConfigError as exc:
        print(f"relay-orchestrator: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_OK


# -- run ---------------------------------------------------------------------

def cmd_run(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    if not settings.relay_url:
        raise ConfigError("--relay-url is required (or RELAY_ORCHESTRATOR_RELAY_URL)")
    if settings.read_token() is None:
        raise ConfigError("no relay token: give --token-file or set RELAY_ORCHESTRATOR_TOKEN")
    from ._app import fleet_config
    from ._logging import setup_logging

    fleet_config(settings)  # a bad [providers.<name>] table exits 2, naming its key
    setup_logging(settings.log_format, verbose=getattr(args, "verbose", False))
    # What is loaded by now (modules, classes: some 40k objects) lives as long
    # as the process: out of the cyclic collector's way, whose full passes
    # otherwise rescan it all (25-30 ms each, landing in the middle of a
    # spawn burst or a heartbeat).
    gc.freeze()
    trio.run(_run_until_signal, settings)
    return EXIT_OK


async def _run_until_signal(settings: Settings) -> None:
    from ._app import run_orchestrator

    # The signal receiver exists before anything starts: a SIGTERM during
    # start-up is a clean stop too, never a KeyboardInterrupt traceback.
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            running: list[Callable[[], None]] = []

            async def serve(
                *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED
            ) -> None:
                await run_orchestrator(settings, task_status=task_status)
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


# -- relay -------------------------------------------------------------------

def cmd_relay(args: argparse.Namespace) -> int:
    token = args.token or os.environ.get("RELAY_ORCHESTRATOR_TOKEN")
    if args.token_file:
        try:
            token = Path(args.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"--token-file {args.token_file}: {exc.strerror}") from exc
    generated = token is None
    if token is None:
        import secrets  # here only: it maps OpenSSL (hmac), 3 MB the daemon never needs

        token = secrets.token_urlsafe(24)
    state_file = Path(args.state_file) if args.state_file else None
    from ._logging import setup_logging

    setup_logging("text" if sys.stderr.isatty() else "json")

    async def serve() -> None:
        from .devrelay._relay import serve_dev_relay

        # Listening for the signals before anything is printed: a Ctrl-C as
        # soon as the URL shows ends the relay as cleanly as a later one.
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                relay = await nursery.start(
                    lambda task_status: serve_dev_relay(
                        host=args.host, port=args.port, token=token, state_file=state_file,
                        task_status=task_status,
                    )
                )
                print(f"dev relay listening on {relay.url}", flush=True)
                if generated:
                    print(f"token: {token}", flush=True)
                async for _ in signals:
                    break
                nursery.cancel_scope.cancel()

    trio.run(serve)
    return EXIT_OK


# -- dev ---------------------------------------------------------------------

def cmd_dev(args: argparse.Namespace) -> int:
    from .devrelay._dev import run_dev

    trio.run(run_dev, args)
    return EXIT_OK


# -- status ------------------------------------------------------------------

def cmd_status(args: argparse.Namespace) -> int:
    from ._cli_service import settings_with_recorded
    from ._status import local_status, render_status

    settings = settings_with_recorded(args)
    status = local_status(settings)
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print(render_status(status, color=sys.stdout.isatty()))
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run,
    "relay": cmd_relay,
    "dev": cmd_dev,
    "status": cmd_status,
}
