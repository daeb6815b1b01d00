"""The orchestrator on the real dev relay: register, heartbeat, claim, settle."""

from __future__ import annotations

import logging
import os
import socket
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from orchestrator._version import current_version
from orchestrator.devrelay._relay import serve_dev_relay
from orchestrator.relay._wire import Command, Outcome

from ..conftest import TOKEN, make_settings

WAIT = 10


def settled(relay: Any, command_id: str) -> bool:
    command = relay.get_command(command_id)
    return command is not None and command["status"] in ("succeeded", "failed")


async def wait_settled(relay: Any, command_id: str) -> dict[str, Any]:
    with trio.fail_after(WAIT):
        await relay.wait_for(lambda: settled(relay, command_id))
    return relay.get_command(command_id)


class Counter:
    """A test-only command type whose handler counts calls and can be held."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.release = trio.Event()
        self.release.set()
        self.entered = trio.Event()

    def hold(self) -> None:
        self.release = trio.Event()

    def handlers(self) -> dict[str, Any]:
        def make(orch: Any) -> Any:
            async def handle(command: Command) -> Outcome:
                self.calls.append(command.id)
                self.entered.set()
                await self.release.wait()
                return Outcome.succeeded({"n": len(self.calls)})

            return handle

        return {"test.count": make}


async def test_registration_carries_every_field(
    relay: Any, start_orchestrator: Any, tmp_path: Path,
) -> None:
    orch = await start_orchestrator(id="orch-test-1")
    reg = relay.orchestrator("orch-test-1")
    assert reg["status"] == "online"
    assert reg["version"] == current_version()
    assert reg["hostname"] == socket.gethostname()
    assert reg["pid"] == os.getpid()
    assert isinstance(reg["startedAt"], int) and reg["startedAt"] > 1_600_000_000_000
    assert "command" in reg["providers"]
    assert reg["baseDir"] == str((tmp_path / "base").resolve())
    assert reg["capabilities"] == {"relayCommandBus": True, "selfUpgrade": False}
    assert reg["supervisor"] == "none"
    assert reg["selfUnit"] is None
    assert reg["agents"] == []
    assert orch.agent_id == "orch:orch-test-1"


async def test_generated_id_is_kept_across_restarts(
    relay: Any, tmp_path: Path, nursery: trio.Nursery,
) -> None:
    from orchestrator.daemon._app import run_orchestrator

    settings = make_settings(tmp_path, relay.url)
    ids = []
    for _ in range(2):
        async with trio.open_nursery() as inner:
            orch = await inner.start(partial(run_orchestrator, settings))
            ids.append(orch.id)
            orch.stop()
    assert ids[0] == ids[1] and ids[0].startswith("orch-")


async def test_heartbeats_at_the_interval(relay: Any, start_orchestrator: Any) -> None:
    orch = await start_orchestrator(heartbeat_interval="0.2")
    start = trio.current_time()
    with trio.fail_after(WAIT):
        await relay.wait_for(lambda: relay.orchestrator(orch.id)["heartbeats"] >= 4)
    elapsed = trio.current_time() - start
    assert elapsed >= 3 * 0.2 * 0.9
    assert relay.orchestrator(orch.id)["load"]["memoryRss"] > 0


async def test_stream_replays_pending_commands_on_connect(
    relay: Any, start_orchestrator: Any,
) -> None:
    counter = Counter()
    ids = [relay.create_command("orch:orch-r", "test.count", {"agentId": "a1"})["id"]
           for _ in range(3)]
    await start_orchestrator(id="orch-r", extra_handlers=counter.handlers())
    for cid in ids:
        assert (await wait_settled(relay, cid))["status"] == "succeeded"
    assert counter.calls == ids  # oldest first (one lane), each once


async def test_unknown_command_type_fails_clearly(relay: Any, start_orchestrator: Any) -> None:
    orch = await start_orchestrator()
    cid = relay.create_command(orch.agent_id, "agent.dance", {})["id"]
    command = await wait_settled(relay, cid)
    assert command["status"] == "failed"
    assert command["error"] == "unsupported command type: agent.dance"


async def test_claim_conflict_is_not_acted_on(relay: Any, start_orchestrator: Any) -> None:
    counter = Counter()
    orch = await start_orchestrator(extra_handlers=counter.handlers())
    # Someone else claimed it first: the orchestrator sees it as pending (a
    # stale delivery) and must do nothing with it after the relay's 409.
    raw = relay.create_command("orch:someone-else", "test.count", {})
    async with httpx.AsyncClient(base_url=relay.url) as http:
        r = await http.patch(f"/api/commands/{raw['id']}", json={"status": "running"},
                             headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200
    from orchestrator.relay._wire import structure_command

    orch.dispatcher.submit(structure_command(raw))
    with trio.fail_after(WAIT):
        await orch.dispatcher.wait_idle()
    assert counter.calls == []
    assert relay.get_command(raw["id"])["status"] == "running"
    assert relay.get_command(raw["id"])["result"] is None


async def test_same_command_twice_is_acted_on_once(relay: Any, start_orchestrator: Any) -> None:
    from orchestrator.relay._wire import structure_command

    counter = Counter()
    counter.hold()
    orch = await start_orchestrator(extra_handlers=counter.handlers())
    raw = relay.create_command(orch.agent_id, "test.count", {})
    with trio.fail_after(WAIT):
        await counter.entered.wait()
    # Delivered again (a replay, a second stream) while in flight, and after.
    orch.dispatcher.submit(structure_command(raw))
    counter.release.set()
    await wait_settled(relay, raw["id"])
    orch.dispatcher.submit(structure_command(raw))
    with trio.fail_after(WAIT):
        await orch.dispatcher.wait_idle()
    assert counter.calls == [raw["id"]]


async def test_relay_restart_from_state_file_loses_no_outcome(
    tmp_path: Path, nursery: trio.Nursery,
) -> None:
    from orchestrator.daemon._app import run_orchestrator

    state_file = tmp_path / "relay.json"
    counter = Counter()
    counter.hold()
    async with trio.open_nursery() as relay_nursery:
        serve = partial(serve_dev_relay, token=TOKEN, state_file=state_file)
        relay = await relay_nursery.start(serve)
        port = int(relay.url.rsplit(":", 1)[1])
        settings = make_settings(tmp_path, relay.url, heartbeat_interval="0.2")
        orch = await nursery.start(partial(run_orchestrator, settings,
                                           extra_handlers=counter.handlers()))
        cid = relay.create_command(orch.agent_id, "test.count", {})["id"]
        with trio.fail_after(WAIT):
            await counter.entered.wait()
        relay_nursery.cancel_scope.cancel()
    # The relay is gone; the command finishes; its outcome waits in the journal.
    counter.release.set()
    with trio.fail_after(WAIT):
        while orch.journal.outbox_size() == 0:
            await trio.sleep(0.01)
    registrations_before = orch.presence.registrations
    async with trio.open_nursery() as relay_nursery:
        relay2 = await relay_nursery.start(partial(serve_dev_relay, token=TOKEN, port=port,
                                                   state_file=state_file))
        command = await wait_settled(relay2, cid)
        assert command["status"] == "succeeded"
        assert command["result"] == {"n": 1}
        with trio.fail_after(WAIT):
            await relay2.wait_for(lambda: relay2.orchestrator(orch.id)["status"] == "online")
        # and new commands flow on the reconnected stream
        cid2 = relay2.create_command(orch.agent_id, "test.count", {})["id"]
        assert (await wait_settled(relay2, cid2))["status"] == "succeeded"
        assert orch.presence.registrations >= registrations_before
        relay_nursery.cancel_scope.cancel()
    assert counter.calls == [cid, cid2]


async def test_forgetful_relay_gets_a_new_registration(
    tmp_path: Path, nursery: trio.Nursery,
) -> None:
    from orchestrator.daemon._app import run_orchestrator

    async with trio.open_nursery() as relay_nursery:
        relay = await relay_nursery.start(partial(serve_dev_relay, token=TOKEN))
        port = int(relay.url.rsplit(":", 1)[1])
        settings = make_settings(tmp_path, relay.url, heartbeat_interval="0.1")
        orch = await nursery.start(partial(run_orchestrator, settings))
        relay_nursery.cancel_scope.cancel()
    async with trio.open_nursery() as relay_nursery:
        # Same address, no state file: it knows nothing; the heartbeat's 404
        # must make the orchestrator register again at once.
        relay2 = await relay_nursery.start(partial(serve_dev_relay, token=TOKEN, port=port))
        with trio.fail_after(WAIT):
            await relay2.wait_for(lambda: relay2.orchestrator(orch.id) is not None)
        assert relay2.orchestrator(orch.id)["status"] == "online"
        relay_nursery.cancel_scope.cancel()


async def test_500s_and_hangs_delay_but_lose_nothing(relay: Any, start_orchestrator: Any) -> None:
    counter = Counter()
    counter.hold()
    orch = await start_orchestrator(extra_handlers=counter.handlers())
    orch.client.request_timeout = 0.5
    cid = relay.create_command(orch.agent_id, "test.count", {})["id"]
    with trio.fail_after(WAIT):
        await counter.entered.wait()
    relay.faults.status = 500
    counter.release.set()
    with trio.fail_after(WAIT):
        while orch.journal.outbox_size() == 0:
            await trio.sleep(0.01)
    await trio.sleep(0.3)  # a few failed deliveries happen
    assert relay.get_command(cid)["status"] == "running"
    relay.faults.status = None
    relay.faults.hang = True
    await trio.sleep(0.6)
    relay.faults.hang = False
    command = await wait_settled(relay, cid)
    assert command["status"] == "succeeded"
    assert counter.calls == [cid]


@pytest.mark.slow  # waits out the real ready timeout and the retry backoff
async def test_wrong_token_logs_clearly_and_heals_when_fixed(
    relay: Any, tmp_path: Path, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    from orchestrator.daemon._app import run_orchestrator

    token_file = tmp_path / "token"
    token_file.write_text("wrong-token\n")
    token_file.chmod(0o600)
    settings = make_settings(tmp_path, relay.url, token=None, token_file=str(token_file))
    caplog.set_level(logging.INFO, logger="relay_orchestrator")
    logging.getLogger("relay_orchestrator").propagate = True
    orch = await nursery.start(partial(run_orchestrator, settings))  # READY after 10 s at most
    assert orch.presence.registrations == 0
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(relay.url in m and "token" in m for m in errors)
    # Backoff, not a crash loop: a handful of attempts in ~10 s, not hundreds.
    assert len([m for m in errors if "token" in m]) < 40
    token_file.write_text(f"  {TOKEN}  \n")
    with trio.fail_after(20):
        await relay.wait_for(lambda: relay.orchestrator(orch.id) is not None)
    assert "wrong-token" not in caplog.text and TOKEN not in caplog.text
