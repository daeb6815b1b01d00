"""What the daemon loads: for an http:// relay, no httpx (nor what it pulls in),
no OpenSSL, and no importlib.metadata for its own version.

httpx and the standard-library modules it imports (email, http.client,
urllib.request, http.cookiejar…) are 2-3 MB of a daemon that should stay
under 35 MB; an http:// relay is spoken to through the project's own
transport, event stream included. The process is the real one, and Python
itself lists every module it imports (``PYTHONPROFILEIMPORTTIME``).
"""

from __future__ import annotations

import re
import signal
from typing import Any

import trio

from .test_agents_e2e import settle, spawn_params
from .test_crash_recovery import OrchProcess, orch_process, registered  # noqa: F401

_IMPORTED = re.compile(r"^import time:\s*\d+ \|\s*\d+ \|\s*(\S+)\s*$")


async def test_run_on_an_http_relay_never_loads_httpx(
    relay: Any, orch_process: OrchProcess  # noqa: F811
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
    proc.send_signal(signal.SIGTERM)
    with trio.fail_after(20):
        while proc.poll() is None:  # noqa: ASYNC110
            await trio.sleep(0.05)
    lines = orch_process.log.read_text().splitlines()
    modules = {m[1] for line in lines if (m := _IMPORTED.match(line))}
    assert "orchestrator._relay_client" in modules  # the listing is there
    assert "command stream open" in "\n".join(lines)  # the stream, not polling
    loaded = sorted(m for m in modules if m == "httpx" or m.startswith(("httpx.", "httpcore")))
    assert loaded == []
    # its version read from its own metadata file: no importlib.metadata, no email parser
    assert not {"importlib.metadata", "email", "email.parser"} & modules
    # nor OpenSSL: trio's ssl and hmac stay stand-ins (orchestrator._lazy_imports)
    assert not {"ssl", "_ssl", "hmac", "hashlib", "_hashlib", "secrets"} & modules
    files = {line.split()[-1] for line in mapped if "/" in line}
    assert any("libc.so" in f for f in files)  # the listing is there
    assert not [f for f in files if "libcrypto" in f or "libssl" in f]
