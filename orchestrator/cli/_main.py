"""Command line: ``relay-orchestrator <command>`` (INTERFACE.md), one module
per command, each with its ``register``; a command's heavy imports (the
daemon, the dev relay, httpx) happen when it runs.

Exit codes (``_exit.py``): 0 success, 2 usage or configuration error (one
line naming the option or file), 1 anything else. A file or folder a command
cannot read or write is one line naming it, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from .._errors import ConfigError
from .._version import current_version
from . import (
    _attach,
    _completion,
    _ctl,
    _dev,
    _doctor,
    _logs,
    _relay,
    _restart,
    _run,
    _service,
    _status,
    _upgrade,
)
from ._exit import EXIT_FAIL, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE

# In the order ``--help`` lists them.
COMMANDS = (_run, _dev, _relay, _status, _restart, _upgrade, _ctl, _service, _logs, _attach,
            _doctor, _completion)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="relay-orchestrator", description="Run AI coding agents for Agent Relay.")
    parser.add_argument("--version", action="version", version=current_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for command in COMMANDS:
        command.register(sub)
    _describe(parser)
    parser.set_defaults(parser=parser)  # for `completion`, which writes scripts from it
    return parser


def _describe(parser: argparse.ArgumentParser) -> None:
    """Each command's ``--help`` opens with the line that lists it."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                command = action.choices[choice.dest]
                command.description = command.description or choice.help
                _describe(command)


UNTIL_STOPPED = frozenset({"run", "dev", "relay", "attach"})


def runs_until_stopped(args: argparse.Namespace) -> bool:
    """Whether Ctrl-C is this command's ordinary end (see ``_exit``)."""
    return (args.command in UNTIL_STOPPED or bool(getattr(args, "watch", False))
            or bool(getattr(args, "follow", False)))


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
    handler: Callable[[argparse.Namespace], int] = args.func
    try:
        return handler(args)
    except ConfigError as exc:
        print(f"relay-orchestrator: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_OK if runs_until_stopped(args) else EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (``… | head``): nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAIL
    except OSError as exc:  # a file or folder the command could not read or write
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"relay-orchestrator: {args.command}: {where}{exc.strerror or exc}",
              file=sys.stderr)
        return EXIT_FAIL
