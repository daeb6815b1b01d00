"""Chaos soak, minutes long (not in CI; ``tests/test_soak.py`` is its CI version).

    python bench/soak.py [--minutes 3] [--seed N] [--agents 40] [--workdir DIR]

The dev relay (in this process, with a state file) and one orchestrator
subprocess take a random mix of spawn/stop/restart/compact commands over
tens of agents while a chaos driver kills the relay and starts it again from
its state file, SIGKILLs the orchestrator and starts it again, crashes
agents, and makes the relay answer 500 or hang. Then the invariants are
checked (``bench/_soak_driver.py`` says which) and the counts printed. The
seed is printed; give it back with ``--seed`` to replay the same decisions.
Writes ``bench/results/soak.json``; exits 1 if any invariant is broken.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import write_json  # noqa: E402
from bench._soak_driver import SoakConfig, default_workdir, run_soak  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=None, help="default: a random one, printed")
    ap.add_argument("--agents", type=int, default=40)
    ap.add_argument("--workdir", type=Path, default=None,
                    help="default: a new temporary one, removed when every invariant held")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    workdir = args.workdir or default_workdir()
    print(f"soak seed {seed} (replay with --seed {seed})", flush=True)
    config = SoakConfig(seconds=args.minutes * 60, seed=seed, workdir=workdir,
                        agents=args.agents, catch_up=90.0,
                        say=lambda line: print(line, flush=True))
    report = trio.run(run_soak, config)
    print(report.render())
    path = write_json("soak", report.to_json())
    print(f"  wrote {path}")
    if report.violations:
        print(f"  work dir kept for a look: {workdir}")
        return 1
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
