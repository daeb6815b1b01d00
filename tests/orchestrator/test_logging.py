"""Logs: one line per event; JSON lines off a terminal, with fields; never a token."""

from __future__ import annotations

import json
import logging

from orchestrator._logging import JsonFormatter, TextFormatter


def record(msg: str, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("relay_orchestrator.x", logging.INFO, __file__, 1, msg, (), None)
    rec.__dict__.update(extra)
    return rec


def test_json_lines_carry_agent_and_command_ids() -> None:
    line = JsonFormatter().format(record("agent started", agentId="ag_1", commandId="cmd_9"))
    data = json.loads(line)
    assert data["msg"] == "agent started" and data["level"] == "info"
    assert data["agentId"] == "ag_1" and data["commandId"] == "cmd_9"
    assert "\n" not in line


def test_text_lines_are_one_per_event() -> None:
    line = TextFormatter().format(record("claimed", commandId="cmd_2"))
    assert line.endswith("claimed commandId=cmd_2") and "\n" not in line


async def test_verbose_logs_the_wire_without_bodies(relay: object, start_orchestrator: object,
                                                    caplog: object) -> None:
    import pytest
    import trio

    assert isinstance(caplog, pytest.LogCaptureFixture)
    logging.getLogger("relay_orchestrator").propagate = True
    caplog.set_level(logging.DEBUG, logger="relay_orchestrator")
    orch = await start_orchestrator(heartbeat_interval="0.1")  # type: ignore[operator]
    with trio.fail_after(10):
        while not any("wire POST /api/orchestrators/" in r.getMessage() and "heartbeat" in
                      r.getMessage() for r in caplog.records):
            await trio.sleep(0.05)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("wire ")]
    assert any(line.startswith("wire POST /api/orchestrators -> 20") for line in lines)
    assert all("Bearer" not in line and "{" not in line for line in lines)
    assert orch.presence.registrations >= 1


def test_the_daemon_logs_without_walking_the_stack_for_each_line(capsys: object) -> None:
    """The lines carry no caller, thread or process fields, so the daemon's
    logging skips looking them up (a stack walk per line on the spawn path),
    and a line still reaches stderr whole, with its fields."""
    import pytest

    from orchestrator._logging import setup_logging

    assert isinstance(capsys, pytest.CaptureFixture)
    saved = (logging._srcfile, logging.logThreads, logging.logProcesses)  # type: ignore[attr-defined]
    loggers = [logging.getLogger(n) for n in ("relay_orchestrator", "actors", "supervisors")]
    before = [(lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    try:
        setup_logging("json")
        seen: list[logging.LogRecord] = []
        logger = logging.getLogger("relay_orchestrator.test")
        logger.addFilter(lambda rec: seen.append(rec) or True)
        logger.info("agent %s started", "ag_1", extra={"agentId": "ag_1"})
        assert seen and seen[0].funcName == "(unknown function)" and seen[0].lineno == 0
        assert seen[0].threadName is None and seen[0].process is None
        line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
        assert line["msg"] == "agent ag_1 started" and line["agentId"] == "ag_1"
    finally:
        logging._srcfile, logging.logThreads, logging.logProcesses = saved  # type: ignore[attr-defined]
        logging.logMultiprocessing = True
        for lg, (handlers, level, propagate) in zip(loggers, before, strict=True):
            lg.handlers[:], lg.propagate = handlers, propagate
            lg.setLevel(level)
