"""``doctor`` on hosts with one problem each, against the real dev relay.

Each host is a temporary HOME with its own PATH, config, token file and
state dir; the agent CLIs are the pinned ones (tests/clis), tmux the real
one (an old tmux is a script on PATH that says ``tmux 3.1``), a service is
a unit file as ``install`` renders it, and a state dir nobody may write is
a read-only mount (as root, who may write anywhere else) or mode 0500.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

import supervisors
from supervisors._install import render_unit

from ..conftest import TOKEN, cli_env
from .installed import record_install

# Tests that run the pinned agent CLIs (node starts each): real-world, slow.
REAL_CLIS = pytest.mark.slow

CLIS_BIN = Path(__file__).parents[1] / "clis" / "node_modules" / ".bin"
PROGRAMS = ("claude", "codex", "gemini")
WAIT = 120.0
# Whatever logs a CLI in from the environment, kept out of the hosts' environment.
LOGIN_VARIABLES = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN",
                   "CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX", "CLAUDE_CODE_USE_FOUNDRY",
                   "CLAUDE_CONFIG_DIR", "OPENAI_API_KEY", "CODEX_API_KEY", "CODEX_HOME",
                   "GEMINI_API_KEY", "GOOGLE_GEMINI_BASE_URL", "GOOGLE_GENAI_USE_GCA",
                   "GOOGLE_GENAI_USE_VERTEXAI", "GEMINI_CLI_HOME", "NO_COLOR")


@attrs.define
class Line:
    status: str
    what: str
    fix: str


@attrs.define
class Report:
    code: int
    lines: list[Line]
    stdout: str
    stderr: str

    def line(self, needle: str) -> Line:
        found = [line for line in self.lines if needle in line.what]
        assert len(found) == 1, f"no single line with {needle!r}:\n{self.stdout}{self.stderr}"
        return found[0]

    def statuses(self) -> set[str]:
        return {line.status for line in self.lines}


@attrs.define
class Machine:
    """A host: its HOME, a folder of programs on its PATH, config, token, state dir."""

    root: Path
    relay_url: str
    path: str = ""
    env: dict[str, str] = attrs.field(factory=dict)
    flags: dict[str, str | None] = attrs.field(factory=dict)

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def token_file(self) -> Path:
        return self.root / "token"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    def link_cli(self, name: str, folder: Path | None = None) -> Path:
        assert (CLIS_BIN / name).exists(), f"pinned {name} missing: run tests/clis/install"
        link = (folder or self.bin) / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(CLIS_BIN / name)
        return link

    def install_unit(self, *, path: str, program: str = sys.executable) -> Path:
        """The user unit ``install`` renders, with the PATH the service gets."""
        unit = self.home / ".config" / "systemd" / "user" / supervisors.SYSTEMD_UNIT
        unit.parent.mkdir(parents=True, exist_ok=True)
        unit.write_text(render_unit(exec_argv=[program, "-m", "orchestrator", "run"],
                                    environment={"PATH": path}, environment_file=None))
        return unit

    def argv(self, *extra: str) -> list[str]:
        argv = [sys.executable, "-m", "orchestrator", "doctor"]
        for flag, value in self.flags.items():
            if value is not None:
                argv += [flag, value]
        return [*argv, *extra]

    async def doctor(self, *extra: str, wrap: list[str] | None = None) -> Report:
        env = {k: v for k, v in cli_env(**self.env).items() if k not in LOGIN_VARIABLES}
        env.update(HOME=str(self.home), XDG_CONFIG_HOME=str(self.home / ".config"),
                   XDG_STATE_HOME=str(self.home / ".local" / "state"), PATH=self.path,
                   **self.env)
        argv = [*(wrap or []), *self.argv(*extra)]
        proc = await trio.to_thread.run_sync(lambda: subprocess.run(
            argv, capture_output=True, text=True, timeout=WAIT, env=env, cwd=self.root))
        lines = []
        for text in proc.stdout.splitlines():
            status, _, rest = text.partition("  ")
            what, _, fix = rest.partition("  — ")
            lines.append(Line(status, what, fix))
        return Report(proc.returncode, lines, proc.stdout, proc.stderr)


@pytest.fixture
def machine(tmp_path: Path, relay: Any) -> Machine:
    m = Machine(root=tmp_path, relay_url=relay.url)
    for folder in (m.home, m.bin, m.state):
        folder.mkdir()
    m.config.write_text("[providers.command]\nenabled = true\n")
    fd = os.open(m.token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, f"{TOKEN}\n".encode())
    os.close(fd)
    # The host's own node (the npm-installed CLIs need it) and tmux, and nothing else.
    found = [shutil.which(program) for program in ("node", "tmux")]
    folders = dict.fromkeys([*(os.path.dirname(f) for f in found if f), "/usr/bin", "/bin"])
    m.path = ":".join([str(m.bin), *folders])
    m.flags = {"--relay-url": relay.url, "--token-file": str(m.token_file),
               "--state-dir": str(m.state), "--config": str(m.config)}
    return m


def user() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


@REAL_CLIS
async def test_a_healthy_host_passes_every_check(machine: Machine) -> None:
    for name in PROGRAMS:
        machine.link_cli(name)
    (machine.home / ".claude").mkdir()
    (machine.home / ".claude" / ".credentials.json").write_text("{}")
    (machine.home / ".codex").mkdir()
    (machine.home / ".codex" / "auth.json").write_text("{}")
    machine.env["GEMINI_API_KEY"] = "a-key"
    report = await machine.doctor()
    assert report.code == 0, report.stdout + report.stderr
    assert report.statuses() == {"PASS"}, report.stdout
    assert report.line("tmux 3.").what.endswith(f"({shutil.which('tmux')})")
    assert report.line("claude: 2.").what.endswith(f"({machine.bin}/claude)")
    assert report.line("claude looks logged in").what.endswith(
        f"({machine.home}/.claude/.credentials.json)")
    assert report.line("codex looks logged in").what.endswith(f"({machine.home}/.codex/auth.json)")
    assert report.line("gemini looks logged in").what.endswith("(GEMINI_API_KEY)")
    assert report.line("token file").what == f"token file {machine.token_file} (mode 0600)"
    assert report.line("state dir").what == f"state dir {machine.state} is writable"
    assert report.line("relay http").what == (
        f"relay {machine.relay_url} answers and accepts the token")
    out = await machine.doctor("--json")
    data = json.loads(out.stdout)
    assert out.code == 0 and data["ok"] is True
    assert {c["status"] for c in data["checks"]} == {"PASS"}
    assert {"python", "settings", "service", "tmux", "provider:claude", "login:claude",
            "provider:codex", "login:codex", "provider:gemini", "login:gemini",
            "provider:command", "token", "state-dir", "relay"} == {c["check"] for c in
                                                                   data["checks"]}


@REAL_CLIS
async def test_a_cli_not_logged_in_is_a_warning(machine: Machine) -> None:
    machine.link_cli("claude")
    report = await machine.doctor()
    assert report.code == 0, report.stdout  # a WARN alone: the orchestrator still works
    line = report.line("claude does not look logged in")
    assert line.status == "WARN"
    assert f"{machine.home}/.claude/.credentials.json" in line.what
    assert "$ANTHROPIC_API_KEY" in line.what
    assert line.fix == (f"run `claude` once as {user()} and log in, or have each spawn's env "
                        "carry ANTHROPIC_API_KEY")


@REAL_CLIS
async def test_a_cli_whose_folder_nobody_may_enter_is_not_logged_in_and_the_rest_is_checked(
    machine: Machine,
) -> None:
    machine.link_cli("claude")
    locked = machine.home / ".claude"
    locked.mkdir(mode=0o000)
    wrap = (["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
            if os.geteuid() == 0 else [])
    try:
        report = await machine.doctor(wrap=wrap)
    finally:
        locked.chmod(0o700)
    assert "Traceback" not in report.stderr, report.stderr
    assert report.line("claude does not look logged in").status == "WARN"
    assert report.line("relay http").status == "PASS"  # the checks after it still ran


async def test_a_token_file_others_can_read(machine: Machine) -> None:
    machine.token_file.chmod(0o644)
    report = await machine.doctor()
    assert report.code == 1
    line = report.line("token file")
    assert (line.status, line.fix) == ("FAIL", f"chmod 600 {machine.token_file}")
    assert line.what == (f"token file {machine.token_file} is open to group or others "
                         "(mode 0644): anyone on this host can read the token")
    assert report.line("relay http").status == "PASS"  # the token itself is right


async def test_a_token_a_header_cannot_carry(machine: Machine) -> None:
    machine.token_file.write_text("t\u00f6ken\n", encoding="utf-8")
    report = await machine.doctor()
    assert report.code == 1 and "Traceback" not in report.stderr, report.stderr
    line = report.line("token file")
    assert (line.status, line.what) == (
        "FAIL", f"token file {machine.token_file}: the token holds 'ö', which cannot go in an "
        "HTTP header (a token is visible ASCII: letters, digits, -._~+/=)")
    assert line.fix == f"write the token the relay issued into {machine.token_file}"


async def test_a_token_the_relay_refuses(machine: Machine) -> None:
    machine.token_file.write_text("not-the-token\n")
    report = await machine.doctor()
    assert report.code == 1
    line = report.line("relay http")
    assert line.status == "FAIL"
    assert line.what == f"relay {machine.relay_url} refused the token (401)"
    assert line.fix == f"put the token the relay gave you in {machine.token_file}"
    assert report.line("token file").status == "PASS"


async def test_a_missing_token_file(machine: Machine) -> None:
    machine.token_file.unlink()
    report = await machine.doctor()
    assert report.code == 1
    line = report.line("token file")
    assert (line.status, line.what) == ("FAIL", f"token file {machine.token_file} does not exist")
    assert line.fix.startswith(f"install -m 600 /dev/null {machine.token_file}")


async def test_a_token_file_that_is_not_text(machine: Machine) -> None:
    machine.token_file.write_bytes(b"\xff\xfe")
    report = await machine.doctor()
    assert report.code == 1
    line = report.line("token file")
    assert (line.status, line.what, line.fix) == (
        "FAIL", f"token file {machine.token_file} cannot be read: not UTF-8 text",
        f"write the relay's token into {machine.token_file}")


async def test_a_url_that_is_a_web_page_and_not_a_relay(machine: Machine) -> None:
    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<html>welcome</html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        page = f"http://127.0.0.1:{server.server_address[1]}"
        machine.flags["--relay-url"] = page
        report = await machine.doctor()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=WAIT)
    assert report.code == 1
    line = report.line("/api/orchestrators")
    assert (line.status, line.what) == (
        "FAIL", f"{page} answered GET /api/orchestrators with something other than JSON "
                "(text/html)")
    assert line.fix == "check that the URL is the relay's (PROTOCOL.md section 6)"


async def test_a_relay_that_is_down(machine: Machine) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{s.getsockname()[1]}"
    machine.flags["--relay-url"] = down
    report = await machine.doctor()
    assert report.code == 1
    line = report.line("relay http")
    assert line.status == "FAIL" and line.what.startswith(f"relay {down} is unreachable: ")
    assert line.fix == "start the relay, or fix the URL (--relay-url; install records it)"


async def test_no_relay_url(machine: Machine) -> None:
    machine.flags["--relay-url"] = None
    report = await machine.doctor()
    assert report.code == 1
    line = report.line("relay URL")
    assert line.status == "FAIL" and line.fix.startswith("give --relay-url")


async def test_a_state_dir_nobody_may_write(machine: Machine) -> None:
    if os.geteuid() == 0:  # root writes through modes: a read-only mount of its own
        wrap = ["unshare", "--mount", "sh", "-c",
                'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"',
                "sh", str(machine.state)]
        reason = "Read-only file system"
    else:
        machine.state.chmod(0o500)
        wrap, reason = [], "Permission denied"
    report = await machine.doctor(wrap=wrap)
    assert report.code == 1, report.stdout + report.stderr
    line = report.line("state dir")
    assert (line.status, line.what) == (
        "FAIL", f"state dir {machine.state} is not writable: {reason}")
    assert line.fix.startswith(f"make it {user()}'s and writable")
    assert report.line("relay http").status == "PASS"


async def test_a_state_dir_behind_a_folder_nobody_may_enter(machine: Machine) -> None:
    """A folder above the state dir without x: a FAIL line, not a traceback. Root
    passes through modes: it runs without the capabilities that let it."""
    locked = machine.root / "locked"
    machine.flags["--state-dir"] = str(locked / "state")
    locked.mkdir(mode=0o000)
    wrap = (["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
            if os.geteuid() == 0 else [])
    try:
        report = await machine.doctor(wrap=wrap)
    finally:
        locked.chmod(0o700)
    assert report.code == 1, report.stdout + report.stderr
    line = report.line("state dir")
    assert (line.status, line.what) == (
        "FAIL", f"state dir {locked / 'state'} cannot be reached: Permission denied")
    assert line.fix == f"let {user()} through the folders above it, or choose another --state-dir"


async def test_a_state_dir_that_is_a_file(machine: Machine) -> None:
    machine.state.rmdir()
    machine.state.write_text("")
    report = await machine.doctor()
    assert report.code == 1
    assert report.line("state dir").what == f"state dir {machine.state} is not a directory"


async def test_a_tmux_too_old(machine: Machine) -> None:
    old = machine.bin / "tmux"
    old.write_text("#!/bin/sh\necho 'tmux 3.1'\n")
    old.chmod(0o755)
    report = await machine.doctor()
    assert report.code == 1
    line = report.line("tmux 3.1")
    assert line.status == "FAIL"
    assert line.what == f"tmux 3.1 ({old}) is too old: agents' sessions need tmux 3.2 or newer"
    assert line.fix.startswith("install tmux 3.2 or newer")


async def test_no_tmux(machine: Machine) -> None:
    machine.path = str(machine.bin)
    report = await machine.doctor()
    assert report.code == 0, report.stdout  # agents run as plain processes
    line = report.line("tmux is not on")
    assert line.status == "WARN" and "agents run as plain processes" in line.what


@REAL_CLIS
async def test_a_cli_on_the_shell_path_but_not_on_the_services(machine: Machine) -> None:
    """The unit's PATH, not the shell's: claude is found here, not by the service."""
    here = machine.link_cli("claude")
    service_path = f"{machine.root / 'service-bin'}:/usr/bin:/bin"
    unit = machine.install_unit(path=service_path)
    report = await machine.doctor()
    assert report.line("installed as a systemd user service").what.startswith(
        f"installed as a systemd user service ({unit})")
    assert report.line("the service's PATH:").what == (
        f"the service's PATH: {service_path} (set in {unit})")
    line = report.line("claude is at")
    assert line.status == "WARN"  # a built-in the config does not name
    assert line.what == (f"claude is at {here} but not on the service's PATH ({service_path}): "
                         "the relay is not offered it")
    assert line.fix.startswith("add its folder to the service's PATH: `systemctl --user edit "
                               "relay-orchestrator`, then under [Service]: "
                               f"Environment=PATH={machine.bin}:{service_path}")
    assert report.code == 0, report.stdout
    # Named in the config, the same is a failure.
    machine.config.write_text("[providers.command]\nenabled = true\n[providers.claude]\n"
                              'session = "tmux"\n')
    report = await machine.doctor()
    assert report.code == 1 and report.line("claude is at").status == "FAIL"
    linger = report.line("lingering is")
    if not loginctl_answers() and not Path("/var/lib/systemd/linger", user()).exists():
        assert linger.status == "WARN"
        assert linger.fix == f"loginctl enable-linger {user()} (as root if that is refused)"


def loginctl_answers() -> bool:
    try:
        return subprocess.run(["loginctl", "show-user", user(), "-p", "Linger"],
                              capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@REAL_CLIS
async def test_a_cli_that_does_not_run_with_the_services_path(machine: Machine) -> None:
    """codex is a node script: with the service's PATH lacking node, it cannot start."""
    service_bin = machine.root / "service-bin"
    codex = machine.link_cli("codex", service_bin)
    machine.install_unit(path=str(service_bin))
    report = await machine.doctor()
    assert report.code == 1
    line = report.line("codex at")
    assert line.status == "FAIL"
    assert line.what.startswith(f"codex at {codex} does not run with the service's PATH: ")
    assert "node" in line.what
    assert report.line("tmux is not on").status == "WARN"


async def test_a_service_whose_program_is_gone(machine: Machine) -> None:
    gone = str(machine.root / "old-venv" / "bin" / "python")
    unit = machine.install_unit(path="/usr/bin:/bin", program=gone)
    report = await machine.doctor()
    assert report.code == 1
    line = report.line("which is not there")
    assert line.status == "FAIL"
    assert line.what == f"the systemd user service runs {gone}, which is not there ({unit})"
    assert line.fix.startswith("run `relay-orchestrator install` again")


async def test_what_install_recorded_is_what_doctor_checks(machine: Machine) -> None:
    config_dir = record_install(machine.home, machine.relay_url, "systemd")
    machine.flags = {"--state-dir": str(machine.state), "--config": str(machine.config)}
    report = await machine.doctor()
    assert report.code == 0, report.stdout + report.stderr
    assert report.line("token file").what == f"token file {config_dir / 'token.env'} (mode 0600)"
    assert report.line("relay http").status == "PASS"
    assert f"what install recorded in {config_dir / 'installed.env'}" in report.line(
        "settings read").what


async def test_json_lists_every_check_with_its_fix(machine: Machine) -> None:
    machine.token_file.chmod(0o640)
    machine.state.rmdir()
    machine.state.write_text("")
    out = await machine.doctor("--json")
    assert out.code == 1
    data = json.loads(out.stdout)
    assert data["ok"] is False
    by_check = {c["check"]: c for c in data["checks"]}
    assert by_check["token"]["status"] == "FAIL"
    assert by_check["token"]["fix"] == f"chmod 600 {machine.token_file}"
    assert by_check["state-dir"]["status"] == "FAIL"
    assert by_check["relay"] == {"check": "relay", "status": "PASS", "fix": "",
                                 "what": f"relay {machine.relay_url} answers and accepts the "
                                         "token"}
    assert all(set(c) == {"check", "status", "what", "fix"} for c in data["checks"])


async def test_a_config_file_with_a_mistake(machine: Machine) -> None:
    machine.config.write_text("relay_urll = 'http://x'\n")
    report = await machine.doctor()
    assert report.code == 1
    line = report.line("unknown key")
    assert (line.status, line.what) == (
        "FAIL", f"config file {machine.config}: unknown key 'relay_urll'")
    assert line.fix == "fix the option, variable or file it names"
    assert report.line("tmux").status == "PASS"  # the checks that need no settings still run
    machine.config.write_text('[providers.command]\nenabled = true\n'
                              '[providers.claude]\nsession = "screen"\n')
    report = await machine.doctor()
    assert report.code == 1
    line = report.line("[providers.claude]")
    assert line.status == "FAIL"
    assert line.what == (f"[providers.claude] in {machine.config}: session: must be one of "
                         "tmux, plain, auto")


@REAL_CLIS
async def test_a_launchd_agent_gets_launchds_path_unless_its_plist_sets_one(
    machine: Machine,
) -> None:
    from supervisors._launchd import log_path, plist_path, render_plist

    here = machine.link_cli("claude")
    plist = plist_path(machine.home)
    plist.parent.mkdir(parents=True)
    plist.write_bytes(render_plist(
        label="relay-orchestrator", program_arguments=[sys.executable, "-m", "orchestrator", "run"],
        environment={}, log_file=log_path(machine.home)))
    report = await machine.doctor()
    assert report.line("installed as a launchd agent").status == "PASS"
    assert report.line("the service's PATH:").what == (
        f"the service's PATH: {supervisors.LAUNCHD_DEFAULT_PATH} (launchd's default)")
    line = report.line("claude is at")
    assert line.status == "WARN"
    assert line.fix == (f'set command = "{here}" in [providers.claude] of {machine.config}; '
                        "then restart the service")
