"""Security: where the token and secrets may go, TLS to the relay, no shell, confinement.

- the token file must be private (``run`` refuses otherwise, exit 2, the fix
  in the message);
- the token (and ``params.env`` secrets) never appear in any process's argv,
  in the orchestrator's log, in what it reports to the relay or the relay
  keeps, nor in the state directory outside 0600 files;
- the relay may be ``https://`` with a CA of its own (``--ca-file``);
- agents never inherit the orchestrator's token, unless spawn params give one;
- no shell anywhere: every process is started from an argv list;
- cwd and memory-reload paths stay within ``baseDir`` (or the agent's
  worktree) even through symlinks.
"""

from __future__ import annotations

import ast
import json
import secrets
import ssl
import stat
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trustme

from orchestrator._errors import ConfigError, RelayUnavailable
from orchestrator._settings import load_settings
from orchestrator.devrelay._relay import serve_dev_relay
from orchestrator.relay._client import RelayClient, make_http_client

from .conftest import FAKE_AGENT, TOKEN, cli_env, kill_agents, make_settings

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("orchestrator", "actors", "supervisors")
WAIT = 20


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], capture_output=True,
                          text=True, timeout=60, env=env or cli_env(), check=False)


async def settle(relay: Any, command: dict[str, Any]) -> dict[str, Any]:
    cid = command["id"]
    with trio.fail_after(WAIT):
        await relay.wait_for(lambda: relay.get_command(cid)["status"] in ("succeeded", "failed"))
    result: dict[str, Any] = relay.get_command(cid)
    return result


async def wait_line(path: Path, prefix: str) -> list[str]:
    """Bounded wait for a line starting with ``prefix`` in a fake agent's record."""
    file = trio.Path(path)
    with trio.fail_after(WAIT):
        while True:  # the agent writes a file: nothing to wait on but the file
            lines = (await file.read_text()).splitlines() if await file.exists() else []
            if any(line.startswith(prefix) for line in lines):
                return lines
            await trio.sleep(0.02)


def every_cmdline() -> list[bytes]:
    out = []
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            out.append(path.read_bytes())
        except OSError:
            pass
    return out


# -- the token file ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_a_token_file_others_can_read_is_refused_with_the_fix(tmp_path: Path, mode: int) -> None:
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    token.chmod(mode)
    config = tmp_path / "config.toml"
    config.write_text("")
    result = run_cli("run", "--relay-url", "http://127.0.0.1:9", "--token-file", str(token),
                     "--state-dir", str(tmp_path / "state"), "--base-dir", str(tmp_path),
                     "--supervisor", "none", "--config", str(config))
    assert result.returncode == 2, result.stderr
    assert f"chmod 600 {token}" in result.stderr
    assert "group or others" in result.stderr
    assert "t0ken" not in result.stderr + result.stdout
    assert not (tmp_path / "state").exists()  # refused before anything was written


def test_a_missing_ca_file_is_a_configuration_error(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("")
    with pytest.raises(ConfigError, match="--ca-file .*: no such file"):
        load_settings({"ca_file": str(tmp_path / "nope.pem"), "config": str(config)},
                      environ={})
    result = run_cli("run", "--relay-url", "https://127.0.0.1:9", "--ca-file",
                     str(tmp_path / "nope.pem"), "--config", str(config),
                     env=cli_env(RELAY_ORCHESTRATOR_TOKEN=TOKEN))
    assert result.returncode == 2 and "--ca-file" in result.stderr


# -- TLS with a CA of the relay's own ----------------------------------------------------------


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    where = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    paths = {"ca": where / "ca.pem", "cert": where / "cert.pem", "key": where / "key.pem"}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    cert.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(str(paths["cert"]), append=True)
    cert.private_key_pem.write_to_path(str(paths["key"]))
    return paths


async def test_an_https_relay_is_verified_with_the_configured_ca(
    tmp_path: Path, nursery: trio.Nursery, tls: dict[str, Path]
) -> None:
    from orchestrator.daemon._app import run_orchestrator

    relay = await nursery.start(partial(serve_dev_relay, token=TOKEN, certfile=tls["cert"],
                                        keyfile=tls["key"]))
    assert relay.url.startswith("https://127.0.0.1:")
    # Without the CA, the relay's certificate is not trusted: no request goes through.
    async with make_http_client(relay.url) as http:
        client = RelayClient(relay.url, lambda: TOKEN, http=http, request_timeout=5)
        with pytest.raises(RelayUnavailable) as refused:
            await client.get_command("cmd_x")
    causes = []
    cause: BaseException | None = refused.value
    while cause is not None:
        causes.append(cause)
        cause = cause.__cause__ or cause.__context__
    assert any(isinstance(c, ssl.SSLCertVerificationError) for c in causes), causes
    # With --ca-file, the orchestrator registers, takes a command and settles it.
    settings = make_settings(tmp_path, relay.url, ca_file=str(tls["ca"]))
    assert settings.ca_file == tls["ca"]
    orch = await nursery.start(partial(run_orchestrator, settings))
    assert relay.orchestrator(orch.id)["status"] == "online"
    command = await settle(relay, relay.create_command(orch.agent_id, "agent.stop",
                                                       {"agentId": "ag_nobody"}))
    assert command["error"] == "no managed agent matches agentId=ag_nobody"
    orch.stop()


# -- where the token and secrets may (not) go ----------------------------------------------


class OrchestratorUnderTest:
    """``relay-orchestrator run --token-file … --ca-file …`` against an https relay."""

    def __init__(self, tmp_path: Path, relay_url: str, token_file: Path, ca: Path) -> None:
        self.base = (tmp_path / "base").resolve()
        self.base.mkdir()
        self.state = tmp_path / "state"
        self.log = tmp_path / "orchestrator.log"
        config = tmp_path / "config.toml"
        config.write_text('[providers.command]\nenabled = true\nsession = "plain"\n'
                          "compact_settle_seconds = 0.05\n")
        self.argv = [sys.executable, "-m", "orchestrator", "run", "--relay-url", relay_url,
                     "--token-file", str(token_file), "--ca-file", str(ca),
                     "--config", str(config), "--state-dir", str(self.state),
                     "--base-dir", str(self.base), "--supervisor", "none",
                     "--id", "orch-sec", "--heartbeat-interval", "0.5",
                     "--log-format", "json", "--verbose"]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv, env=cli_env(), stdout=log, stderr=log)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                return self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()


async def test_the_token_and_secrets_go_nowhere_else(
    tmp_path: Path, nursery: trio.Nursery, tls: dict[str, Path]
) -> None:
    token = f"relay-token-{secrets.token_hex(12)}"
    agent_secret = f"agent-secret-{secrets.token_hex(12)}"
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    state_file = tmp_path / "relay-state.json"
    relay = await nursery.start(partial(serve_dev_relay, token=token, state_file=state_file,
                                        certfile=tls["cert"], keyfile=tls["key"]))
    orch = OrchestratorUnderTest(tmp_path, relay.url, token_file, tls["ca"])
    orch.start()
    agents: list[dict[str, Any]] = []
    try:
        with trio.fail_after(WAIT):
            await relay.wait_for(lambda: relay.orchestrator("orch-sec") is not None)
        target = relay.orchestrator("orch-sec")["agentId"]
        records = {name: tmp_path / f"{name}.record" for name in ("plain", "given")}
        watch = ["--env", "RELAY_ORCHESTRATOR_TOKEN", "--env", "AGENT_RELAY_TOKEN"]
        # One agent with a secret of its own, one whose params give it a token.
        for name, env in (("plain", {"AGENT_RELAY_TOKEN": agent_secret}),
                          ("given", {"RELAY_ORCHESTRATOR_TOKEN": "given-by-params"})):
            params = {"provider": "command", "agentId": f"ag_{name}", "cwd": str(orch.base),
                      "providerArgs": [sys.executable, FAKE_AGENT, "--term", "exit",
                                       "--record", str(records[name]), *watch],
                      "env": env, "tags": ["memory-reload:NOTES.md"]}
            command = await settle(relay, relay.create_command(target, "agent.spawn", params))
            assert command["status"] == "succeeded", command
        (orch.base / "NOTES.md").write_text("notes\n")
        plain = await wait_line(records["plain"], "started ")
        given = await wait_line(records["given"], "started ")
        # Agents never inherit the orchestrator's token; params may give one.
        assert "env RELAY_ORCHESTRATOR_TOKEN unset" in plain
        assert f"env AGENT_RELAY_TOKEN={agent_secret}" in plain
        assert "env RELAY_ORCHESTRATOR_TOKEN=given-by-params" in given
        assert "env AGENT_RELAY_TOKEN unset" in given
        # More traffic: compact, restart (with the secret again), a refused spawn.
        compact = await settle(relay, relay.create_command(
            target, "agent.compact", {"agentId": "ag_plain",
                                      "memory": {"alwaysReload": ["NOTES.md"]}}))
        assert compact["status"] == "succeeded", compact
        refused = await settle(relay, relay.create_command(target, "agent.spawn", {
            "provider": "command", "agentId": "ag_bad", "env": {"A=B": agent_secret}}))
        assert refused["status"] == "failed"

        # argv: no process shows the token or the secret.
        for cmdline in every_cmdline():
            assert token.encode() not in cmdline
            assert agent_secret.encode() not in cmdline
        agents = relay.orchestrator("orch-sec")["agents"]
        assert {a["agentId"] for a in agents} >= {"ag_plain", "ag_given"}
        # Reports and the relay's own records: neither token nor secret in
        # what the orchestrator sent (registration, reports, results, errors).
        sent = json.dumps([relay.orchestrator("orch-sec"),
                           [(c["result"], c["error"]) for c in relay.commands()]])
        assert token not in sent and agent_secret not in sent
    finally:
        code = orch.stop()
        kill_agents(agents or (relay.orchestrator("orch-sec") or {}).get("agents", []))
    assert code == 0
    # The orchestrator's log (JSON, --verbose): neither.
    log = orch.log.read_text()
    assert "registered" in log or "orchestrator orch-sec" in log
    assert token not in log and agent_secret not in log
    # The relay's state file (written at its start, and on every change): no token.
    assert token not in state_file.read_text()
    # The state dir: whatever holds a secret is 0600; the journal's files are 0600.
    holders = []
    for path in orch.state.rglob("*"):
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        if token.encode() in data or agent_secret.encode() in data:
            holders.append(path)
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert token not in " ".join(p.read_text(errors="replace") for p in holders)
    journal = orch.state / "journal.sqlite3"
    # The agent's SpawnParams, env included, are kept for re-adoption: in the journal.
    assert {journal, Path(f"{journal}-wal")} & set(holders), holders
    for suffix in ("", "-wal", "-shm"):
        path = Path(f"{journal}{suffix}")
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(orch.state.stat().st_mode) & 0o077 == 0


# -- no shell ------------------------------------------------------------------------------

# Calls that start a process: ``<module>.<name>`` (or the bare name, when imported).
_PROCESS_CALLS = {
    "subprocess": {"run", "Popen", "call", "check_call", "check_output"},
    "trio": {"run_process"},
    "lowlevel": {"open_process"},
    "asyncio": {"create_subprocess_exec"},
    "os": {"execv", "execvp", "execvpe", "execve", "spawnv", "spawnvp", "posix_spawn",
           "posix_spawnp"},
}
_BARE_PROCESS_CALLS = {"Popen", "check_call", "check_output", "run_process", "open_process",
                       "create_subprocess_exec"}


def _starts_a_process(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id if func.id in _BARE_PROCESS_CALLS else None
    if isinstance(func, ast.Attribute):
        owner = func.value
        module = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", "")
        if func.attr in _PROCESS_CALLS.get(module, ()):
            return f"{module}.{func.attr}"
    return None


def _sources() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def test_no_shell_anywhere_in_the_packages() -> None:
    offences = []
    for path in _sources():
        text = path.read_text()
        for needle in ("shell=True", "os.system(", "os.popen(", "create_subprocess_shell",
                       "getoutput(", "getstatusoutput("):
            if needle in text:
                offences.append(f"{path.relative_to(ROOT)}: {needle}")
    assert not offences


def test_every_process_is_started_from_an_argv_list() -> None:
    """No call that starts a process gets a string for its command, nor a shell."""
    offences, calls = [], 0
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            name = _starts_a_process(node.func)
            if name is None:
                continue
            calls += 1
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            if node.args and isinstance(node.args[0], ast.Constant | ast.JoinedStr) and (
                    isinstance(getattr(node.args[0], "value", None), str)
                    or isinstance(node.args[0], ast.JoinedStr)):
                offences.append(f"{where}: {name}() with a string command")
            for keyword in node.keywords:
                if keyword.arg == "shell":
                    offences.append(f"{where}: {name}(shell=…)")
    assert not offences
    assert calls >= 5  # the walk did find the places that start processes


# -- confinement through symlinks, through the relay -------------------------------------------


async def test_cwd_and_memory_paths_stay_within_base_dir_through_symlinks(
    relay: Any, start_orchestrator: Any, tmp_path: Path
) -> None:
    base = (tmp_path / "base").resolve()
    base.mkdir()
    outside = (tmp_path / "outside").resolve()
    outside.mkdir()
    (outside / "secret.md").write_text("outside\n")
    (base / "NOTES.md").write_text("notes\n")
    (base / "to-outside").symlink_to(outside)
    (base / "secret-link.md").symlink_to(outside / "secret.md")
    (base / "to-inside").symlink_to(base)
    orch = await start_orchestrator(
        providers={"command": {"enabled": True, "session": "plain",
                               "compact_settle_seconds": 0.01}})
    argv = [sys.executable, FAKE_AGENT, "--term", "exit"]
    escape = f"cwd must be within orchestrator base directory: {base}"
    for cwd in ("to-outside", str(base / "to-outside"), "to-inside/../outside",
                str(base / "to-outside" / ".."), str(outside)):
        command = await settle(relay, relay.create_command(orch.agent_id, "agent.spawn", {
            "provider": "command", "agentId": "ag_escape", "cwd": cwd, "providerArgs": argv}))
        assert (command["status"], command["error"]) == ("failed", escape), cwd
    assert orch.fleet.agents() == []
    # A symlink that stays inside is fine.
    command = await settle(relay, relay.create_command(orch.agent_id, "agent.spawn", {
        "provider": "command", "agentId": "ag_in", "cwd": "to-inside", "providerArgs": argv}))
    assert command["status"] == "succeeded", command
    refusal = ("invalid params.memory.alwaysReload[0]: must be within orchestrator "
               f"base directory: {base}")
    for path in ("secret-link.md", "to-outside/secret.md", str(outside / "secret.md"),
                 "../outside/secret.md", "to-inside/to-outside/secret.md"):
        command = await settle(relay, relay.create_command(orch.agent_id, "agent.compact", {
            "agentId": "ag_in", "memory": {"alwaysReload": [path, "NOTES.md"]}}))
        assert (command["status"], command["error"]) == ("failed", refusal), path
    command = await settle(relay, relay.create_command(orch.agent_id, "agent.compact", {
        "agentId": "ag_in", "memory": {"alwaysReload": ["NOTES.md", "to-inside/NOTES.md"]}}))
    assert command["status"] == "succeeded", command


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                   env={**cli_env(), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"})


async def test_a_worktree_agent_reloads_only_within_its_worktree_or_base_dir(
    relay: Any, start_orchestrator: Any, tmp_path: Path
) -> None:
    base = (tmp_path / "base").resolve()
    repo = base / "repo"
    repo.mkdir(parents=True)
    outside = (tmp_path / "outside").resolve()
    outside.mkdir()
    (outside / "secret.md").write_text("outside\n")
    (repo / "NOTES.md").write_text("notes\n")
    (repo / "leak.md").symlink_to(outside / "secret.md")  # committed: in every worktree
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "init")
    orch = await start_orchestrator(
        providers={"command": {"enabled": True, "session": "plain",
                               "compact_settle_seconds": 0.01}})
    command = await settle(relay, relay.create_command(orch.agent_id, "agent.spawn", {
        "provider": "command", "agentId": "ag_wt", "cwd": str(repo),
        "workspaceMode": "isolated",
        "providerArgs": [sys.executable, FAKE_AGENT, "--term", "exit"]}))
    assert command["status"] == "succeeded", command
    worktree = command["result"]["workspace"]["worktreePath"]
    assert worktree and not worktree.startswith(str(repo))
    ok = await settle(relay, relay.create_command(orch.agent_id, "agent.compact", {
        "agentId": "ag_wt", "memory": {"alwaysReload": ["NOTES.md"]}}))
    assert ok["status"] == "succeeded", ok
    for path in ("leak.md", "../../../../outside/secret.md", str(outside / "secret.md")):
        command = await settle(relay, relay.create_command(orch.agent_id, "agent.compact", {
            "agentId": "ag_wt", "memory": {"alwaysReload": [path]}}))
        assert command["status"] == "failed", (path, command)
        assert command["error"].startswith(
            "invalid params.memory.alwaysReload[0]: must be within orchestrator base directory"
        ), command


def test_httpx_is_not_given_a_path_for_verify(tls: dict[str, Path]) -> None:
    """A CA file becomes an SSLContext (httpx deprecates ``verify=<path>``)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        client = make_http_client("https://127.0.0.1:1", verify=str(tls["ca"]))
    assert isinstance(client, httpx.AsyncClient)
    trio.run(client.aclose)
