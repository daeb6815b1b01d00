"""The daemon never ends over its token file: rewritten while it runs, it heals.

A real orchestrator on the real dev relay reads its token from a file. The
relay refuses the token once (a fault), so the client reads the file again;
meanwhile the file is rewritten in place in each bad way (missing, empty,
readable by others). Each problem is logged once, the orchestrator keeps
going, and it is connected again once the file is fixed.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from orchestrator._errors import ConfigError
from orchestrator._settings import read_token_file

from ..conftest import TOKEN, cli_env, make_settings

WAIT = 10


class _Lines(logging.Handler):
    """The messages of one logger, and an event for each new one."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []
        self._changed = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        self._changed.set()

    async def wait_for(self, text: str) -> None:
        with trio.fail_after(WAIT):
            while not any(text in message for message in self.messages):
                self._changed = trio.Event()
                await self._changed.wait()

    def count(self, text: str) -> int:
        return sum(text in message for message in self.messages)


@pytest.fixture
def lines() -> Any:
    logger = logging.getLogger("relay_orchestrator")
    handler = _Lines()
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


async def test_a_token_file_rewritten_while_running_is_retried_until_it_heals(
    relay: Any, start_orchestrator: Any, tmp_path: Path, lines: _Lines
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    settings = make_settings(tmp_path, relay.url, token=None, token_file=str(token_file),
                             heartbeat_interval="0.1")
    orch = await start_orchestrator(settings=settings)
    assert orch.presence.connected

    token_file.unlink()  # being rewritten: gone for a moment…
    relay.faults.status = 401  # …when the relay asks for the token again
    await lines.wait_for("refused our token (401)")
    relay.faults.status = None
    await lines.wait_for(f"--token-file {token_file}: cannot read")
    token_file.write_text("")  # …then there, but empty
    token_file.chmod(0o600)
    await lines.wait_for(f"--token-file {token_file}: file is empty")
    token_file.chmod(0o644)  # …then readable by others
    await lines.wait_for(f"--token-file {token_file}: readable by group or others")
    token_file.write_text(TOKEN + "\n")
    beats = orch.presence.heartbeats
    token_file.chmod(0o600)  # fixed
    await lines.wait_for("accepts our token again")
    with trio.fail_after(WAIT):
        await relay.wait_for(lambda: orch.presence.heartbeats > beats + 1)
    assert orch.presence.connected
    for problem in ("refused our token", "cannot read", "file is empty", "readable by group"):
        assert lines.count(problem) == 1, (problem, lines.messages)


def test_at_start_up_a_bad_token_file_is_still_a_config_error(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("")
    token_file.chmod(0o600)
    with pytest.raises(ConfigError, match="file is empty"):
        read_token_file(token_file)
    with pytest.raises(ConfigError, match="file is empty"):
        make_settings(tmp_path, "http://127.0.0.1:9", token=None, token_file=str(token_file))


@pytest.mark.parametrize(("token", "said"), [
    ("tök", "the token holds 'ö'"),
    ("two words", "the token holds U+0020"),
    ("tab\there", "the token holds U+0009"),
])
def test_a_token_that_cannot_go_in_a_header_stops_run_with_one_sentence(
    tmp_path: Path, token: str, said: str,
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n", encoding="utf-8")
    token_file.chmod(0o600)
    (tmp_path / "none.toml").touch()
    base = [sys.executable, "-m", "orchestrator", "run", "--relay-url", "http://127.0.0.1:9",
            "--state-dir", str(tmp_path / "state"), "--config", str(tmp_path / "none.toml")]
    for argv, env in ((["--token-file", str(token_file)], {}),
                      ([], {"RELAY_ORCHESTRATOR_TOKEN": token})):
        out = subprocess.run([*base, *argv], capture_output=True, text=True, timeout=30,
                             env=cli_env(HOME=str(tmp_path), **env))
        assert out.returncode == 2, out.stderr
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and said in lines[0] and "HTTP header" in lines[0], out.stderr
        assert "Traceback" not in out.stderr
