"""Every command type through ``AgentFleet.execute``, on real plain-session agents."""

from __future__ import annotations

import os
import stat

import psutil
import pytest
import trio

from actors import CommandRejected

from .conftest import WAIT, Harness

MANAGED_AGENT_KEYS = {
    "agentId",
    "spawnRequestId",
    "policyName",
    "provider",
    "label",
    "tags",
    "status",
    "pid",
    "tmuxSession",
    "sessionName",
    "cwd",
    "startedAt",
    "lastSpawnAt",
    "lastStopAt",
    "restartCount",
    "exit",
    "workspace",
    "meta",
    "usage",
}


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def test_spawn_runs_the_agent_and_reports_it(harness: Harness) -> None:
    fleet = await harness.start()
    record = harness.record()
    params = harness.spawn(
        record=record,
        agentId="ag_12",
        spawnRequestId="sp_1",
        policyName="reviewer-policy",
        label="reviewer",
        tags=["memory-reload:NOTES.md"],
        model="sonnet",
        effort="high",
        permissionMode="guarded",
        approvalMode="guarded",
        profile="reviewer",
        requestedBy="lifecycle-manager",
        requestedAt=1763940000000,
    )
    result = await fleet.execute("agent.spawn", params, "cmd_1")
    assert result == {
        "agentId": "ag_12",
        "spawnRequestId": "sp_1",
        "pid": result["pid"],
        "tmuxSession": None,
        "workspace": {"mode": "shared", "requestedMode": "inherit"},
    }
    assert await record.started() == result["pid"]
    report = await harness.reporter.wait_for("ag_12", "running")
    assert set(report) == MANAGED_AGENT_KEYS | {"providerSessionId"} or set(report) == (
        MANAGED_AGENT_KEYS
    )
    assert report["pid"] == result["pid"]
    assert report["policyName"] == "reviewer-policy"
    assert report["label"] == "reviewer"
    assert report["tags"] == ["memory-reload:NOTES.md"]
    assert report["cwd"] == str(harness.base.resolve())
    assert report["sessionName"] == "relay-ag_12"
    assert report["restartCount"] == 0
    assert report["exit"] is None
    assert report["meta"]["model"] == "sonnet"
    assert report["meta"]["approvalMode"] == "guarded"
    assert report["meta"]["profile"] == "reviewer"
    assert report["meta"]["workspaceMode"] == "inherit"
    assert report["meta"]["session"] == "plain"
    assert fleet.agents() == [report]
    assert fleet.find("agent.stop", {"policyName": "reviewer-policy"}) == "ag_12"
    # Its own session and process group, outside ours.
    assert os.getsid(result["pid"]) == result["pid"]
    assert os.getpgid(result["pid"]) != os.getpgid(0)
    # The input is a FIFO in the state dir.
    fifo = harness.state / "agents" / "ag_12" / "stdin"
    assert stat.S_ISFIFO(fifo.stat().st_mode)


async def test_spawn_without_agent_id_generates_one(harness: Harness) -> None:
    fleet = await harness.start()
    result = await fleet.execute("agent.spawn", harness.spawn(), "c1")
    assert result["agentId"].startswith("ag_")
    assert len(result["agentId"]) > 6
    stored = harness.store.record(result["agentId"])
    assert stored is not None and stored["params"]["agentId"] == result["agentId"]


async def test_spawning_a_running_agent_again_is_refused(harness: Harness) -> None:
    fleet = await harness.start()
    await fleet.execute("agent.spawn", harness.spawn(agentId="ag_a"), "c1")
    with pytest.raises(CommandRejected, match="^agent already running: ag_a$"):
        await fleet.execute("agent.spawn", harness.spawn(agentId="ag_a"), "c2")
    assert len(harness.launcher.specs) == 1


async def test_stop_asks_politely_first(harness: Harness) -> None:
    fleet = await harness.start()
    record = harness.record()
    await fleet.execute(
        "agent.spawn", harness.spawn("--term", "linger", record=record, agentId="ag_s"), "c1"
    )
    pid = await record.started()
    mark = harness.reporter.mark()
    result = await fleet.execute("agent.stop", {"agentId": "ag_s", "timeoutMs": 5000}, "c2")
    assert result == {"agentId": "ag_s", "exitCode": 0, "signal": None}
    assert await record.line() == "term"
    assert harness.reporter.statuses("ag_s", mark) == ["stopping", "stopped"]
    report = harness.reporter.reports[-1]
    assert report["exit"]["exitCode"] == 0
    assert report["lastStopAt"] >= report["startedAt"]
    assert not alive(pid)
    # Stopping again changes nothing and tells the same.
    assert await fleet.execute("agent.stop", {"agentId": "ag_s"}, "c3") == result


async def test_an_agent_that_ends_at_once_on_sigterm_goes_straight_to_stopped(
    harness: Harness,
) -> None:
    fleet = await harness.start()
    ids = [f"ag_q{n}" for n in range(5)]
    for agent_id in ids:
        await fleet.execute("agent.spawn", harness.spawn(agentId=agent_id), f"c_{agent_id}")
    mark = harness.reporter.mark()
    for agent_id in ids:
        result = await fleet.execute("agent.stop", {"agentId": agent_id}, f"s_{agent_id}")
        assert result["signal"] == "SIGTERM"
    said = [harness.reporter.statuses(agent_id, mark) for agent_id in ids]
    assert all(statuses[-1] == "stopped" for statuses in said)
    # Ending within STOPPING_REPORT_DELAY, it is never reported "stopping" (one
    # report instead of two); a loaded machine may be slower for some.
    assert ["stopped"] in said


async def test_stop_of_a_default_agent_reports_sigterm(harness: Harness) -> None:
    fleet = await harness.start()
    await fleet.execute("agent.spawn", harness.spawn(agentId="ag_d", spawnRequestId="sp_d"), "c1")
    result = await fleet.execute("agent.stop", {"spawnRequestId": "sp_d"}, "c2")
    assert result == {"agentId": "ag_d", "exitCode": None, "signal": "SIGTERM"}


async def test_an_agent_that_ignores_sigterm_is_killed_after_timeout(harness: Harness) -> None:
    fleet = await harness.start()
    record = harness.record()
    params = harness.spawn("--term", "ignore", record=record, agentId="ag_stubborn")
    await fleet.execute("agent.spawn", params, "c1")
    pid = await record.started()
    started = trio.current_time()
    result = await fleet.execute("agent.stop", {"agentId": "ag_stubborn", "timeoutMs": 300}, "c2")
    assert trio.current_time() - started >= 0.3
    assert await record.line() == "term"  # it heard SIGTERM, and carried on
    assert result == {"agentId": "ag_stubborn", "exitCode": None, "signal": "SIGKILL"}
    assert not alive(pid)
    assert harness.reporter.reports[-1]["status"] == "stopped"


async def test_stop_not_graceful_kills_at_once(harness: Harness) -> None:
    fleet = await harness.start()
    record = harness.record()
    await fleet.execute(
        "agent.spawn", harness.spawn("--term", "ignore", record=record, agentId="ag_k"), "c1"
    )
    await record.started()
    result = await fleet.execute("agent.stop", {"agentId": "ag_k", "graceful": False}, "c2")
    assert result["signal"] == "SIGKILL"


async def test_an_agent_that_ends_by_itself_is_reported_exited(harness: Harness) -> None:
    fleet = await harness.start()
    params = harness.spawn("--print", "about to fail", "--exit", "3", agentId="ag_crash")
    await fleet.execute("agent.spawn", params, "c1")
    report = await harness.reporter.wait_for("ag_crash", "exited")
    assert report["exit"]["exitCode"] == 3
    assert report["exit"]["signal"] is None
    assert report["exit"]["lastOutput"] == "about to fail\nexiting on request"
    assert report["exit"]["at"] >= report["startedAt"]
    with pytest.raises(CommandRejected, match=r"^agent is not running: ag_crash \(exited\)$"):
        await fleet.execute("agent.compact", {"agentId": "ag_crash"}, "c2")


async def test_an_agent_killed_from_outside_is_reported_exited(harness: Harness) -> None:
    fleet = await harness.start()
    result = await fleet.execute("agent.spawn", harness.spawn(agentId="ag_x"), "c1")
    os.kill(result["pid"], 9)
    report = await harness.reporter.wait_for("ag_x", "exited")
    assert report["exit"]["signal"] == "SIGKILL"


async def test_a_program_that_cannot_start_is_failed(harness: Harness) -> None:
    fleet = await harness.start()
    broken = harness.tmp / "broken"
    broken.write_text("#!/nonexistent/interpreter\n")
    broken.chmod(0o755)
    params = {"provider": "command", "providerArgs": [str(broken)], "agentId": "ag_broken"}
    with pytest.raises(CommandRejected, match="^could not start agent: .*broken: "):
        await fleet.execute("agent.spawn", params, "c1")
    report = harness.reporter.reports[-1]
    assert report["status"] == "failed"
    assert report["exit"]["lastOutput"].startswith("could not start agent")


async def test_compact_types_compact_then_reloads_each_memory_file(harness: Harness) -> None:
    fleet = await harness.start()
    record = harness.record()
    (harness.base / "NOTES.md").write_text("remember the milk\nand the eggs\n")
    (harness.base / "docs").mkdir()
    (harness.base / "docs" / "PLAN.md").write_text("step one")
    await fleet.execute("agent.spawn", harness.spawn(record=record, agentId="ag_c"), "c1")
    await record.started()
    result = await fleet.execute(
        "agent.compact",
        {"agentId": "ag_c", "memory": {"alwaysReload": ["NOTES.md", "docs/PLAN.md"]}},
        "c2",
    )
    assert result == {
        "agentId": "ag_c", "compacted": None, "reloaded": ["NOTES.md", "docs/PLAN.md"]
    }
    assert await record.lines(6) == [
        "/compact",
        "@NOTES.md",
        "remember the milk",
        "and the eggs",
        "@docs/PLAN.md",
        "step one",
    ]
    # Without memory: only the compact input.
    assert await fleet.execute("agent.compact", {"agentId": "ag_c"}, "c3") == {
        "agentId": "ag_c",
        "compacted": None,
        "reloaded": [],
    }
    assert await record.line() == "/compact"


async def test_compact_refuses_memory_outside_base_before_typing(harness: Harness) -> None:
    fleet = await harness.start()
    record = harness.record()
    outside = harness.tmp / "outside.md"
    outside.write_text("secret plans")
    (harness.base / "link.md").symlink_to(outside)
    await fleet.execute("agent.spawn", harness.spawn(record=record, agentId="ag_m"), "c1")
    await record.started()
    for path in ("../outside.md", "link.md", str(outside)):
        with pytest.raises(CommandRejected) as caught:
            await fleet.execute(
                "agent.compact", {"agentId": "ag_m", "memory": {"alwaysReload": [path]}}, "c2"
            )
        assert str(caught.value) == (
            "invalid params.memory.alwaysReload[0]: must be within orchestrator base "
            f"directory: {harness.base}"
        )
    (harness.base / "OK.md").write_text("fine")
    (harness.base / "adir").mkdir()
    with pytest.raises(CommandRejected, match=r"alwaysReload\[1\]: not a file: adir$"):
        await fleet.execute(
            "agent.compact",
            {"agentId": "ag_m", "memory": {"alwaysReload": ["OK.md", "adir"]}},
            "c3",
        )
    # Nothing was typed: the next line the agent reads is the next compaction. A
    # missing file is named in the result; the others are reloaded.
    result = await fleet.execute(
        "agent.compact", {"agentId": "ag_m", "memory": {"alwaysReload": ["GONE.md", "OK.md"]}},
        "c4",
    )
    assert result == {"agentId": "ag_m", "compacted": None, "reloaded": ["OK.md"],
                      "missing": ["GONE.md"]}
    assert await record.lines(3) == ["/compact", "@OK.md", "fine"]


async def test_restart_runs_restart_spawn_and_ends_the_old_process(harness: Harness) -> None:
    fleet = await harness.start()
    first, second = harness.record("first"), harness.record("second")
    await fleet.execute(
        "agent.spawn", harness.spawn(record=first, agentId="ag_r", spawnRequestId="sp_1"), "c1"
    )
    old_pid = await first.started()
    params = {
        "agentId": "ag_r",
        "policyName": "p",
        "graceful": True,
        "timeoutMs": 2000,
        "reason": "reconcile-restart",
        "restartSpawn": harness.spawn(
            "--print", "second life", record=second, agentId="ag_r", spawnRequestId="sp_2"
        ),
    }
    result = await fleet.execute("agent.restart", params, "c2")
    new_pid = await second.started()
    assert result == {
        "agentId": "ag_r",
        "spawnRequestId": "sp_2",
        "pid": new_pid,
        "previousPid": old_pid,
    }
    assert new_pid != old_pid
    assert not alive(old_pid)
    report = harness.reporter.reports[-1]
    assert report["status"] == "running"
    assert report["restartCount"] == 1
    assert report["spawnRequestId"] == "sp_2"
    assert report["pid"] == new_pid
    assert harness.store.record("ag_r")["params"]["spawnRequestId"] == "sp_2"  # type: ignore[index]


async def test_restart_without_agent_id_makes_a_new_agent(harness: Harness) -> None:
    fleet = await harness.start()
    await fleet.execute("agent.spawn", harness.spawn(agentId="ag_old", policyName="pol"), "c1")
    restart_spawn = harness.spawn(policyName="pol", spawnRequestId="sp_new")
    result = await fleet.execute(
        "agent.restart", {"policyName": "pol", "restartSpawn": restart_spawn}, "c2"
    )
    assert result["agentId"] != "ag_old"
    statuses = {agent["agentId"]: agent for agent in fleet.agents()}
    assert statuses["ag_old"]["status"] == "stopped"
    assert statuses[result["agentId"]]["status"] == "running"
    assert statuses[result["agentId"]]["restartCount"] == 1
    # The live one wins a lookup by policyName.
    assert fleet.find("agent.stop", {"policyName": "pol"}) == result["agentId"]


async def test_invalid_restart_spawn_leaves_the_agent_running(harness: Harness) -> None:
    fleet = await harness.start()
    result = await fleet.execute("agent.spawn", harness.spawn(agentId="ag_keep"), "c1")
    bad = harness.spawn(agentId="ag_keep", cwd="/")
    with pytest.raises(CommandRejected) as caught:
        await fleet.execute("agent.restart", {"agentId": "ag_keep", "restartSpawn": bad}, "c2")
    assert str(caught.value) == f"cwd must be within orchestrator base directory: {harness.base}"
    for bad_spawn, error in [
        ({"provider": 1}, "invalid params.restartSpawn.provider: expected string"),
        (
            {**harness.spawn(), "provider": "nope"},
            "provider not available on this orchestrator: nope",
        ),
        (
            {**harness.spawn(), "env": {"A=B": "x"}},
            "invalid params.restartSpawn.env: invalid variable name 'A=B'",
        ),
    ]:
        with pytest.raises(CommandRejected) as caught:
            await fleet.execute(
                "agent.restart", {"agentId": "ag_keep", "restartSpawn": bad_spawn}, "c3"
            )
        assert str(caught.value) == error
    await fleet.execute("agent.spawn", harness.spawn(agentId="ag_other"), "c4")
    with pytest.raises(CommandRejected, match="^agent already running: ag_other$"):
        await fleet.execute(
            "agent.restart",
            {"agentId": "ag_keep", "restartSpawn": harness.spawn(agentId="ag_other")},
            "c5",
        )
    assert alive(result["pid"])
    assert {agent["status"] for agent in fleet.agents()} == {"running"}
    assert harness.reporter.statuses("ag_keep") == ["running"]


async def test_orchestrator_restart_and_shutdown(harness: Harness) -> None:
    fleet = await harness.start()
    pids = {}
    for name in ("ag_1", "ag_2", "ag_3"):
        pids[name] = (await fleet.execute("agent.spawn", harness.spawn(agentId=name), name))["pid"]
    assert await fleet.execute("orchestrator.restart", {"agentId": "ag_2"}, "r1") == {
        "restarted": ["ag_2"]
    }
    agents = {agent["agentId"]: agent for agent in fleet.agents()}
    assert agents["ag_2"]["pid"] != pids["ag_2"] and agents["ag_2"]["restartCount"] == 1
    assert agents["ag_1"]["pid"] == pids["ag_1"]
    result = await fleet.execute("orchestrator.restart", {"action": "restart"}, "r2")
    assert result == {"restarted": ["ag_1", "ag_2", "ag_3"]}
    agents = {agent["agentId"]: agent for agent in fleet.agents()}
    assert [agents[name]["restartCount"] for name in ("ag_1", "ag_2", "ag_3")] == [1, 2, 1]
    assert not any(alive(pid) for pid in pids.values())
    assert await fleet.execute("orchestrator.shutdown", {"agentId": "ag_1"}, "s1") == {
        "stopped": ["ag_1"]
    }
    result = await fleet.execute("orchestrator.shutdown", {}, "s2")
    assert result == {"stopped": ["ag_2", "ag_3"]}
    assert {agent["status"] for agent in fleet.agents()} == {"stopped"}
    assert not any(alive(agent["pid"]) for agent in fleet.agents())


async def test_lookup_keys_and_misses(harness: Harness) -> None:
    fleet = await harness.start()
    await fleet.execute("agent.spawn", harness.spawn(agentId="ag_l", spawnRequestId="sp_l"), "c1")
    for params, error in [
        ({"agentId": "ag_nope"}, "no managed agent matches agentId=ag_nope"),
        ({"spawnRequestId": "sp_nope"}, "no managed agent matches spawnRequestId=sp_nope"),
        ({"policyName": "nope"}, "no managed agent matches policyName=nope"),
        ({"tmuxSession": "relay-nope"}, "no managed agent matches tmuxSession=relay-nope"),
        # The first key present decides, even when a later one would match.
        (
            {"agentId": "ag_nope", "spawnRequestId": "sp_l"},
            "no managed agent matches agentId=ag_nope",
        ),
        ({}, "invalid params.agentId: expected string"),
    ]:
        with pytest.raises(CommandRejected) as caught:
            await fleet.execute("agent.stop", params, "c2")
        assert str(caught.value) == error
    with pytest.raises(CommandRejected, match="^no managed agent matches agentId=ag_nope$"):
        await fleet.execute("orchestrator.shutdown", {"agentId": "ag_nope"}, "c3")
    assert fleet.agents()[0]["status"] == "running"


async def test_unsupported_command_type(harness: Harness) -> None:
    fleet = await harness.start()
    with pytest.raises(CommandRejected, match="^unsupported command type: agent.dance$"):
        await fleet.execute("agent.dance", {}, "c1")


async def test_fifty_agents_at_once_then_one_agent_serialized_others_concurrent(
    harness: Harness,
) -> None:
    # ag_00's compaction takes 2 s: its agent sleeps, and its memory file is
    # larger than the pipe holds.
    fleet = await harness.start(harness.config(command={"compact_input": "sleep 2"}))
    (harness.base / "BIG.md").write_text(("y" * 99 + "\n") * 1000)
    records = {f"ag_{i:02d}": harness.record(f"r{i}") for i in range(50)}
    results = {}

    async def spawn(agent_id: str) -> None:
        params = harness.spawn("--term", "exit", record=records[agent_id], agentId=agent_id)
        results[agent_id] = await fleet.execute("agent.spawn", params, agent_id)

    with trio.fail_after(WAIT * 2):
        async with trio.open_nursery() as nursery:
            for agent_id in records:
                nursery.start_soon(spawn, agent_id)
        for agent_id, record in records.items():
            assert await record.started() == results[agent_id]["pid"]
    assert len({result["pid"] for result in results.values()}) == 50
    assert {agent["status"] for agent in fleet.agents()} == {"running"}
    assert all(alive(result["pid"]) for result in results.values())

    # ag_00 compacts (2 s to settle); its stop waits behind it, ag_01's does not.
    finished: list[str] = []

    async def run(name: str, command: str, params: dict[str, object]) -> None:
        await fleet.execute(command, params, name)
        finished.append(name)

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            compact = {"agentId": "ag_00", "memory": {"alwaysReload": ["BIG.md"]}}
            nursery.start_soon(run, "compact-00", "agent.compact", compact)
            assert await records["ag_00"].line() == "sleep 2"  # now compacting
            nursery.start_soon(run, "stop-00", "agent.stop", {"agentId": "ag_00"})
            nursery.start_soon(run, "stop-01", "agent.stop", {"agentId": "ag_01"})
            assert await records["ag_01"].line() == "term"
            after = [await records["ag_00"].line()]
            while after[-1] != "term":
                after.append(await records["ag_00"].line())
    assert finished.index("stop-01") < finished.index("compact-00") < finished.index("stop-00")
    assert after[0] == "@BIG.md" and len(after) == 1002
    result = await fleet.execute("orchestrator.shutdown", {}, "all")
    assert len(result["stopped"]) == 48
