"""The launchd adapter: plists checked with plistlib, launchctl with a stand-in."""

from __future__ import annotations

import os
import plistlib
from pathlib import Path

import trio

from supervisors import LaunchdSupervisor, RunCommand, apply, plan_install, plan_uninstall

from .stand_ins import StandIns

TOKEN = "launchd-token-XYZ"
SETTINGS = {"RELAY_ORCHESTRATOR_RELAY_URL": "http://relay.example:8080"}


def launchd_plan(tmp_path: Path, **kw: object):  # type: ignore[no-untyped-def]
    args: dict[str, object] = {
        "exec_argv": ["/opt/venv/bin/relay-orchestrator"],
        "settings_env": SETTINGS,
        "token": TOKEN,
        "config_dir": tmp_path / "home/Library/Application Support/relay-orchestrator",
        "home": tmp_path / "home",
        "runtime_root": None,
        "uid": 501,
    }
    args.update(kw)
    return plan_install("launchd", **args)  # type: ignore[arg-type]


def test_the_plist(tmp_path: Path) -> None:
    p = launchd_plan(tmp_path)
    token_file, plist_file = p.files
    assert plist_file.path == tmp_path / "home/Library/LaunchAgents/relay-orchestrator.plist"
    assert TOKEN not in plist_file.content
    plist = plistlib.loads(plist_file.content.encode())
    log = str(tmp_path / "home/Library/Logs/relay-orchestrator/orchestrator.log")
    assert plist == {
        "Label": "relay-orchestrator",
        "ProgramArguments": [
            "/opt/venv/bin/relay-orchestrator", "run", "--token-file", str(token_file.path),
        ],
        "EnvironmentVariables": SETTINGS,
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "AbandonProcessGroup": True,
        "ThrottleInterval": 5,
        "ExitTimeOut": 10,
        "ProcessType": "Background",
        "StandardOutPath": log,
        "StandardErrorPath": log,
    }  # fmt: skip
    assert token_file.mode == 0o600
    assert token_file.content.strip() == TOKEN
    assert TOKEN not in p.render_dry_run()


def test_runtime_prefix_entry(tmp_path: Path) -> None:
    plist = plistlib.loads(launchd_plan(tmp_path, runtime_root=tmp_path / "rt", token=None)
                           .files[0].content.encode())  # fmt: skip
    assert plist["ProgramArguments"] == [f"{tmp_path}/rt/bin/relay-orchestrator", "run"]


async def test_install_and_uninstall_command_lines(tmp_path: Path, stand_ins: StandIns) -> None:
    stand_ins.add("launchctl")
    p = launchd_plan(tmp_path)
    assert await apply(p) == []
    plist = tmp_path / "home/Library/LaunchAgents/relay-orchestrator.plist"
    assert plistlib.loads(plist.read_bytes())["Label"] == "relay-orchestrator"
    assert (tmp_path / "home/Library/Logs/relay-orchestrator").is_dir()
    assert stand_ins.argvs() == [
        ["launchctl", "bootout", "gui/501/relay-orchestrator"],
        ["launchctl", "bootstrap", "gui/501", str(plist)],
    ]
    u = plan_uninstall(
        "launchd", config_dir=tmp_path / "home/Library/Application Support/relay-orchestrator",
        home=tmp_path / "home", uid=501,
    )  # fmt: skip
    await apply(u)
    assert stand_ins.argvs()[2:] == [["launchctl", "bootout", "gui/501/relay-orchestrator"]]
    assert not plist.exists()
    assert not any(f.path.exists() for f in p.files)


def test_bootout_before_bootstrap_may_fail(tmp_path: Path) -> None:
    # A first install has nothing loaded to boot out; a reinstall must unload first.
    commands = [s for s in launchd_plan(tmp_path).steps if isinstance(s, RunCommand)]
    assert [(c.argv[1], c.check) for c in commands] == [("bootout", False), ("bootstrap", True)]


async def test_restart_is_a_detached_kickstart(stand_ins: StandIns) -> None:
    stand_ins.add("launchctl")
    sup = LaunchdSupervisor(self_unit="relay-orchestrator", uid=501)
    assert sup.can_self_upgrade
    await sup.restart_self()
    # The helper records its call; wait for it (bounded), then reap it by pid.
    with trio.fail_after(10):
        while not stand_ins.calls():
            await trio.sleep(0.01)
    (call,) = stand_ins.calls()
    with trio.fail_after(10):
        pid, _ = await trio.to_thread.run_sync(os.waitpid, call["pid"], 0,
                                               abandon_on_cancel=True)
    assert call["pid"] == pid
    assert call["argv"] == ["launchctl", "kickstart", "-k", "gui/501/relay-orchestrator"]
    assert call["sid"] == call["pid"] != os.getsid(0)  # a session of its own
