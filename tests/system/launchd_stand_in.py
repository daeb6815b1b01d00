"""A stand-in for ``launchctl`` and the launchd behind it, for the tests on a
machine without launchd (not a test module).

    launchd_stand_in.py bootstrap gui/<uid> <plist>
    launchd_stand_in.py bootout gui/<uid>/<label>
    launchd_stand_in.py kickstart -k gui/<uid>/<label>

Each call is appended to ``$LAUNCHD_STAND_IN_DIR/calls.jsonl`` (its argv,
``launchctl`` first). ``bootstrap`` loads the plist and starts its job as
launchd would: ``ProgramArguments`` with ``EnvironmentVariables`` and
``XPC_SERVICE_NAME`` set to the label, in a session of its own, standard
output and error appended to ``StandardOutPath`` and ``StandardErrorPath``.
``kickstart -k`` stops the job (SIGTERM, then SIGKILL after ``ExitTimeOut``)
and starts it again; ``bootout`` stops it and unloads it. A loaded job is
``$LAUNCHD_STAND_IN_DIR/<label>.json``: its plist and the pid and start
time of its process (so that a pid reused by another process is never
signalled). Exit statuses as launchctl's: 3 not loaded (bootout), 5 loaded
already (bootstrap), 113 no such service (kickstart).

``stop_all(folder)`` ends every job still loaded there (the tests' cleanup).
"""

from __future__ import annotations

import json
import os
import plistlib
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil

LAUNCHD_DEFAULT_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"
PASSED_ON = ("PYTHONPATH",)  # the tests' own environment, where it matters to the job


def _job_file(folder: Path, label: str) -> Path:
    return folder / f"{label}.json"


def _process(job: dict[str, Any]) -> psutil.Process | None:
    try:
        proc = psutil.Process(job["pid"])
        if proc.create_time() != job["created"] or proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except psutil.Error:
        return None


def _start(folder: Path, label: str, plist_path: str) -> None:
    plist = plistlib.loads(Path(plist_path).read_bytes())
    # launchd's own PATH, not the caller's: what the plist does not set, a job lacks.
    env = {"HOME": os.environ["HOME"], "PATH": LAUNCHD_DEFAULT_PATH, "USER": "tester"}
    env.update({k: os.environ[k] for k in PASSED_ON if k in os.environ})
    env.update(plist.get("EnvironmentVariables") or {})
    env["XPC_SERVICE_NAME"] = label
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    out = os.open(plist.get("StandardOutPath") or os.devnull, flags, 0o644)
    err = os.open(plist.get("StandardErrorPath") or os.devnull, flags, 0o644)
    try:
        proc = subprocess.Popen(plist["ProgramArguments"], env=env, cwd="/",
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                start_new_session=True)
    finally:
        os.close(out)
        os.close(err)
    proc.returncode = 0  # not ours to reap: launchd's (here init's, once we exit)
    created = psutil.Process(proc.pid).create_time()
    job = {"plist": plist_path, "pid": proc.pid, "created": created,
           "exitTimeOut": plist.get("ExitTimeOut", 20)}
    _job_file(folder, label).write_text(json.dumps(job))


def _stop(job: dict[str, Any]) -> None:
    proc = _process(job)
    if proc is None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=job["exitTimeOut"])
    except psutil.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def main(argv: list[str]) -> int:
    folder = Path(os.environ["LAUNCHD_STAND_IN_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "calls.jsonl").open("a") as calls:
        calls.write(json.dumps({"argv": ["launchctl", *argv]}) + "\n")
    verb = argv[0] if argv else ""
    if verb == "bootstrap":
        plist = plistlib.loads(Path(argv[2]).read_bytes())
        label = plist["Label"]
        if _job_file(folder, label).exists():
            print("Bootstrap failed: 5: Input/output error", file=sys.stderr)
            return 5
        _start(folder, label, argv[2])
        return 0
    label = argv[-1].rsplit("/", 1)[-1]
    path = _job_file(folder, label)
    if not path.exists():
        if verb == "kickstart":
            print(f"Could not find service \"{label}\" in domain", file=sys.stderr)
            return 113
        print("Boot-out failed: 3: No such process", file=sys.stderr)
        return 3
    job = json.loads(path.read_text())
    _stop(job)
    if verb == "bootout":
        path.unlink()
        return 0
    if verb == "kickstart" and "-k" in argv:
        _start(folder, label, job["plist"])
        return 0
    print(f"launchd stand-in: not implemented: {argv}", file=sys.stderr)
    return 64


def stop_all(folder: Path) -> None:
    for path in folder.glob("*.json"):
        _stop(json.loads(path.read_text()))
        path.unlink()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
