"""A stand-in agent for the tests: a small program that behaves on request.

    python fake_agent.py [--record PATH] [--term exit|linger|ignore|default]
                         [--print TEXT]... [--env NAME]... [--exit CODE]

- writes ``started <pid>`` to the record (``--record`` or ``$FAKE_AGENT_RECORD``)
  once its signal handling is in place, then appends each stdin line to it;
- ``--env NAME``: records ``env NAME=<value>`` (or ``env NAME unset``) at start;
- ``--print TEXT``: prints TEXT on stdout at start;
- ``--term exit``: on SIGTERM records ``term`` and exits 0; ``linger``: the
  same half a second later (a program that takes its time to quit); ``ignore``:
  records ``term`` and carries on; ``default``: dies of the signal;
- ``--exit CODE``: exits with CODE right after starting (a crash);
- a stdin line ``crash N`` prints ``crashing`` to stderr and exits N;
  ``print TEXT`` prints TEXT on stdout; ``sleep SECONDS`` stops reading for
  that long (input typed meanwhile waits in the pipe).

The record may be a FIFO that the test reads, so the test waits on events.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--record", default=os.environ.get("FAKE_AGENT_RECORD"))
    parser.add_argument(
        "--term", choices=("exit", "linger", "ignore", "default"), default="default"
    )
    parser.add_argument("--print", action="append", default=[], dest="prints")
    parser.add_argument("--env", action="append", default=[])
    parser.add_argument("--exit", type=int, default=None)
    args = parser.parse_args()
    # A raw descriptor: a signal handler may write while the main code writes.
    record = os.open(args.record, os.O_WRONLY | os.O_APPEND | os.O_CREAT) if args.record else None

    def note(line: str) -> None:
        if record is not None:
            os.write(record, (line + "\n").encode())

    def on_term(signum: int, frame: object) -> None:
        note("term")
        if args.term == "linger":
            time.sleep(0.5)
        if args.term in ("exit", "linger"):
            sys.exit(0)

    if args.term != "default":
        signal.signal(signal.SIGTERM, on_term)
    for text in args.prints:
        print(text, flush=True)
    for name in args.env:
        value = os.environ.get(name)
        note(f"env {name} unset" if value is None else f"env {name}={value}")
    note(f"started {os.getpid()}")
    if args.exit is not None:
        print("exiting on request", file=sys.stderr, flush=True)
        sys.exit(args.exit)
    for raw in sys.stdin:
        line = raw.rstrip("\r\n")
        note(line)
        if line.startswith("crash "):
            print("crashing", file=sys.stderr, flush=True)
            sys.exit(int(line.split()[1]))
        if line.startswith("print "):
            print(line[len("print ") :], flush=True)
        if line.startswith("sleep "):
            time.sleep(float(line.split()[1]))


if __name__ == "__main__":
    main()
