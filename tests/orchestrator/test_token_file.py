"""The daemon never ends over its token file: rewritten while it runs, it heals.

A real orchestrator on the real dev relay reads its token from a file. The
relay refuses the token once (a fault), so the client reads the file again;
meanwhile the file is rewritten in place in each bad way (missing, empty,
readable by others). Each problem is logged once, the orchestrator keeps
going, and it is connected again once the file is fixed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import trio

from orchestrator._errors import ConfigError
from orchestrator._settings import read_token_file

from ..conftest import TOKEN, make_settings

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
