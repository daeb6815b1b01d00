"""Fixtures of the orchestrator tests: a scripted HTTP server (``server``) and the
orchestrator as a process of its own (``orch_process``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from ..conftest import kill_agents
from .e2e import OrchProcess
from .scripted_server import Server, start_server


@pytest.fixture
async def server(nursery: trio.Nursery) -> Server:
    return await start_server(nursery)


@pytest.fixture
def orch_process(tmp_path: Path, relay: Any) -> Iterator[OrchProcess]:
    op = OrchProcess(tmp_path, relay.url)
    yield op
    op.stop()
    agents = (relay.orchestrator("orch-crash") or {}).get("agents") or []
    kill_agents(agents)
