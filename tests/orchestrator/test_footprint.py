"""What the daemon loads: memory kept honest by not importing what ``run`` does
not use. No dev relay (starlette, its server, h11), no httpx for an http:// relay
(nor the standard-library modules it pulls in: email, http.client…), no
importlib.metadata for its own version; and no import tricks (TARGETS.md):
the modules it does load are the real ones.

The process is the real one, and Python itself lists every module it
imports (``PYTHONPROFILEIMPORTTIME``).
"""

from __future__ import annotations

import re
import signal
from pathlib import Path
from typing import Any

import trio

from .e2e import OrchProcess, registered, settle, spawn_params

_IMPORTED = re.compile(r"^import time:\s*\d+ \|\s*\d+ \|\s*(\S+)\s*$")


async def test_run_on_an_http_relay_never_loads_httpx(
    relay: Any, orch_process: OrchProcess
) -> None:
    orch_process.env = {"PYTHONPROFILEIMPORTTIME": "1"}
    proc = orch_process.start()
    await registered(relay, 1)
    base = orch_process.base
    done = await settle(relay, relay.create_command(
        "orch:orch-crash", "agent.spawn",
        spawn_params(base, "ag_f", base / "f.rec", "--term", "exit")))  # delivered by the stream
    assert done["status"] == "succeeded", done["error"]
    stop = await settle(relay, relay.create_command(
        "orch:orch-crash", "agent.stop", {"agentId": "ag_f"}))
    assert stop["status"] == "succeeded", stop["error"]
    mapped = (await trio.Path(f"/proc/{proc.pid}/maps").read_text()).splitlines()
    status = await trio.Path(f"/proc/{proc.pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+) kB", status)[1]) * 1024  # type: ignore[index]
    proc.send_signal(signal.SIGTERM)
    with trio.fail_after(20):
        while proc.poll() is None:  # noqa: ASYNC110
            await trio.sleep(0.05)
    lines = orch_process.log.read_text().splitlines()
    modules = {m[1] for line in lines if (m := _IMPORTED.match(line))}
    assert "orchestrator.relay._client" in modules  # the listing is there
    assert "command stream open" in "\n".join(lines)  # the stream, not polling
    loaded = sorted(m for m in modules if m == "httpx" or m.startswith(("httpx.", "httpcore")))
    assert loaded == []
    # nor h11: the client frames HTTP/1.1 itself (bench/http_parser.py says why)
    assert not [m for m in modules if m == "h11" or m.startswith("h11.")]
    # its version read from its own metadata file: no importlib.metadata, no email parser
    assert not {"importlib.metadata", "email", "email.parser"} & modules
    # nor the dev relay (starlette costs memory the daemon does not need)
    devrelay = "orchestrator.devrelay"
    assert not [m for m in modules if m == devrelay or m.startswith(devrelay + ".")]
    assert not [m for m in modules if m == "starlette" or m.startswith("starlette.")]
    files = {line.split()[-1] for line in mapped if "/" in line}
    assert any("libc.so" in f for f in files)  # the listing is there
    assert rss <= 45 * 1024 * 1024  # TARGETS.md: at most 45 MB itself


def test_no_import_tricks() -> None:
    """No stand-ins in ``sys.modules``, no private standard-library modules,
    no patched library globals (TARGETS.md's RSS line): checked in a fresh
    interpreter that imports what ``run`` imports and sets up its logging."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import importlib.util, logging, sys, types
        before = (logging._srcfile, logging.logThreads, logging.logProcesses)
        import orchestrator, orchestrator.cli._main, orchestrator.daemon._app, trio
        from orchestrator._logging import setup_logging
        setup_logging("json")
        fakes = [name for name, module in list(sys.modules.items())
                 if module is not None and type(module) is not types.ModuleType
                 and name.split(".")[0] in ("ssl", "hmac", "orchestrator")]
        print(fakes, importlib.util.find_spec("ssl") is not None)
        print((logging._srcfile, logging.logThreads, logging.logProcesses) == before)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[] True", "True"]
    package = Path(__file__).parents[2] / "orchestrator"
    assert not (package / "_lazy_imports.py").exists()
