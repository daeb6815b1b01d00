"""Start an agent inside a tmux pane from a 0600 launch file, then vanish.

Run as a script (``python -I -S _exec_env.py FILE``), never imported by the
orchestrator: it must start fast and import nothing of the project. The
file holds JSON ``{"argv": [...], "env": {...}, "cwd": "...", "keep": [...]}``;
it is removed at once, then the process becomes the agent (``execvpe``) with
exactly ``env`` (plus the pane's own ``keep`` variables such as ``TERM``).

Secrets reach the agent this way, never through argv. Used only when an
environment name is not a shell identifier; otherwise the pane runs the
equivalent ``/bin/sh`` launch file (``_tmux.py``), which starts faster.
"""

import json
import os
import sys


def main() -> None:
    path = sys.argv[1]
    with open(path, encoding="utf-8") as file:
        spec = json.load(file)
    os.unlink(path)
    env = dict(spec["env"])
    for name in spec.get("keep", ()):
        if name in os.environ:
            env[name] = os.environ[name]
    argv = spec["argv"]
    try:
        os.chdir(spec["cwd"])
        os.execvpe(argv[0], argv, env)
    except OSError as exc:
        sys.stderr.write(f"could not start agent: {argv[0]}: {exc.strerror}\n")
        sys.stderr.flush()
        os._exit(127)


if __name__ == "__main__":
    main()
