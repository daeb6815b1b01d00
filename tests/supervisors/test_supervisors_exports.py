"""The public surface of ``supervisors``: what other packages may use."""

from __future__ import annotations

import supervisors

EXPECTED = {
    "LAUNCHD_LABEL", "LAUNCHD_TOKEN_FILE", "SUPERVISOR_CHOICES",
    "SUPERVISOR_ENV_KEYS", "SYSTEMD_UNIT", "TOKEN_ENV",
    "DirectLauncher", "HostSupervisor", "InstallError", "InstallPlan", "LaunchError",
    "LaunchSpec", "Launched", "LaunchdSupervisor", "MakeDir", "NoneSupervisor", "Notifier",
    "ProcessLauncher", "RemoveFile", "RemoveTree", "RestartError", "RunCommand",
    "SupervisorConfigError", "SupervisorError", "SystemdBackend", "SystemdCli",
    "SystemdLauncher", "SystemdSupervisor", "UnitStatus", "WriteFile", "apply", "child_env",
    "detect", "launch_direct_sync", "linger_note", "notify", "open_backend", "plan_install",
    "plan_uninstall", "unit_status", "watchdog_interval",
    # what an installed service runs with (doctor)
    "InstalledService", "LAUNCHD_DEFAULT_PATH", "SYSTEMD_DEFAULT_PATH", "find_installed",
    "parse_env_file",
    # which supervisor runs us, before detect(); launchd's paths (logs, restart)
    "supervisor_name", "launchd_kickstart_argv", "launchd_log_path", "launchd_plist_path",
}  # fmt: skip


def test_exports() -> None:
    assert set(supervisors.__all__) == EXPECTED
    public = {name for name in vars(supervisors) if not name.startswith("_")}
    assert public == EXPECTED


def test_errors_share_one_root() -> None:
    for name in ("InstallError", "LaunchError", "RestartError", "SupervisorConfigError"):
        assert issubclass(getattr(supervisors, name), supervisors.SupervisorError)
