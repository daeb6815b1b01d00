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


def test_one_tree_is_configured_and_logging_itself_is_left_alone(capsys: object) -> None:
    """The dev relay and its server and the actors log under ``relay_orchestrator.*``
    too, through the one handler; ``setup_logging`` patches none of the logging
    module's globals."""
    import pytest

    from orchestrator._logging import setup_logging

    assert isinstance(capsys, pytest.CaptureFixture)
    saved = (logging._srcfile, logging.logThreads, logging.logProcesses,  # type: ignore[attr-defined]
             logging.logMultiprocessing)
    loggers = [logging.getLogger("relay_orchestrator")]
    before = [(lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    try:
        setup_logging("json")
        setup_logging("json")  # again: still one handler
        assert len(loggers[0].handlers) == 1
        assert (logging._srcfile, logging.logThreads, logging.logProcesses,  # type: ignore[attr-defined]
                logging.logMultiprocessing) == saved
        import actors._fleet
        import orchestrator.devrelay._asgi_server
        import orchestrator.devrelay._relay

        modules = (orchestrator.devrelay._asgi_server, orchestrator.devrelay._relay,
                   actors._fleet)
        for module in modules:
            module.log.error("from %s", module.__name__, extra={"agentId": "ag_1"})
        lines = [json.loads(line) for line in capsys.readouterr().err.strip().splitlines()]
        assert [(line["logger"], line["msg"], line["agentId"]) for line in lines] == [
            ("relay_orchestrator.devrelay", "from orchestrator.devrelay._asgi_server", "ag_1"),
            ("relay_orchestrator.devrelay", "from orchestrator.devrelay._relay", "ag_1"),
            ("relay_orchestrator.actors", "from actors._fleet", "ag_1"),
        ]
    finally:
        for lg, (handlers, level, propagate) in zip(loggers, before, strict=True):
            lg.handlers[:], lg.propagate = handlers, propagate
            lg.setLevel(level)


def test_every_logger_is_named_for_its_package() -> None:
    """One scheme: ``relay_orchestrator.<subpackage>`` in ``orchestrator/``,
    ``relay_orchestrator.actors`` and ``relay_orchestrator.supervisors`` beside it
    (read from the source: a module's logger keeps its name when the module moves
    within its package)."""
    import re
    from pathlib import Path

    root = Path(__file__).parents[2]
    named = re.compile(r"getLogger\((.*?)\)")
    seen, wrong = 0, []
    for package in ("orchestrator", "actors", "supervisors"):
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).parts
            if parts == ("orchestrator", "_logging.py"):
                continue  # the root itself
            if package == "orchestrator":
                expected = "relay_orchestrator" + (f".{parts[1]}" if len(parts) > 2 else "")
            else:
                expected = f"relay_orchestrator.{package}"
            for name in named.findall(path.read_text()):
                seen += 1
                if name != f'"{expected}"':
                    wrong.append((str(path.relative_to(root)), name, expected))
    assert seen > 10  # the walk sees the loggers
    assert wrong == []


def test_the_relay_command_logs_through_the_same_setup(tmp_path: object) -> None:
    """``relay-orchestrator relay`` sets up logging: an error of the dev relay
    (here: its state file cannot be written on the way out, its temporary
    name taken by a directory) is a JSON line off a terminal, not Python's
    last-resort handler's bare text."""
    import select
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from ..conftest import cli_env

    assert isinstance(tmp_path, Path)
    state = tmp_path / "state.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "relay", "--port", "0", "--token", "t",
         "--state-file", str(state)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env(), text=True,
    )
    try:
        assert proc.stdout is not None
        assert select.select([proc.stdout], [], [], 20)[0], "no line within 20 s"
        first = proc.stdout.readline()  # printed once it listens
        assert first.startswith("dev relay listening on http://127.0.0.1:"), first
        (tmp_path / "state.json.tmp").mkdir()
        proc.send_signal(signal.SIGINT)  # it writes its state once more on the way out
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in err.strip().splitlines()]
    assert any(line["logger"] == "relay_orchestrator.devrelay" and line["level"] == "error"
               and "cannot write its state file" in line["msg"] for line in lines), err


def _log_to(path: object, journal_stream: str | None) -> list[str]:
    """Lines a process logs with its stderr in ``path`` and JOURNAL_STREAM as given."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import logging\nfrom orchestrator._logging import setup_logging\n"
        "setup_logging('text')\nlog = logging.getLogger('relay_orchestrator.t')\n"
        "log.info('started')\nlog.warning('slow relay')\n"
        "try:\n    1/0\nexcept ZeroDivisionError:\n    log.exception('a handler crashed')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    target = Path(str(path))
    with open(target, "wb") as err:
        if journal_stream is not None:
            st = os.fstat(err.fileno())
            env["JOURNAL_STREAM"] = journal_stream.format(dev=st.st_dev, ino=st.st_ino)
        subprocess.run([sys.executable, "-c", code], stderr=err, env=env, check=True, timeout=30)
    return target.read_text().splitlines()


def test_under_the_journal_each_line_carries_its_priority(tmp_path: object) -> None:
    from pathlib import Path

    lines = _log_to(Path(str(tmp_path)) / "journal", "{dev}:{ino}")
    assert lines[0].startswith("<6>") and lines[0].endswith("started")
    assert lines[1].startswith("<4>") and lines[1].endswith("slow relay")
    assert lines[2].startswith("<3>") and lines[2].endswith("a handler crashed")
    assert len(lines) > 4 and all(line.startswith("<3>") for line in lines[2:])  # traceback
    assert any("ZeroDivisionError" in line for line in lines)


def test_elsewhere_lines_have_no_priority_prefix(tmp_path: object) -> None:
    from pathlib import Path

    plain = _log_to(Path(str(tmp_path)) / "plain", None)
    other = _log_to(Path(str(tmp_path)) / "other", "1:2")  # the journal is not our stderr
    for lines in (plain, other):
        assert lines[0].endswith("started") and not lines[0].startswith("<")
