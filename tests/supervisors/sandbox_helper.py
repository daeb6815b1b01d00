"""Run as the sandbox's test user by test_systemd_sandbox.py (not a test module).

sandbox_helper.py launch --backend B --workdir W --name N --secret-file S
    Start one agent through the systemd launcher (its stdin a FIFO kept
    open here, its output W/agent.log), write W/result.json, write a line
    to the agent, then wait for SIGTERM. Run inside a "parent" unit.
sandbox_helper.py service --backend B --state F [ARG...]
    What the installed unit runs: append a JSON line about this start to
    F, READY=1; on the first start launch an agent and restart ourselves
    through the supervisor (decoupled); exit 0 on SIGTERM.
sandbox_helper.py install --backend B --workdir W --token T --weird V [ARG...]
sandbox_helper.py uninstall --workdir W
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import trio

from supervisors import (
    LaunchSpec,
    SystemdLauncher,
    apply,
    detect,
    open_backend,
    plan_install,
    plan_uninstall,
)

AGENT_CODE = """
import json, os, sys, time
secret = os.environ.get("RELAY_TEST_SECRET", "")
print(json.dumps({"argv": sys.argv[1:], "secret_len": len(secret)}), flush=True)
for line in sys.stdin:
    print("got: " + line.strip(), flush=True)
print("EOF", flush=True)  # must not happen while the FIFO exists
time.sleep(600)
"""


# Small, quick file operations of this helper (sync on purpose).
def read_text(path: Path) -> str:
    return path.read_text()


def read_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def append_line(path: Path, line: str) -> None:
    with path.open("a") as f:
        f.write(line + "\n")


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


async def wait_for_sigterm() -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            return


def agent_spec(name: str, workdir: Path, secret: str, **limits: str) -> LaunchSpec:
    return LaunchSpec(
        name=name,
        argv=[sys.executable, "-c", AGENT_CODE, "$HOME", "${HOME}", "%n", "a b", "back\\slash"],
        cwd=workdir,
        env={"PATH": os.environ["PATH"], "HOME": os.environ["HOME"], "RELAY_TEST_SECRET": secret},
        stdin_path=workdir / "agent.in",
        stdout_path=workdir / "agent.log",
        **limits,
    )


async def launch(args: argparse.Namespace) -> None:
    workdir = Path(args.workdir)
    fifo = workdir / "agent.in"
    os.mkfifo(fifo, 0o600)
    fd = os.open(fifo, os.O_RDWR)  # keeps a writer, so the agent never sees EOF
    secrets = workdir / "secrets"
    secrets.mkdir(mode=0o700)
    backend = open_backend(args.backend, user=True, secrets_dir=secrets)
    spec = agent_spec(
        args.name,
        workdir,
        read_text(Path(args.secret_file)),
        memory_max="256M",
        cpu_quota="50%",
        tasks_max="64",
    )
    launched = await SystemdLauncher(backend).launch(spec)
    status = await backend.unit_status(launched.unit or "")
    write_json(
        workdir / "result.json",
        {
            "pid": launched.pid,
            "unit": launched.unit,
            "backend": backend.name,
            "fell_back": bool(getattr(backend, "_fell_back", False)),
            "status_pid": status.main_pid,
            "status_state": status.active_state,
            "secrets_left": sorted(p.name for p in secrets.iterdir()),
        },
    )
    os.write(fd, b"hello\n")
    await wait_for_sigterm()


async def service(args: argparse.Namespace, extra: list[str]) -> None:
    state = Path(args.state)
    starts = read_lines(state)
    sup = detect(systemd_backend=args.backend)
    token = os.environ.get("RELAY_ORCHESTRATOR_TOKEN", "")
    record: dict[str, Any] = {
        "pid": os.getpid(),
        "invocation_id": os.environ.get("INVOCATION_ID"),
        "supervisor": sup.name,
        "self_unit": sup.self_unit,
        "can_self_upgrade": sup.can_self_upgrade,
        "argv": extra,
        "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
        "weird": os.environ.get("RELAY_TEST_WEIRD"),
    }
    first = not starts
    if first:
        workdir = state.parent
        os.mkfifo(workdir / "agent.in", 0o600)
        fd = os.open(workdir / "agent.in", os.O_RDWR)
        launched = await sup.launcher.launch(
            agent_spec(f"relay-test-svc-agent-{os.getpid()}", workdir, "x")
        )
        record["agent_pid"] = launched.pid
        record["agent_unit"] = launched.unit
        os.write(fd, b"hi\n")
    append_line(state, json.dumps(record))
    sup.notify_ready("test helper up")
    if first:
        await sup.restart_self()
    await wait_for_sigterm()
    sup.notify_stopping()


async def install(args: argparse.Namespace, extra: list[str]) -> None:
    workdir = Path(args.workdir)
    home = Path(os.environ["HOME"])
    plan = plan_install(
        "systemd",
        exec_argv=[
            sys.executable,
            __file__,
            "service",
            "--backend",
            args.backend,
            "--state",
            str(workdir / "starts.jsonl"),
            *extra,
        ],
        settings_env={"RELAY_TEST_WEIRD": args.weird},
        token=args.token,
        config_dir=workdir / "config",
        home=home,
        runtime_root=None,
        uid=os.getuid(),
        user=None,
    )
    notes = await apply(plan)
    print(json.dumps({"notes": notes, "dry_run": plan.render_dry_run()}))


async def uninstall(args: argparse.Namespace) -> None:
    workdir = Path(args.workdir)
    plan = plan_uninstall(
        "systemd", config_dir=workdir / "config", home=Path(os.environ["HOME"]), uid=os.getuid()
    )
    print(json.dumps({"notes": await apply(plan)}))


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False)
    parser.add_argument("mode", choices=["launch", "service", "install", "uninstall"])
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--workdir")
    parser.add_argument("--name")
    parser.add_argument("--secret-file")
    parser.add_argument("--state")
    parser.add_argument("--token")
    parser.add_argument("--weird")
    args, extra = parser.parse_known_args()
    if args.mode == "launch":
        trio.run(launch, args)
    elif args.mode == "service":
        trio.run(service, args, extra)
    elif args.mode == "install":
        trio.run(install, args, extra)
    else:
        trio.run(uninstall, args)


if __name__ == "__main__":
    main()
