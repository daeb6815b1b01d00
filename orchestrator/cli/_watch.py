"""``status --watch``: the local view, redrawn in place until Ctrl-C (as
``pm2 monit`` or ``top``).

On a terminal the view takes the alternate screen (the shell's screen and
scrollback come back as they were at the end), hides the cursor, and each
frame is drawn from the top-left corner over the last one: every line is
cleared to its end, and what is left below is cleared, so nothing scrolls
and nothing flickers. A line wider than the terminal is cut, so that it never
wraps and shifts what is below it. Off a terminal (a pipe, a file) each frame
is printed after the last, separated by an empty line, without escapes.

Ctrl-C (SIGINT), SIGTERM and a closed terminal (SIGHUP) end it cleanly, with
the screen restored and exit status 0. What it shows is the caller's view
(``status`` passes its own: figures as the status file has them, an agent's
memory and CPU as the orchestrator sampled them at its last heartbeat), with
colour where ``use_color`` allows it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping
from types import FrameType
from typing import TextIO

from ._exit import EXIT_OK

ENTER = "\033[?1049h\033[?25l"  # alternate screen, cursor hidden
LEAVE = "\033[?25h\033[?1049l"  # cursor shown, the shell's screen back
HOME = "\033[H"
CLEAR_LINE = "\033[K"
CLEAR_BELOW = "\033[J"
_ESCAPE = re.compile(r"\033\[[0-9;?]*[A-Za-z]")


def use_color(out: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Colour on a terminal, unless ``NO_COLOR`` is set (to anything) or ``TERM=dumb``."""
    env = os.environ if environ is None else environ
    return out.isatty() and not env.get("NO_COLOR") and env.get("TERM") != "dumb"


class _Stop(Exception):
    """SIGTERM or SIGHUP: end as Ctrl-C does."""


def clip(line: str, width: int) -> str:
    """``line`` cut to ``width`` visible characters (escape sequences kept whole)."""
    out: list[str] = []
    shown = 0
    pos = 0
    while pos < len(line):
        match = _ESCAPE.match(line, pos)
        if match:
            out.append(match.group())
            pos = match.end()
            continue
        if shown == width:
            return "".join(out) + ("\033[0m" if "\033[" in line else "")
        out.append(line[pos])
        shown += 1
        pos += 1
    return "".join(out)


def frame(body: str, *, interval: float) -> str:
    """One view: a title line, then ``body`` (what ``status`` prints)."""
    title = (f"relay-orchestrator status on {socket.gethostname()}  "
             f"{time.strftime('%H:%M:%S')}  every {interval:g}s  (Ctrl-C to quit)")
    return f"{title}\n\n{body}"


def draw(out: TextIO, text: str, *, terminal: bool) -> None:
    if terminal:
        width = shutil.get_terminal_size().columns
        lines = [clip(line, width) + CLEAR_LINE for line in text.split("\n")]
        out.write(HOME + "\n".join(lines) + CLEAR_BELOW)
    else:
        out.write(text + "\n\n")
    out.flush()


def watch(view: Callable[[bool], str], *, interval: float, out: TextIO | None = None) -> int:
    """Show ``view(color)`` every ``interval`` seconds until stopped; exit status 0."""
    out = out or sys.stdout
    terminal = out.isatty()
    color = use_color(out)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise _Stop

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        if terminal:
            out.write(ENTER)
        while True:
            draw(out, frame(view(color), interval=interval), terminal=terminal)
            time.sleep(interval)
    except (KeyboardInterrupt, _Stop):
        pass
    except BrokenPipeError:  # the reader went away (``… | head``)
        os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
        return EXIT_OK
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if terminal:
            try:
                out.write(LEAVE)
                out.flush()
            except OSError:
                pass
    return EXIT_OK
