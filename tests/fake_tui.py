"""A stand-in for an agent CLI's screen, for a provider of kind ``claude``:

    python fake_tui.py [--ask QUESTION] [claude's own flags, ignored]

draws claude's input box (the activity tracker reads ``ready``) or, with
``--ask``, a question with claude's dialog hints (``asking``), and draws it
again each second (as a CLI redraws its screen: the tracker reads a pane
after output, and the first drawing may come before the pane's output is
followed) until it is signalled. It writes nothing anywhere else.
"""

from __future__ import annotations

import argparse
import sys
import time

RULE = "─" * 60


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ask", default=None)
    args, _ = parser.parse_known_args()
    if args.ask:
        screen = [RULE, f" {args.ask}", "", " ❯ 1. Yes", "   2. No", "",
                  " Enter to confirm · Esc to cancel"]
    else:
        screen = [" fake claude", "", RULE, "❯ Try \"fix the tests\"", RULE, "  ⏵⏵ auto mode on"]
    while True:
        sys.stdout.write("\033[2J\033[H" + "\r\n".join(screen))
        sys.stdout.flush()
        time.sleep(1)


if __name__ == "__main__":
    main()
