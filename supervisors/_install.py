"""Installing and uninstalling the orchestrator as a service, as a plan.

``plan_install`` and ``plan_uninstall`` are pure: they read nothing but the
templates shipped in ``units`` and whether lingering is on, and return an
``InstallPlan``, an ordered list of steps (write a file, remove a file or a
tree, make a directory, run a command). ``render_dry_run()`` shows it, the
token only as a placeholder; ``apply()`` carries it out.

systemd (a user unit in ``$XDG_CONFIG_HOME/systemd/user/``)::

    write  <config_dir>/token.env                   0600  RELAY_ORCHESTRATOR_TOKEN=…
    write  <unit dir>/relay-orchestrator.service    0644
    run    systemctl --user daemon-reload
    run    systemctl --user enable relay-orchestrator.service
    run    systemctl --user restart relay-orchestrator.service   (Type=notify: waits for READY)
    run    loginctl enable-linger <user>            (may fail: a note, not an error)

launchd (a LaunchAgent)::

    mkdir  ~/Library/Logs/relay-orchestrator
    write  <config_dir>/token                        0600  the token
    write  ~/Library/LaunchAgents/<label>.plist      0644  (… run --token-file <config_dir>/token)
    run    launchctl bootout gui/<uid>/<label>       (may fail: not loaded before)
    run    launchctl bootstrap gui/<uid> <plist>

``restart`` (not ``enable --now``) so that a second install with other
settings takes effect; ``bootout`` before ``bootstrap`` for the same reason
(bootstrap refuses a label that is loaded).
"""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Literal

import attrs
import trio

from ._errors import InstallError, SupervisorConfigError
from ._launchd import (
    DEFAULT_LABEL,
    bootout_argv,
    bootstrap_argv,
    log_path,
    plist_path,
    render_plist,
)
from ._systemd_backend import format_env_file

InstallKind = Literal["systemd", "launchd"]
SYSTEMD_UNIT = "relay-orchestrator.service"
SERVICE_TEMPLATE = "relay-orchestrator.service.in"
TOKEN_ENV = "RELAY_ORCHESTRATOR_TOKEN"
TOKEN_PLACEHOLDER = "<token: hidden>"
LINGER_DIR = Path("/var/lib/systemd/linger")
# How long one command of a plan may take (a restart waits for READY).
COMMAND_TIMEOUT = 120.0


# -- steps --------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class WriteFile:
    path: Path
    content: str = attrs.field(repr=False)
    mode: int
    # What a dry run shows instead of the content (a secret's placeholder).
    shown: str | None = attrs.field(default=None, repr=False)


@attrs.frozen(kw_only=True)
class MakeDir:
    path: Path
    mode: int = 0o700


@attrs.frozen(kw_only=True)
class RemoveFile:
    path: Path


@attrs.frozen(kw_only=True)
class RemoveTree:
    path: Path


@attrs.frozen(kw_only=True)
class RunCommand:
    argv: tuple[str, ...]
    # False: a failure becomes a note of the result, not an error.
    check: bool = True
    note: str | None = None  # the note for a failure of an unchecked command


Step = WriteFile | MakeDir | RemoveFile | RemoveTree | RunCommand


@attrs.frozen(kw_only=True)
class InstallPlan:
    kind: InstallKind
    unit: str  # the systemd unit, or the launchd label
    steps: tuple[Step, ...]

    @property
    def files(self) -> list[WriteFile]:
        return [s for s in self.steps if isinstance(s, WriteFile)]

    @property
    def commands(self) -> list[list[str]]:
        return [list(s.argv) for s in self.steps if isinstance(s, RunCommand)]

    @property
    def removals(self) -> list[Path]:
        return [s.path for s in self.steps if isinstance(s, RemoveFile | RemoveTree)]

    def render_dry_run(self) -> str:
        """Every file it would write and every command it would run; no secret."""
        out: list[str] = []
        for step in self.steps:
            if isinstance(step, WriteFile):
                out.append(f"would write {step.path} (mode {step.mode:04o}):")
                shown = step.content if step.shown is None else step.shown
                out.extend(f"    {line}" for line in shown.splitlines())
            elif isinstance(step, MakeDir):
                out.append(f"would create directory {step.path}")
            elif isinstance(step, RemoveFile):
                out.append(f"would remove {step.path}")
            elif isinstance(step, RemoveTree):
                out.append(f"would remove {step.path} and everything in it")
            else:
                tail = "" if step.check else "  (allowed to fail)"
                out.append(f"would run: {shlex.join(step.argv)}{tail}")
        return "\n".join(out) + "\n"


# -- systemd unit-file syntax --------------------------------------------------

_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+=:,@%$~^")


# Where a launchd install keeps its copy of the token (0600): a name of its own,
# never the ``token`` file a person may have made in the same folder and passed
# as --token-file (``uninstall`` removes this copy).
LAUNCHD_TOKEN_FILE = "launchd.token"

def _c_escape(text: str) -> str:
    out = []
    for c in text:
        if c in '\\"':
            out.append("\\" + c)
        elif c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\x{ord(c):02x}")
        else:
            out.append(c)
    return "".join(out)


def unit_exec_word(arg: str) -> str:
    """One ``ExecStart=`` word that the manager hands to the program verbatim."""
    text = arg.replace("%", "%%").replace("$", "$$")
    if text == ";":
        return "\\;"
    if text and all(c in _PLAIN for c in text):
        return text
    return f'"{_c_escape(text)}"'


def unit_exec_line(argv: Sequence[str]) -> str:
    if not argv or not os.path.isabs(argv[0]):
        raise SupervisorConfigError(f"the service's program must be an absolute path: {argv[:1]}")
    return " ".join(unit_exec_word(a) for a in argv)


def unit_environment_line(key: str, value: str) -> str:
    """``Environment="KEY=value"``: specifiers escaped, no ``$`` expansion there."""
    return f'Environment="{_c_escape(f"{key}={value}".replace("%", "%%"))}"'


def render_unit(
    *, exec_argv: Sequence[str], environment: Mapping[str, str], environment_file: Path | None
) -> str:
    """``relay-orchestrator.service`` from the template shipped in ``units``."""
    template = resources.files("units").joinpath(SERVICE_TEMPLATE).read_text(encoding="utf-8")
    env_lines = []
    if environment_file is not None:
        # The rest of the line is the path, unquoted; only specifiers apply.
        env_lines.append(f"EnvironmentFile={str(environment_file).replace('%', '%%')}")
    for key, value in environment.items():
        env_lines.append(unit_environment_line(key, value))
    lines = []
    for line in template.splitlines():
        if line == "@ENVIRONMENT@":
            lines.extend(env_lines)
        else:
            lines.append(line.replace("@EXEC_START@", unit_exec_line(exec_argv)))
    return "\n".join(lines) + "\n"


# -- lingering -------------------------------------------------------------------


def linger_enabled(user: str) -> bool:
    return (LINGER_DIR / user).exists()


def linger_note(user: str) -> str | None:
    """None when the user's services run while they are logged out; else what to do."""
    if linger_enabled(user):
        return None
    return (
        f"lingering is off for {user}: the service stops when {user} logs out and "
        f"starts again at the next login. To keep it running, run "
        f"`loginctl enable-linger {user}` (as root if that is refused)."
    )


# -- plans ----------------------------------------------------------------------


def _check_settings(settings_env: Mapping[str, str]) -> None:
    if TOKEN_ENV in settings_env:
        raise SupervisorConfigError(
            f"{TOKEN_ENV} must not be a recorded setting: pass the token separately"
        )


def _service_argv(exec_argv: Sequence[str], runtime_root: Path | None) -> list[str]:
    if runtime_root is not None:
        return [str(runtime_root / "bin" / "relay-orchestrator"), "run"]
    if not exec_argv:
        raise SupervisorConfigError("install needs the command that runs the orchestrator")
    return [*exec_argv, "run"]


def plan_install(
    kind: InstallKind,
    *,
    exec_argv: Sequence[str],
    settings_env: Mapping[str, str],
    token: str | None,
    config_dir: Path,
    home: Path,
    runtime_root: Path | None,
    uid: int,
    user: str | None = None,
    xdg_config_home: Path | None = None,
    label: str = DEFAULT_LABEL,
) -> InstallPlan:
    """What ``install`` writes and runs, changing nothing.

    ``exec_argv`` runs the orchestrator (``[python, "-m", "orchestrator"]``,
    or the console script); ``run`` is appended. With ``runtime_root`` the
    service runs ``<runtime_root>/bin/relay-orchestrator run`` instead.
    ``settings_env``: the non-secret settings as their environment variables.
    """
    _check_settings(settings_env)
    argv = _service_argv(exec_argv, runtime_root)
    token = None if token is None else token.strip()
    if kind == "systemd":
        token_file = config_dir / "token.env"
        steps: list[Step] = []
        if token:
            steps.append(
                WriteFile(
                    path=token_file,
                    content=format_env_file({TOKEN_ENV: token}),
                    mode=0o600,
                    shown=f"{TOKEN_ENV}={TOKEN_PLACEHOLDER}\n",
                )
            )
        unit_path = (xdg_config_home or home / ".config") / "systemd" / "user" / SYSTEMD_UNIT
        unit = render_unit(
            exec_argv=argv,
            environment=settings_env,
            environment_file=token_file if token else None,
        )
        steps += [
            WriteFile(path=unit_path, content=unit, mode=0o644),
            RunCommand(argv=("systemctl", "--user", "daemon-reload")),
            RunCommand(argv=("systemctl", "--user", "enable", SYSTEMD_UNIT)),
            RunCommand(argv=("systemctl", "--user", "restart", SYSTEMD_UNIT)),
        ]
        if user is not None and (note := linger_note(user)) is not None:
            steps.append(
                RunCommand(argv=("loginctl", "enable-linger", user), check=False, note=note)
            )
        return InstallPlan(kind=kind, unit=SYSTEMD_UNIT, steps=tuple(steps))
    if kind == "launchd":
        token_file = config_dir / LAUNCHD_TOKEN_FILE
        steps = [MakeDir(path=log_path(home).parent)]
        if token:
            steps.append(
                WriteFile(
                    path=token_file, content=token + "\n", mode=0o600, shown=TOKEN_PLACEHOLDER
                )
            )
            argv += ["--token-file", str(token_file)]
        plist = plist_path(home, label)
        content = render_plist(
            label=label, program_arguments=argv, environment=settings_env, log_file=log_path(home)
        )
        steps += [
            WriteFile(path=plist, content=content.decode(), mode=0o644),
            RunCommand(argv=tuple(bootout_argv(uid, label)), check=False, note=""),
            RunCommand(argv=tuple(bootstrap_argv(uid, plist))),
        ]
        return InstallPlan(kind=kind, unit=label, steps=tuple(steps))
    raise SupervisorConfigError(f"install: unknown service kind {kind!r}: use systemd or launchd")


def plan_uninstall(
    kind: InstallKind,
    *,
    config_dir: Path,
    home: Path,
    uid: int,
    xdg_config_home: Path | None = None,
    label: str = DEFAULT_LABEL,
    purge_paths: Sequence[Path] = (),
) -> InstallPlan:
    """Stop and disable the service, remove what ``install`` wrote.

    Agents (in units of their own) keep running; ``purge_paths`` (the
    caller's state directories, for ``--purge``) are removed last.
    """
    purge: list[Step] = [RemoveTree(path=p) for p in purge_paths]
    if kind == "systemd":
        unit_path = (xdg_config_home or home / ".config") / "systemd" / "user" / SYSTEMD_UNIT
        steps: list[Step] = [
            RunCommand(
                argv=("systemctl", "--user", "disable", "--now", SYSTEMD_UNIT),
                check=False,
                note=f"{SYSTEMD_UNIT} was not enabled or not running",
            ),
            RemoveFile(path=unit_path),
            RemoveFile(path=config_dir / "token.env"),
            RunCommand(argv=("systemctl", "--user", "daemon-reload")),
            RunCommand(
                argv=("systemctl", "--user", "reset-failed", SYSTEMD_UNIT), check=False, note=""
            ),
            *purge,
        ]
        return InstallPlan(kind=kind, unit=SYSTEMD_UNIT, steps=tuple(steps))
    if kind == "launchd":
        steps = [
            RunCommand(
                argv=tuple(bootout_argv(uid, label)), check=False, note=f"{label} was not loaded"
            ),
            RemoveFile(path=plist_path(home, label)),
            RemoveFile(path=config_dir / LAUNCHD_TOKEN_FILE),
            *purge,
        ]
        return InstallPlan(kind=kind, unit=label, steps=tuple(steps))
    raise SupervisorConfigError(f"uninstall: unknown service kind {kind!r}: use systemd or launchd")


# -- carrying a plan out ----------------------------------------------------------


def _write_file(step: WriteFile) -> None:
    step.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # A temporary file created with the final mode (never readable by others,
    # even for a moment), then renamed over the old one.
    fd, tmp = tempfile.mkstemp(prefix=f".{step.path.name}.", dir=step.path.parent)
    try:
        os.fchmod(fd, step.mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(step.content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, step.path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _apply_file_step(step: WriteFile | MakeDir | RemoveFile | RemoveTree) -> None:
    try:
        if isinstance(step, WriteFile):
            _write_file(step)
        elif isinstance(step, MakeDir):
            step.path.mkdir(mode=step.mode, parents=True, exist_ok=True)
        elif isinstance(step, RemoveFile):
            step.path.unlink(missing_ok=True)
        elif step.path.exists():
            shutil.rmtree(step.path)
    except OSError as exc:
        raise InstallError(f"{type(step).__name__} {step.path}: {exc}") from exc


def _failed(step: RunCommand, message: str) -> str:
    """Raise for a command that must not fail; else the note to report."""
    if step.check:
        raise InstallError(f"`{shlex.join(step.argv)}` {message}")
    return step.note if step.note is not None else message


async def _run_command(step: RunCommand) -> str | None:
    """None on success; the failure's note for an unchecked command."""
    try:
        proc = await trio.run_process(
            list(step.argv), capture_stdout=True, capture_stderr=True, check=False
        )
    except OSError as exc:
        return _failed(step, f"could not be run: {exc}")
    if proc.returncode == 0:
        return None
    output = (proc.stderr or proc.stdout).decode(errors="replace").strip()
    tail = " | ".join(output.splitlines()[-5:]) or "(no output)"
    return _failed(step, f"failed (exit {proc.returncode}): {tail}")


async def apply(plan: InstallPlan, *, command_timeout: float = COMMAND_TIMEOUT) -> list[str]:
    """Carry ``plan`` out, in order; the notes of steps allowed to fail.

    Raises ``InstallError`` at the first step that must not fail; the steps
    before it stay done (a second run of the same plan completes it).
    """
    notes: list[str] = []
    for step in plan.steps:
        if isinstance(step, RunCommand):
            note = None
            with trio.move_on_after(command_timeout) as scope:
                note = await _run_command(step)
            if scope.cancelled_caught:
                note = _failed(step, f"took longer than {command_timeout:g} s")
            if note:
                notes.append(note)
        else:
            await trio.to_thread.run_sync(_apply_file_step, step)
    return notes


__all__ = [
    "COMMAND_TIMEOUT",
    "InstallKind",
    "InstallPlan",
    "MakeDir",
    "RemoveFile",
    "RemoveTree",
    "RunCommand",
    "SYSTEMD_UNIT",
    "Step",
    "TOKEN_ENV",
    "TOKEN_PLACEHOLDER",
    "WriteFile",
    "apply",
    "linger_enabled",
    "linger_note",
    "plan_install",
    "plan_uninstall",
    "render_unit",
    "unit_environment_line",
    "unit_exec_line",
    "unit_exec_word",
]
