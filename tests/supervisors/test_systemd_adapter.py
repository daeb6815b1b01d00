"""The systemd adapter's command lines and conversions, with stand-ins.

The real thing is in test_systemd_sandbox.py; these pin what is sent.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from supervisors import (
    LaunchError,
    LaunchSpec,
    RestartError,
    SupervisorConfigError,
    SystemdCli,
    SystemdSupervisor,
    UnitStatus,
)
from supervisors._systemd_backend import escape_exec_arg, format_env_file, service_name
from supervisors._systemd_dbus import (
    cpu_quota_property,
    memory_property,
    tasks_property,
    transient_properties,
    unit_object_path,
)

from .stand_ins import StandIns

SECRET = "hunter2-$ecret \"quoted\" 'single' \\ back"
SHOW = "MainPID=4242\nActiveState=active\nSubState=running\nResult=success\n"


def spec(tmp_path: Path, **kw: str) -> LaunchSpec:
    fifo = tmp_path / "in.fifo"
    if not fifo.exists():
        os.mkfifo(fifo)
    return LaunchSpec(
        name="relay-ag_12",
        argv=["sh", "-c", "echo $HOME", "100%"],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"], "RELAY_SECRET": SECRET},
        stdin_path=tmp_path / "in.fifo",
        stdout_path=tmp_path / "out.log",
        **kw,
    )


async def test_cli_launch_keeps_secrets_off_the_command_line(
    tmp_path: Path, stand_ins: StandIns
) -> None:
    stand_ins.add("systemd-run")
    stand_ins.add("systemctl", stdout=SHOW)
    secrets = tmp_path / "secrets"
    secrets.mkdir(mode=0o700)
    backend = SystemdCli(secrets_dir=secrets)
    launched = await backend.start_transient(
        spec(tmp_path, memory_max="4G", cpu_quota="200%", tasks_max="512")
    )
    assert (launched.pid, launched.unit) == (4242, "relay-ag_12.service")

    run, show = stand_ins.calls()
    argv = run["argv"]
    assert SECRET not in " ".join(argv)
    env_file = next(a for a in argv if a.startswith("EnvironmentFile="))[len("EnvironmentFile=") :]
    assert Path(env_file).parent == secrets
    assert run["env_file"]["mode"] == 0o600
    assert run["env_file"]["content"] == format_env_file(
        {"PATH": os.environ["PATH"], "RELAY_SECRET": SECRET}
    )
    assert list(secrets.iterdir()) == []  # removed once started
    sh = shutil.which("sh", path=os.environ["PATH"])
    assert argv == [
        "systemd-run", "--user", "--unit=relay-ag_12.service", "--collect", "--quiet",
        "--no-ask-password", "--description=relay-orchestrator agent relay-ag_12",
        "-p", "Type=exec", "-p", f"WorkingDirectory={tmp_path}",
        "-p", f"EnvironmentFile={env_file}",
        "-p", "StandardInput=null",
        "-p", f"StandardOutput=append:{tmp_path / 'out.log'}",
        "-p", f"StandardError=append:{tmp_path / 'out.log'}",
        "-p", "MemoryMax=4G", "-p", "CPUQuota=200%", "-p", "TasksMax=512",
        "--", "/bin/sh", "-c", 'exec 0<>"$$0" && exec "$$@"', str(tmp_path / "in.fifo"),
        sh, "-c", "echo $$HOME", "100%",
    ]  # fmt: skip
    assert show["argv"][:3] == ["systemctl", "--user", "show"]
    assert show["argv"][-2:] == ["--", "relay-ag_12.service"]


async def test_cli_launch_failure_names_the_cause(tmp_path: Path, stand_ins: StandIns) -> None:
    stand_ins.add(
        "systemd-run", stderr="Failed to start transient service unit: Unit exists\n", code=1
    )
    backend = SystemdCli(secrets_dir=tmp_path)
    with pytest.raises(LaunchError, match="Unit exists"):
        await backend.start_transient(spec(tmp_path))
    assert [n for n in os.listdir(tmp_path) if n.startswith("relay-env-")] == []


async def test_cli_launch_of_a_missing_program(tmp_path: Path) -> None:
    bad = LaunchSpec(name="x", argv=["no-such-program-here"], cwd=tmp_path, env={"PATH": "/nope"})
    with pytest.raises(LaunchError, match="executable not found"):
        await SystemdCli().start_transient(bad)


async def test_restart_self_goes_through_a_transient_unit(stand_ins: StandIns) -> None:
    stand_ins.add("systemd-run")
    systemctl = stand_ins.add("systemctl")
    sup = SystemdSupervisor(self_unit="relay-orchestrator.service", backend=SystemdCli())
    await sup.restart_self()
    (call,) = stand_ins.argvs()
    helper = call[2]
    assert helper.startswith("--unit=relay-orchestrator-restart-")
    assert helper.endswith(".service")
    assert call[:2] == ["systemd-run", "--user"]
    assert "--collect" in call
    assert call[call.index("--") + 1 :] == [
        str(systemctl), "--user", "--no-block", "restart", "relay-orchestrator.service",
    ]  # fmt: skip


async def test_restart_failure_is_a_restart_error(stand_ins: StandIns) -> None:
    stand_ins.add("systemd-run", stderr="Failed to connect to bus\n", code=1)
    sup = SystemdSupervisor(self_unit="relay-orchestrator.service", backend=SystemdCli())
    with pytest.raises(RestartError, match="Failed to connect to bus"):
        await sup.restart_self()
    with pytest.raises(RestartError, match="known unit"):
        await SystemdSupervisor(self_unit=None, backend=SystemdCli()).restart_self()


async def test_system_manager_scope(stand_ins: StandIns) -> None:
    stand_ins.add("systemctl", stdout=SHOW)
    status = await SystemdCli(user=False).unit_status("x.service")
    assert status.main_pid == 4242
    assert stand_ins.argvs()[0][:2] == ["systemctl", "--system"]


def test_unit_status_from_properties() -> None:
    status = UnitStatus.from_properties(
        "a.service",
        {
            "MainPID": "12",
            "ActiveState": "active",
            "SubState": "running",
            "Result": "success",
            "InvocationID": "abc",
            "NRestarts": "2",
            "MemoryCurrent": "[not set]",
            "CPUUsageNSec": str(2**64 - 1),
            "TasksCurrent": "3",
        },
    )
    assert (status.main_pid, status.n_restarts, status.tasks_current) == (12, 2, 3)
    assert status.memory_current is None
    assert status.cpu_usage_nsec is None
    empty = UnitStatus.from_properties("gone.service", {"MainPID": "0"})
    assert (empty.main_pid, empty.active_state, empty.memory_current) == (0, "", None)


def test_names_and_escapes() -> None:
    assert service_name("relay-ag_12") == "relay-ag_12.service"
    assert service_name("x.service") == "x.service"
    with pytest.raises(SupervisorConfigError):
        service_name("has space")
    assert escape_exec_arg("$HOME ${X} $$") == "$$HOME $${X} $$$$"
    assert format_env_file({"A": 'x"y$z`w\\v', "B": "plain"}) == (
        'A="x\\"y\\$z\\`w\\\\v"\nB="plain"\n'
    )
    with pytest.raises(SupervisorConfigError, match="variable name"):
        format_env_file({"NOT VALID": "x"})


@pytest.mark.parametrize(
    ("value", "prop"),
    [
        ("4G", ("MemoryMax", "t", 4 * 1024**3)),
        ("512M", ("MemoryMax", "t", 512 * 1024**2)),
        ("1.5K", ("MemoryMax", "t", 1536)),
        ("1000", ("MemoryMax", "t", 1000)),
        ("infinity", ("MemoryMax", "t", 2**64 - 1)),
        ("50%", ("MemoryMaxScale", "u", (2**32 - 1) // 2)),
    ],
)
def test_memory_property(value: str, prop: tuple[str, str, int]) -> None:
    assert memory_property(value) == prop


def test_cpu_and_tasks_properties() -> None:
    assert cpu_quota_property("200%") == ("CPUQuotaPerSecUSec", "t", 2_000_000)
    assert cpu_quota_property("50%") == ("CPUQuotaPerSecUSec", "t", 500_000)
    assert tasks_property("512") == ("TasksMax", "t", 512)
    assert tasks_property("100%") == ("TasksMaxScale", "u", 2**32 - 1)
    for bad in (lambda: memory_property("lots"), lambda: cpu_quota_property("2"),
                lambda: tasks_property("-1")):  # fmt: skip
        with pytest.raises(SupervisorConfigError):
            bad()


def test_transient_properties_for_dbus(tmp_path: Path) -> None:
    props = {name: (sig, value) for name, sig, value in transient_properties(spec(tmp_path))}
    sh = shutil.which("sh", path=os.environ["PATH"])
    wrapped = ["/bin/sh", "-c", 'exec 0<>"$$0" && exec "$$@"', str(tmp_path / "in.fifo")]
    assert props["ExecStart"] == (
        "a(sasb)",
        [("/bin/sh", [*wrapped, sh, "-c", "echo $$HOME", "100%"], False)],
    )
    assert props["Environment"] == ("as", [f"PATH={os.environ['PATH']}", f"RELAY_SECRET={SECRET}"])
    assert props["Type"] == ("s", "exec")
    assert props["CollectMode"] == ("s", "inactive-or-failed")
    assert props["StandardInput"] == ("s", "null")  # the wrapper opens the FIFO read-write
    assert props["StandardOutputFileToAppend"] == ("s", str(tmp_path / "out.log"))
    assert props["StandardErrorFileToAppend"] == ("s", str(tmp_path / "out.log"))
    quiet = LaunchSpec(name="q", argv=[sys.executable], cwd=tmp_path, env={})
    props = {name: (sig, value) for name, sig, value in transient_properties(quiet)}
    assert props["StandardInput"] == props["StandardOutput"] == ("s", "null")
    assert props["ExecStart"] == ("a(sasb)", [(sys.executable, [sys.executable], False)])


def test_a_missing_input_fifo_fails_the_launch(tmp_path: Path) -> None:
    gone = LaunchSpec(
        name="g", argv=[sys.executable], cwd=tmp_path, env={}, stdin_path=tmp_path / "gone"
    )
    with pytest.raises(LaunchError, match="no such input FIFO"):
        transient_properties(gone)


def test_unit_object_path() -> None:
    assert unit_object_path("relay-ag_12.service") == (
        "/org/freedesktop/systemd1/unit/relay_2dag_5f12_2eservice"
    )
    assert unit_object_path("1x.service").startswith("/org/freedesktop/systemd1/unit/_31x")
