"""``ctl`` with what ``install`` recorded, and the ids it puts in URL paths.

After ``install`` (its files written for real, as ``install`` writes them:
``installed.env``, and the token in ``token.env`` for systemd or ``token``
for launchd), ``ctl`` needs no flag and no environment; a flag or the
environment still wins, and the stored token goes only to the relay it was
recorded with. An answer ``ctl`` cannot use, and a URL or token it cannot
send, are one sentence each.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trio

from ..conftest import TOKEN, cli_env
from .installed import record_install

WAIT = 60.0


def run_ctl(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", "ctl", *args], capture_output=True, text=True,
        timeout=WAIT,
        env=cli_env(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), **env))


class Recorder:
    """A relay stand-in on loopback that answers ``answer`` (404 unless a test
    says otherwise) and keeps each request's line and Authorization header
    (what went on the wire, byte for byte)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str | None]] = []
        self.answer: tuple[int, bytes, str] = (404, b'{"error": "not here"}', "application/json")
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def answer(self) -> None:
                recorder.requests.append((self.requestline, self.headers.get("Authorization")))
                status, body, content_type = recorder.answer
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    thread = threading.Thread(target=rec.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        rec.server.shutdown()
        rec.server.server_close()
        thread.join(timeout=WAIT)


@pytest.mark.parametrize("kind", ["systemd", "launchd"])
async def test_ctl_uses_the_relay_and_token_install_recorded(
    relay: Any, start_orchestrator: Any, tmp_path: Path, kind: str,
) -> None:
    orch = await start_orchestrator()
    home = tmp_path / "home"
    config_dir = record_install(home, relay.url, kind)
    stored = config_dir / ("token.env" if kind == "systemd" else "launchd.token")
    assert stored.stat().st_mode & 0o77 == 0
    out = await trio.to_thread.run_sync(lambda: run_ctl(home, "agents", "--json"))
    assert out.returncode == 0, out.stderr
    assert [o["id"] for o in json.loads(out.stdout)] == [orch.id]
    # The environment still wins over what was recorded: a wrong token is refused.
    out = await trio.to_thread.run_sync(
        lambda: run_ctl(home, "agents", RELAY_ORCHESTRATOR_TOKEN="not-the-token"))
    assert out.returncode == 1 and "relay answered 401" in out.stderr


def test_the_recorded_token_goes_only_to_the_recorded_relay(
    tmp_path: Path, recorder: Recorder,
) -> None:
    home = tmp_path / "home"
    record_install(home, recorder.url, "systemd")
    assert run_ctl(home, "agents").returncode == 1  # the recorder answers 404
    other = recorder.url.replace("127.0.0.1", "localhost")  # another relay, by its URL
    assert run_ctl(home, "agents", "--relay-url", other).returncode == 1
    assert recorder.requests == [("GET /api/orchestrators HTTP/1.1", f"Bearer {TOKEN}"),
                                 ("GET /api/orchestrators HTTP/1.1", None)]


def test_a_recorded_token_file_open_to_others_is_refused_with_the_fix(tmp_path: Path) -> None:
    home = tmp_path / "home"
    config_dir = record_install(home, "http://127.0.0.1:9", "systemd")
    (config_dir / "token.env").chmod(0o644)
    out = run_ctl(home, "agents")
    assert out.returncode == 2
    assert f"readable by group or others; fix with: chmod 600 {config_dir / 'token.env'}" \
        in out.stderr
    # A command that needs no token does not read it.
    logs = subprocess.run(
        [sys.executable, "-m", "orchestrator", "logs", "ag_none", "--state-dir",
         str(tmp_path / "state")], capture_output=True, text=True, timeout=WAIT,
        env=cli_env(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config")))
    assert logs.returncode == 1 and "no agent matches 'ag_none'" in logs.stderr


def test_ids_are_one_escaped_path_segment(tmp_path: Path, recorder: Recorder) -> None:
    home = tmp_path / "home"
    home.mkdir()
    odd = "ag/1?x=1#y z"
    for args in (["stop", odd], ["agents", odd], ["upgrade", odd, "--version", "1.2.3"],
                 ["spawn", odd, "--provider", "command"],
                 ["commands", "--target", "orch:a b&c", "--status", "pending"]):
        out = run_ctl(home, *args, "--relay-url", recorder.url, RELAY_ORCHESTRATOR_TOKEN=TOKEN)
        assert out.returncode == 1 and "relay answered 404" in out.stderr, out.stderr
    assert [line for line, _ in recorder.requests] == [
        "POST /api/agents/ag%2F1%3Fx%3D1%23y%20z/action HTTP/1.1",
        "GET /api/orchestrators/ag%2F1%3Fx%3D1%23y%20z HTTP/1.1",
        "POST /api/orchestrators/ag%2F1%3Fx%3D1%23y%20z/action HTTP/1.1",
        "POST /api/orchestrators/ag%2F1%3Fx%3D1%23y%20z/spawn HTTP/1.1",
        "GET /api/commands?target=orch%3Aa+b%26c&status=pending HTTP/1.1",
    ]


async def test_the_dev_relay_reads_an_odd_id_whole(relay: Any, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    out = await trio.to_thread.run_sync(lambda: run_ctl(
        home, "stop", "ag ?x=1#y", "--relay-url", relay.url, RELAY_ORCHESTRATOR_TOKEN=TOKEN))
    assert out.returncode == 1
    assert "relay answered 404: agent not found: ag ?x=1#y" in out.stderr


@pytest.mark.parametrize(("answer", "args", "said"), [
    ((500, b"<html>boom</html>", "text/html"), ["agents"], "relay answered 500: <html>boom</html>"),
    ((500, b'["x"]', "application/json"), ["stop", "ag_1"], 'relay answered 500: ["x"]'),
    ((200, b"<html>a web page</html>", "text/html"), ["agents"],
     "relay answered 200 to GET /api/orchestrators with a body that is not JSON: is "),
    ((200, b"[1, 2]", "application/json"), ["commands"],
     "relay answered something other than a list of commands: [1, 2]"),
    ((200, b'{"orchestrators": ["x"]}', "application/json"), ["agents"],
     "relay answered something other than a list of orchestrators: "),
    ((200, b"[]", "application/json"), ["agents", "orch-1"],
     "relay answered something other than a list of orchestrators: "),
])
def test_an_answer_that_is_not_the_protocols_is_one_sentence(
    tmp_path: Path, recorder: Recorder, answer: tuple[int, bytes, str], args: list[str],
    said: str,
) -> None:
    """A relay in trouble, or a URL that is not a relay's: no traceback."""
    recorder.answer = answer
    out = run_ctl(tmp_path, *args, "--relay-url", recorder.url, RELAY_ORCHESTRATOR_TOKEN=TOKEN)
    assert (out.returncode, out.stdout) == (1, ""), out.stderr
    assert out.stderr.startswith(f"relay-orchestrator ctl: {said}"), out.stderr
    assert out.stderr.count("\n") == 1


async def test_a_token_env_edited_by_hand_with_a_comment_still_serves(
    relay: Any, start_orchestrator: Any, tmp_path: Path,
) -> None:
    """token.env is an EnvironmentFile: a person may add a comment to it."""
    orch = await start_orchestrator()
    home = tmp_path / "home"
    stored = record_install(home, relay.url, "systemd") / "token.env"
    stored.write_text(f"# from the relay's settings page\n{stored.read_text()}")
    out = await trio.to_thread.run_sync(lambda: run_ctl(home, "agents", "--json"))
    assert out.returncode == 0, out.stderr
    assert [o["id"] for o in json.loads(out.stdout)] == [orch.id]


@pytest.mark.parametrize(("relay_url", "token", "said"), [
    ("http://[::1", TOKEN, "relay-orchestrator: --relay-url http://[::1: "),
    ("http://127.0.0.1:9", "t\u00f6ken", "relay-orchestrator: RELAY_ORCHESTRATOR_TOKEN: the "
     "token holds 'ö', which cannot go in an HTTP header"),
])
def test_a_url_or_token_httpx_cannot_take_is_a_usage_error(
    tmp_path: Path, relay_url: str, token: str, said: str,
) -> None:
    out = run_ctl(tmp_path, "agents", "--relay-url", relay_url, RELAY_ORCHESTRATOR_TOKEN=token)
    assert (out.returncode, out.stdout) == (2, ""), out.stderr
    assert out.stderr.startswith(said) and out.stderr.count("\n") == 1, out.stderr


def test_a_token_file_that_is_not_text_is_a_usage_error(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_bytes(b"\xff\xfe")
    token_file.chmod(0o600)
    out = run_ctl(tmp_path, "agents", "--relay-url", "http://127.0.0.1:9",
                  "--token-file", str(token_file))
    assert (out.returncode, out.stderr) == (
        2, f"relay-orchestrator: --token-file {token_file}: not UTF-8 text\n")
