"""``relay``: only the dev relay, until SIGTERM or SIGINT (imported when run)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any

import trio

from .._errors import ConfigError
from ._exit import EXIT_OK


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("relay", help="run only the dev relay (no orchestrator), until Ctrl-C")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    p.add_argument("--token", default=None, help="bearer token (prefer --token-file)")
    p.add_argument("--token-file", default=None, help="file holding the bearer token")
    p.add_argument("--state-file", default=None, help="keep the relay's data across restarts")
    p.set_defaults(func=cmd_relay)


def cmd_relay(args: argparse.Namespace) -> int:
    token = args.token or os.environ.get("RELAY_ORCHESTRATOR_TOKEN")
    if args.token_file:
        try:
            token = Path(args.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"--token-file {args.token_file}: {exc.strerror}") from exc
    generated = token is None
    if token is None:
        import secrets  # here only: it maps OpenSSL (hmac), memory the daemon never needs

        token = secrets.token_urlsafe(24)
    state_file = Path(args.state_file) if args.state_file else None
    from .._logging import setup_logging

    setup_logging("text" if sys.stderr.isatty() else "json")

    async def serve() -> None:
        from ..devrelay._relay import serve_dev_relay

        # The receiver exists before the first line is printed: a signal sent
        # as soon as it is read is a clean stop, never a KeyboardInterrupt.
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
