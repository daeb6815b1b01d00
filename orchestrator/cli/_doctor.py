"""``doctor``: check this host, one line per check, each with its fix.

::

    PASS  tmux 3.3a (/usr/bin/tmux)
    WARN  lingering is off for al: the service stops when al logs out …  — loginctl enable-linger al
    FAIL  relay http://relay:8080 refused the token (401)  — put the token the relay gave you in …

Exit 1 when a check FAILs (the orchestrator will not work as configured),
else 0 (a WARN works, with less than it could). ``--json`` prints
``{"ok": bool, "checks": [{"check", "status", "what", "fix"}]}``.

The checks look at what the *service* will see, not only at this shell: the
PATH and environment of the installed unit or plist
(``supervisors.find_installed``) over the user manager's own environment,
the settings ``install`` recorded and the token it stored. With no service
installed, this shell's environment is the one ``run`` would have.
"""

from __future__ import annotations

import argparse
import enum
import json
import os
import pwd
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

import actors
import supervisors

from .._errors import ConfigError
from .._settings import ENV_PREFIX, TOKEN_ENV, Settings, add_setting_flags
from .._settings import check_token as check_header_token
from ._exit import EXIT_FAIL, EXIT_OK
from ._relay_http import relay_client
from ._service import (
    INSTALLED_ENV,
    config_dir,
    recorded_env,
    recorded_token_file,
    settings_with_recorded,
)
from ._watch import use_color

PYTHON_MIN = (3, 11)
TMUX_MIN = (3, 2)  # tmux -N (a client never starts a server), which every call passes
PROBE_TIMEOUT = 30.0  # seconds for one program asked its version, or for loginctl
CLI_KINDS = ("claude", "codex", "gemini")


class Status(enum.Enum):
    PASS = "PASS"
    WARN = "WARN"
    FAIL = "FAIL"


@attrs.frozen(kw_only=True)
class Check:
    check: str  # which check, for scripts: "tmux", "provider:claude", "login:claude", …
    status: Status
    what: str
    fix: str = ""

    def to_json(self) -> dict[str, str]:
        return {"check": self.check, "status": self.status.value, "what": self.what,
                "fix": self.fix}


def _pass(check: str, what: str, fix: str = "") -> Check:
    return Check(check=check, status=Status.PASS, what=what, fix=fix)


def _warn(check: str, what: str, fix: str) -> Check:
    return Check(check=check, status=Status.WARN, what=what, fix=fix)


def _fail(check: str, what: str, fix: str) -> Check:
    return Check(check=check, status=Status.FAIL, what=what, fix=fix)


@attrs.frozen(kw_only=True)
class Host:
    """Who runs the orchestrator here, and with what environment."""

    user: str
    home: Path
    service: supervisors.InstalledService | None
    env: Mapping[str, str] = attrs.field(repr=False)  # the orchestrator's environment
    env_from: str  # where its PATH comes from, as a person reads it

    @property
    def path(self) -> str:
        return self.env.get("PATH", os.defpath)


# -- the service and its environment ----------------------------------------------------


def host_of(user: str, home: Path) -> Host:
    xdg = os.environ.get("XDG_CONFIG_HOME")
    service = supervisors.find_installed(home=home, xdg_config_home=Path(xdg) if xdg else None,
                                         user=user)
    if service is None:
        return Host(user=user, home=home, service=None, env=dict(os.environ),
                    env_from="this shell's: no service is installed")
    if service.kind == "systemd":
        base = _manager_environment()
        base_from = "the user manager's"
        if base is None:
            base = {"PATH": supervisors.SYSTEMD_DEFAULT_PATH}
            base_from = "systemd's default: the user manager did not answer"
    else:
        base, base_from = {"PATH": supervisors.LAUNCHD_DEFAULT_PATH}, "launchd's default"
    env = {"HOME": str(home), "USER": user, **base, **service.environment}
    env_from = (f"set in {', '.join(map(str, service.sources))}"
                if "PATH" in service.environment else base_from)
    return Host(user=user, home=home, service=service, env=env, env_from=env_from)


def _manager_environment() -> dict[str, str] | None:
    """``systemctl --user show-environment``, or None when it does not answer."""
    if shutil.which("systemctl") is None:
        return None
    try:
        proc = subprocess.run(["systemctl", "--user", "show-environment"], capture_output=True,
                              text=True, timeout=PROBE_TIMEOUT, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    env = {}
    for line in proc.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            env[key] = value
    return env


def check_python() -> Check:
    v = sys.version_info
    what = f"python {v.major}.{v.minor}.{v.micro} ({sys.executable})"
    if (v.major, v.minor) < PYTHON_MIN:
        return _fail("python", f"{what} is too old: 3.11 or newer is needed",
                     "install relay-orchestrator into a venv made with Python 3.11 or newer")
    return _pass("python", what)


def check_service(host: Host) -> list[Check]:
    service = host.service
    if service is None:
        return [_pass("service", "not installed as a service: the orchestrator runs while "
                      "`relay-orchestrator run` does (`relay-orchestrator install` makes it one)")]
    kind = "systemd user service" if service.kind == "systemd" else "launchd agent"
    program = service.exec_argv[0] if service.exec_argv else ""
    again = "run `relay-orchestrator install` again, from the installation it should run"
    if not program:
        checks = [_fail("service", f"the {kind} {service.path} names no program to run", again)]
    elif not (os.path.isabs(program) and os.access(program, os.X_OK)):
        checks = [_fail("service", f"the {kind} runs {program}, which is not there "
                        f"({service.path})", again)]
    else:
        checks = [_pass("service", f"installed as a {kind} ({service.path}): "
                        f"{shlex.join(service.exec_argv)}")]
    checks.append(_pass("path", f"the service's PATH: {host.path} ({host.env_from})"))
    if service.kind == "systemd":
        checks.append(check_linger(host.user))
    elif sys.platform == "darwin" and shutil.which("launchctl"):
        checks.append(check_launchd_loaded(service))
    return checks


def linger_enabled(user: str) -> bool:
    """loginctl's answer, else the file logind keeps for a lingering user."""
    if shutil.which("loginctl"):
        try:
            proc = subprocess.run(["loginctl", "show-user", user, "-p", "Linger", "--value"],
                                  capture_output=True, text=True, timeout=PROBE_TIMEOUT,
                                  stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired):
            proc = None
        if proc is not None and proc.returncode == 0 and proc.stdout.strip() in ("yes", "no"):
            return proc.stdout.strip() == "yes"
    return supervisors.linger_note(user) is None


def check_linger(user: str) -> Check:
    if linger_enabled(user):
        return _pass("linger", f"lingering is on for {user}: the service runs from boot, "
                     "logged in or not")
    return _warn("linger", f"lingering is off for {user}: the service stops when {user} logs "
                 "out and starts at the next login",
                 f"loginctl enable-linger {user} (as root if that is refused)")


def check_launchd_loaded(service: supervisors.InstalledService) -> Check:
    uid = os.getuid()
    target = f"gui/{uid}/{service.path.stem}"
    try:
        proc = subprocess.run(["launchctl", "print", target], capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT, stdin=subprocess.DEVNULL)
        loaded = proc.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        loaded = False
    if loaded:
        return _pass("launchd", f"{target} is loaded (it runs while you are logged in)")
    return _warn("launchd", f"{target} is not loaded",
                 f"launchctl bootstrap gui/{uid} {service.path}")


# -- programs on the service's PATH -----------------------------------------------------


def _find(program: str, env: Mapping[str, str]) -> str | None:
    if "/" in program:
        return program if os.path.isfile(program) and os.access(program, os.X_OK) else None
    return shutil.which(program, path=env.get("PATH", os.defpath))


def _program_env(env: Mapping[str, str]) -> dict[str, str]:
    """What a program started by the orchestrator gets: never the orchestrator's own variables."""
    return {k: v for k, v in env.items() if not k.startswith(ENV_PREFIX)}


def _version(program: str, env: Mapping[str, str], flag: str = "--version"
             ) -> tuple[bool, str]:
    """Run ``program flag`` as the service would; (ran fine, first line or error)."""
    try:
        proc = subprocess.run([program, flag], capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT, env=_program_env(env),
                              stdin=subprocess.DEVNULL, cwd=env.get("HOME") or None)
    except subprocess.TimeoutExpired:
        return False, f"`{program} {flag}` did not answer within {PROBE_TIMEOUT:g} s"
    except OSError as exc:
        return False, exc.strerror or str(exc)
    lines = (proc.stdout.strip() or proc.stderr.strip()).splitlines()
    first = lines[0].strip()[:120] if lines else ""
    if proc.returncode != 0:
        last = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        return False, (last[-1].strip()[:200] if last else f"exit code {proc.returncode}")
    return True, first


def check_tmux(host: Host) -> Check:
    found = _find("tmux", host.env)
    if found is None:
        return _warn("tmux", f"tmux is not on the service's PATH ({host.path}): agents run as "
                     "plain processes, which nobody can attach to",
                     "install tmux 3.2 or newer (apt install tmux, brew install tmux)")
    ran, text = _version(found, host.env, "-V")
    if not ran:
        return _fail("tmux", f"tmux at {found} does not run: {text}",
                     "reinstall tmux 3.2 or newer")
    match = re.search(r"(\d+)\.(\d+)", text)
    if match and (int(match[1]), int(match[2])) < TMUX_MIN:
        return _fail("tmux", f"{text} ({found}) is too old: agents' sessions need tmux 3.2 or "
                     "newer", "install tmux 3.2 or newer, or set session = \"plain\" in each "
                     "[providers.<name>] table of the config file")
    return _pass("tmux", f"{text} ({found})")


def provider_configs(settings: Settings | None
                     ) -> tuple[dict[str, actors.ProviderConfig], set[str], list[Check]]:
    """The built-in providers under the config's tables; the names configured; bad tables."""
    configs = dict(actors.BUILTIN_PROVIDERS)
    configured: set[str] = set()
    bad = []
    for name, table in (settings.providers if settings else {}).items():
        try:
            configs[name] = actors.provider_config_from_table(name, table)
        except ValueError as exc:
            where = settings.config_path if settings else None
            bad.append(_fail(f"provider:{name}", f"[providers.{name}] in {where}: {exc}",
                             "fix the table; the orchestrator refuses to start with it"))
        else:
            configured.add(name)
    return configs, configured, bad


def check_providers(settings: Settings | None, host: Host) -> list[Check]:
    configs, configured, checks = provider_configs(settings)
    offered = 0
    for config in configs.values():
        if not config.enabled:
            continue
        found_checks, is_offered = check_provider(config, host, config.name in configured,
                                                  settings)
        checks += found_checks
        offered += is_offered
    if not offered:
        checks.append(_fail("providers", "no provider is offered: the relay can spawn no agent "
                            "on this host", "install claude, codex or gemini where the service "
                            "finds it, or enable [providers.command] in the config file"))
    return checks


def check_provider(config: actors.ProviderConfig, host: Host, configured: bool,
                   settings: Settings | None) -> tuple[list[Check], bool]:
    name, program = config.name, config.executable
    check = f"provider:{name}"
    if program is None:  # `command`: the spawn's providerArgs name the program
        return [_pass(check, f"{name} is enabled: it runs each spawn's providerArgs")], True
    found = _find(program, host.env)
    if found is None:
        here = _find(program, os.environ)
        if here is not None and host.service is not None:
            what = (f"{name} is at {here} but not on the service's PATH ({host.path}): the "
                    "relay is not offered it")
            fix = _path_fix(host, name, here, settings)
            return [(_fail if configured else _warn)(check, what, fix)], False
        if configured:
            return [_fail(check, f"{name} ([providers.{name}]) is not installed: no {program} "
                          f"on the PATH ({host.path})",
                          f"install {name}, or set enabled = false in [providers.{name}]")], False
        return [_pass(check, f"{name} is not installed (optional): the relay is not "
                      "offered it")], False
    if config.kind not in CLI_KINDS:
        return [_pass(check, f"{name}: {found}")], True
    ran, text = _version(found, host.env)
    if not ran:
        return [_fail(check, f"{name} at {found} does not run with the service's PATH: {text}",
                      f"reinstall {name}, or give the service a PATH with what it needs "
                      "(node, for the CLIs installed with npm)")], False
    return [_pass(check, f"{name}: {text} ({found})"), check_login(config.kind, name, host)], True


def _path_fix(host: Host, name: str, here: str, settings: Settings | None) -> str:
    folder = os.path.dirname(here)
    if host.service is not None and host.service.kind == "systemd":
        return ("add its folder to the service's PATH: `systemctl --user edit "
                "relay-orchestrator`, then under [Service]: "
                f"Environment=PATH={folder}:{host.path}; then restart the service")
    config = settings.config_path if settings and settings.config_path else "the config file"
    return f"set command = \"{here}\" in [providers.{name}] of {config}; then restart the service"


def check_login(kind: str, name: str, host: Host) -> Check:
    evidence = actors.login_evidence(kind, host.env)
    if evidence is not None:
        return _pass(f"login:{name}", f"{name} looks logged in ({evidence})")
    files, variables = actors.login_places(kind, host.env)
    looked = [*files, *(f"${variable}" for variable in variables)]
    return _warn(f"login:{name}", f"{name} does not look logged in for the service: none of "
                 f"{', '.join(looked)}",
                 f"run `{name}` once as {host.user} and log in"
                 + (f", or have each spawn's env carry {variables[0]}" if variables else ""))


# -- the token, the state dir, the relay ---------------------------------------------


@attrs.frozen(kw_only=True)
class Token:
    value: str | None
    where: str  # where it came from, for a fix


def check_token(settings: Settings) -> tuple[Check, Token]:
    if settings.token_file is not None:
        return _check_token_file(settings.token_file)
    if settings.token_env is not None:
        return (_pass("token", f"the relay token comes from {TOKEN_ENV} in the environment"),
                Token(value=settings.token_env, where=TOKEN_ENV))
    path = recorded_token_file(settings)
    if path is not None:
        return _check_token_file(path)
    return (_fail("token", "no relay token: no --token-file, no token_file in the config, no "
                  f"{TOKEN_ENV}, and none stored by install",
                  "write the token into a file only you can read (install -m 600 /dev/null "
                  "FILE), then pass --token-file FILE (install stores it for the service)"),
            Token(value=None, where="a token file"))


def _check_token_file(path: Path) -> tuple[Check, Token]:
    none = Token(value=None, where=str(path))
    try:
        st = path.stat()
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return _fail("token", f"token file {path} does not exist",
                     f"install -m 600 /dev/null {path}, then write the relay's token into it"
                     ), none
    except OSError as exc:
        return _fail("token", f"token file {path} cannot be read: {exc.strerror}",
                     f"make it yours and readable by you: chmod 600 {path}"), none
    except UnicodeDecodeError:
        return _fail("token", f"token file {path} cannot be read: not UTF-8 text",
                     f"write the relay's token into {path}"), none
    where = str(path)
    if path.name == "token.env":  # systemd's EnvironmentFile=, as install writes it
        value = supervisors.parse_env_file(text).get(TOKEN_ENV, "").strip()
        where = f"{path} (a line {TOKEN_ENV}=<token>)"
    else:
        value = text.strip()
    token = Token(value=value or None, where=where)
    mode = stat.S_IMODE(st.st_mode)
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return _fail("token", f"token file {path} is open to group or others (mode "
                     f"{mode:04o}): anyone on this host can read the token",
                     f"chmod 600 {path}"), token
    if not value:
        return _fail("token", f"token file {path} holds no token",
                     f"write the relay's token into {where}"), token
    try:
        check_header_token(value, f"token file {path}")
    except ConfigError as exc:
        return _fail("token", str(exc), f"write the token the relay issued into {where}"), none
    if st.st_uid != os.getuid():
        return _warn("token", f"token file {path} belongs to uid {st.st_uid}, not to you",
                     f"chown {os.getuid()} {path}"), token
    return _pass("token", f"token file {path} (mode {mode:04o})"), token


def _probe_write(directory: Path) -> str | None:
    """None when a file can be made in ``directory`` (it is removed at once); else why not."""
    try:
        fd, name = tempfile.mkstemp(prefix=".relay-doctor-", dir=directory)
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    os.unlink(name)
    return None


def check_state_dir(settings: Settings, user: str) -> Check:
    state = settings.state_dir
    fix = (f"make it {user}'s and writable (chown -R {user} {state}; chmod u+rwx {state}), "
           "or choose another --state-dir")
    try:
        there = state.exists()
    except OSError as exc:  # a folder above it that may not be searched
        return _fail("state-dir", f"state dir {state} cannot be reached: {exc.strerror}",
                     f"let {user} through the folders above it, or choose another --state-dir")
    if there:
        if not state.is_dir():
            return _fail("state-dir", f"state dir {state} is not a directory",
                         "remove it, or choose another --state-dir")
        error = _probe_write(state)
        if error:
            return _fail("state-dir", f"state dir {state} is not writable: {error}", fix)
        return _pass("state-dir", f"state dir {state} is writable")
    parent = state.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    error = "not a directory" if not parent.is_dir() else _probe_write(parent)
    if error:
        return _fail("state-dir", f"state dir {state} cannot be created: {parent}: {error}",
                     f"create it for {user} (mkdir -p {state}), or choose another --state-dir")
    return _pass("state-dir", f"state dir {state} will be created (in {parent}, writable)")


def check_relay(settings: Settings, token: Token) -> Check:
    import httpx

    url = settings.relay_url
    if not url:
        return _fail("relay", "no relay URL: the orchestrator has nothing to connect to",
                     "give --relay-url (install records it for the service), or set "
                     "RELAY_ORCHESTRATOR_RELAY_URL or relay_url in the config file")
    try:
        client = relay_client(settings, token.value)
    except ConfigError as exc:  # the CA file, the URL or the token as httpx takes them
        return _fail("relay", str(exc), "fix the option, variable or file it names")
    try:
        with client:
            response = client.get("/api/orchestrators")
    except httpx.HTTPError as exc:
        reason = str(exc) or type(exc).__name__
        if "CERTIFICATE" in reason.upper():
            return _fail("relay", f"relay {url}: its certificate is not trusted: {reason}",
                         "give the relay's CA certificates with --ca-file")
        return _fail("relay", f"relay {url} is unreachable: {reason}",
                     "start the relay, or fix the URL (--relay-url; install records it)")
    if response.status_code in (401, 403):
        what = (f"relay {url} refused the token ({response.status_code})" if token.value
                else f"relay {url} wants a token ({response.status_code}) and none was sent")
        return _fail("relay", what, f"put the token the relay gave you in {token.where}")
    if response.status_code >= 400:
        return _fail("relay", f"relay {url} answered {response.status_code} to "
                     f"GET /api/orchestrators: {response.text.strip()[:200]}",
                     "check that the URL is the relay's (PROTOCOL.md section 6)")
    try:
        response.json()
    except ValueError:  # a web server, not a relay: it answers anything with a page
        return _fail("relay", f"{url} answered GET /api/orchestrators with something other "
                     f"than JSON ({response.headers.get('content-type') or 'no content type'})",
                     "check that the URL is the relay's (PROTOCOL.md section 6)")
    return _pass("relay", f"relay {url} answers and accepts the token")


# -- the command ----------------------------------------------------------------------


def user_name() -> str:
    """This user's name; a uid with no entry in the user database (a container
    run with ``--user 1234``) goes by ``$USER``, else by its number."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return os.environ.get("USER") or str(os.getuid())


def run_checks(args: argparse.Namespace) -> list[Check]:
    user = user_name()
    home = Path.home()
    checks = [check_python()]
    settings: Settings | None = None
    try:
        settings = settings_with_recorded(args, check_files=False)
    except ConfigError as exc:
        checks.append(_fail("settings", str(exc), "fix the option, variable or file it names"))
    else:
        recorded = config_dir() / INSTALLED_ENV
        parts = [f"config file {settings.config_path}" if settings.config_path
                 else "no config file"]
        if recorded_env():
            parts.append(f"what install recorded in {recorded}")
        checks.append(_pass("settings", "settings read: " + ", ".join(parts)))
    host = host_of(user, home)
    checks += check_service(host)
    checks.append(check_tmux(host))
    checks += check_providers(settings, host)
    if settings is not None:
        token_check, token = check_token(settings)
        checks += [token_check, check_state_dir(settings, user), check_relay(settings, token)]
    return checks


def render(checks: list[Check], *, color: bool) -> str:
    colors = {Status.PASS: "32", Status.WARN: "33", Status.FAIL: "31"}
    lines = []
    for check in checks:
        label = check.status.value
        if color:
            label = f"\033[{colors[check.status]}m{label}\033[0m"
        lines.append(f"{label}  {check.what}" + (f"  — {check.fix}" if check.fix else ""))
    return "\n".join(lines)


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("doctor", help="check this host; say how to fix what is wrong")
    p.add_argument("--json", action="store_true", help="print the checks as one JSON object")
    add_setting_flags(p)
    p.set_defaults(func=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    checks = run_checks(args)
    failed = any(check.status is Status.FAIL for check in checks)
    if args.json:
        print(json.dumps({"ok": not failed, "checks": [c.to_json() for c in checks]}, indent=2))
    else:
        print(render(checks, color=use_color(sys.stdout)))
    return EXIT_FAIL if failed else EXIT_OK
