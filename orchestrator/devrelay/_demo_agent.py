"""The agent ``dev`` spawns: prints what it reads, so compact and reload show.

    python -m orchestrator.devrelay._demo_agent
"""

from __future__ import annotations

import os
import signal
import sys


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"demo agent {os.environ.get('RELAY_AGENT_ID', '')} ready (pid {os.getpid()})",
          flush=True)
    for line in sys.stdin:
        print(f"got: {line.rstrip()}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
