"""Adapters for the thing that supervises the orchestrator: systemd, launchd, none.

They start processes outside the orchestrator's own teardown, restart the
orchestrator decoupled, speak sd_notify, and install or uninstall it as a
service. They know units and processes, not agents or the relay.
"""

from ._detect import SUPERVISOR_CHOICES as SUPERVISOR_CHOICES
from ._detect import SUPERVISOR_ENV_KEYS as SUPERVISOR_ENV_KEYS
from ._detect import child_env as child_env
from ._detect import detect as detect
from ._detect import supervisor_name as supervisor_name
from ._errors import InstallError as InstallError
from ._errors import LaunchError as LaunchError
from ._errors import RestartError as RestartError
from ._errors import SupervisorConfigError as SupervisorConfigError
from ._errors import SupervisorError as SupervisorError
from ._host import HostSupervisor as HostSupervisor
from ._install import LAUNCHD_TOKEN_FILE as LAUNCHD_TOKEN_FILE
from ._install import SYSTEMD_UNIT as SYSTEMD_UNIT
from ._install import TOKEN_ENV as TOKEN_ENV
from ._install import InstallPlan as InstallPlan
from ._install import MakeDir as MakeDir
from ._install import RemoveFile as RemoveFile
from ._install import RemoveTree as RemoveTree
from ._install import RunCommand as RunCommand
from ._install import WriteFile as WriteFile
from ._install import apply as apply
from ._install import linger_note as linger_note
from ._install import plan_install as plan_install
from ._install import plan_uninstall as plan_uninstall
from ._installed import LAUNCHD_DEFAULT_PATH as LAUNCHD_DEFAULT_PATH
from ._installed import SYSTEMD_DEFAULT_PATH as SYSTEMD_DEFAULT_PATH
from ._installed import InstalledService as InstalledService
from ._installed import find_installed as find_installed
from ._installed import parse_env_file as parse_env_file
from ._launch import DirectLauncher as DirectLauncher
from ._launch import Launched as Launched
from ._launch import LaunchSpec as LaunchSpec
from ._launch import ProcessLauncher as ProcessLauncher
from ._launch import launch_direct_sync as launch_direct_sync
from ._launchd import DEFAULT_LABEL as LAUNCHD_LABEL
from ._launchd import LaunchdSupervisor as LaunchdSupervisor
from ._launchd import kickstart_argv as launchd_kickstart_argv
from ._launchd import log_path as launchd_log_path
from ._launchd import plist_path as launchd_plist_path
from ._none import NoneSupervisor as NoneSupervisor
from ._notify import Notifier as Notifier
from ._notify import notify as notify
from ._notify import watchdog_interval as watchdog_interval
from ._systemd import SystemdCli as SystemdCli
from ._systemd import SystemdLauncher as SystemdLauncher
from ._systemd import SystemdSupervisor as SystemdSupervisor
from ._systemd import open_backend as open_backend
from ._systemd import unit_status as unit_status
from ._systemd_backend import SystemdBackend as SystemdBackend
from ._systemd_backend import UnitStatus as UnitStatus

__all__ = [
    "LAUNCHD_DEFAULT_PATH",
    "LAUNCHD_LABEL",
    "SUPERVISOR_CHOICES",
    "SUPERVISOR_ENV_KEYS",
    "SYSTEMD_DEFAULT_PATH",
    "LAUNCHD_TOKEN_FILE",
    "SYSTEMD_UNIT",
    "TOKEN_ENV",
    "DirectLauncher",
    "HostSupervisor",
    "InstallError",
    "InstallPlan",
    "InstalledService",
    "LaunchError",
    "LaunchSpec",
    "Launched",
    "LaunchdSupervisor",
    "MakeDir",
    "NoneSupervisor",
    "Notifier",
    "ProcessLauncher",
    "RemoveFile",
    "RemoveTree",
    "RestartError",
    "RunCommand",
    "SupervisorConfigError",
    "SupervisorError",
    "SystemdBackend",
    "SystemdCli",
    "SystemdLauncher",
    "SystemdSupervisor",
    "UnitStatus",
    "WriteFile",
    "apply",
    "child_env",
    "detect",
    "find_installed",
    "launch_direct_sync",
    "launchd_kickstart_argv",
    "launchd_log_path",
    "launchd_plist_path",
    "linger_note",
    "notify",
    "open_backend",
    "parse_env_file",
    "plan_install",
    "plan_uninstall",
    "supervisor_name",
    "unit_status",
    "watchdog_interval",
]
