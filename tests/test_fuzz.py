"""Fuzzed commands through the real dev relay and one real orchestrator.

Hypothesis draws commands of every type (``agent.spawn/stop/restart/compact``,
``orchestrator.restart/shutdown/upgrade``, and unknown ones), well-formed or
malformed: one field at a time given the wrong type, an unknown enum value, a
bad environment name (``=``, NUL, empty), a path that leaves ``baseDir``
(``..``, absolute, through a symlink), a huge string, or params that are not
an object. The property, for each command:

- it is settled (``succeeded`` or ``failed``) within a bound;
- a malformed one is ``failed`` with the sentence naming its bad field
  (``invalid params.<field>: …``, or PROTOCOL.md's own sentences);
- a refused command starts no process (no new child carrying this run's
  marker, no new agent in ``fleet.agents()``), and an invalid ``restart`` or
  a refused command aimed at the resident agent leaves it running, same pid;
- an error never quotes an ``env`` value;
- and, at the end, the orchestrator is still heartbeating.

One relay and one orchestrator serve the whole run. Hypothesis runs in a
worker thread; each example calls into trio (``trio.from_thread.run``).
The run is derandomized and keeps no example database, so CI sees the same
examples every time.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Any

import attrs
import psutil
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors._params import PERMISSION_MODES, REQUESTED_WORKSPACE_MODES

from .conftest import FAKE_AGENT

EXAMPLES_PER_GROUP = 20  # 14 groups: about 260 commands in all (small groups give out)
WAIT = 15  # seconds: the bound on any one command
MAX_TEXT = 4096
MAX_PROMPT = 100_000
MAX_ENV_VALUE = 32_768
RESIDENT = "ag_resident"
SECRET = "fuzz-secret-value-7f3a"


# -- what a case is ------------------------------------------------------------------


@attrs.frozen
class Case:
    type: str
    params: Any
    expect: str  # "succeeded" | "failed"
    needles: tuple[str, ...] = ()  # a failure's error contains one of these
    may_start: bool = False  # only these may start a process
    fresh_agent: bool = False  # params.agentId is filled with a new id at run time
    touches_resident: bool = False  # may stop or restart the resident agent


@attrs.frozen
class World:
    """The paths the strategies need, made once for the run."""

    base: Path
    argv: tuple[str, ...]  # the fake agent, with this run's marker
    outside: Path  # a directory outside baseDir
    link_out: str  # a symlink in baseDir to `outside`
    link_in: str  # a symlink in baseDir to a directory inside it
    file_link_out: str  # a symlink in baseDir to a file outside
    a_file: str  # a regular file in baseDir


# -- values ----------------------------------------------------------------------------

_chars = st.characters(exclude_categories=("Cs",), exclude_characters="\0")
short_text = st.text(_chars, max_size=24)
word = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_-]{0,20}\Z")
# FUZZ_…: a variable that could change how the fake agent runs (PYTHONHOME…) is never drawn.
env_name = st.from_regex(r"\AFUZZ_[A-Z0-9_]{0,15}\Z")
small_json = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | short_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(word, inner, max_size=3),
    max_leaves=5,
)


def huge(limit: int) -> st.SearchStrategy[str]:
    return st.integers(limit + 1, limit + 2000).map(lambda n: "x" * n)


def with_nul(text: st.SearchStrategy[str] = short_text) -> st.SearchStrategy[str]:
    return st.tuples(text, text).map(lambda pair: pair[0] + "\0" + pair[1])


not_string = st.one_of(
    st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.booleans(),
    st.lists(short_text, max_size=2), st.dictionaries(word, short_text, max_size=2),
)
not_integer = st.one_of(
    short_text, st.booleans(), st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.integers(), max_size=2), st.dictionaries(word, st.integers(), max_size=2),
)
not_boolean = st.one_of(st.integers(), short_text, st.lists(st.booleans(), max_size=2),
                        st.dictionaries(word, st.booleans(), max_size=2))
not_object = st.one_of(st.integers(), short_text, st.booleans(),
                       st.lists(small_json, max_size=3))
not_array = st.one_of(st.integers(), short_text, st.booleans(),
                      st.dictionaries(word, short_text, max_size=2))
non_string_item = st.one_of(st.integers(), st.booleans(), st.lists(st.integers(), max_size=1),
                            st.dictionaries(word, st.integers(), max_size=1))


def array_with_bad_item() -> st.SearchStrategy[list[Any]]:
    return st.tuples(st.lists(short_text, max_size=3), non_string_item,
                     st.lists(short_text, max_size=2)).map(lambda t: [*t[0], t[1], *t[2]])


def unknown(choices: tuple[str, ...]) -> st.SearchStrategy[str]:
    return short_text.filter(lambda v: v not in choices)


bad_agent_id = st.one_of(
    st.sampled_from(["", "-x", "_x", "a b", "../ag", "a/b", "ag;rm -rf", "ag\n1", "x" * 129]),
    st.text(_chars, min_size=1, max_size=10).filter(lambda v: any(
        not (c.isascii() and (c.isalnum() or c in "_-")) for c in v)),
)


# -- field tables --------------------------------------------------------------------------

INFO_STRINGS = ("action", "reason", "requestedBy", "orchestratorId")
SPAWN_STRINGS = (
    "model", "providerModel", "effort", "profile", "label", "policyName", "spawnRequestId",
    "cwd", "provider", "prompt", *INFO_STRINGS,
)
SPAWN_ENUMS = {
    "workspaceMode": REQUESTED_WORKSPACE_MODES,
    "permissionMode": PERMISSION_MODES,
    "approvalMode": PERMISSION_MODES,
}
SPAWN_ARRAYS = ("tags", "capabilities", "providerArgs")
TEXT_LIMITS = {"provider": 64, "prompt": MAX_PROMPT}
SELECTORS = ("agentId", "spawnRequestId", "policyName", "tmuxSession")


def bad_field(prefix: str, field: str, value: st.SearchStrategy[Any],
              reason: str = "") -> st.SearchStrategy[tuple[str, Any, str]]:
    """(field, bad value, the start of the error that must name it)."""
    return value.map(lambda v: (field, v, f"invalid {prefix}.{field}{reason}"))


def bad_info_types(prefix: str) -> list[st.SearchStrategy[tuple[str, Any, str]]]:
    """The informational fields every command's params may carry, of the wrong type."""
    return [
        *(bad_field(prefix, name, not_string, ": expected string") for name in INFO_STRINGS),
        bad_field(prefix, "requestedAt", not_integer, ": expected integer"),
    ]


def bad_common(prefix: str) -> list[st.SearchStrategy[tuple[str, Any, str]]]:
    """The informational fields of agent commands: type, range, length, NUL."""
    out = bad_info_types(prefix)
    out += [
        bad_field(prefix, "requestedAt", st.one_of(st.integers(max_value=-1),
                                                   st.integers(min_value=2**53 + 1)),
                  ": must be between"),
        bad_field(prefix, "requestedBy", huge(MAX_TEXT), ": longer than"),
        bad_field(prefix, "reason", with_nul(), ": must not contain NUL"),
    ]
    return out


def bad_spawn_fields(world: World, prefix: str) -> st.SearchStrategy[tuple[str, Any, str]]:
    escape = f"cwd must be within orchestrator base directory: {world.base}"
    choices: list[st.SearchStrategy[tuple[str, Any, str]]] = []
    for name in SPAWN_STRINGS:
        choices.append(bad_field(prefix, name, not_string, ": expected string"))
        choices.append(bad_field(prefix, name, huge(TEXT_LIMITS.get(name, MAX_TEXT)),
                                 ": longer than"))
        choices.append(bad_field(prefix, name, with_nul(), ": must not contain NUL"))
    for name, values in SPAWN_ENUMS.items():
        choices.append(bad_field(prefix, name, not_string, ": expected string"))
        choices.append(bad_field(prefix, name, unknown(values), ": expected one of"))
    for name in SPAWN_ARRAYS:
        choices.append(bad_field(prefix, name, not_array, ": expected array of strings"))
        choices.append(bad_field(prefix, name, array_with_bad_item(), "["))
        choices.append(bad_field(prefix, name, st.just(["t"] * 257), ": more than 256 items"))
    choices += [
        bad_field(prefix, "agentProfile", not_object, ": expected object"),
        bad_field(prefix, "headless", not_boolean, ": expected boolean"),
        bad_field(prefix, "agentId", not_string, ": expected string"),
        bad_field(prefix, "agentId", bad_agent_id, ": expected 1 to 128"),
        bad_field(prefix, "env", not_object, ": expected object of strings"),
        bad_field(prefix, "env", st.sampled_from([{"": SECRET}, {"A=B": SECRET},
                                                  {"A\0B": SECRET}, {"=": SECRET}]),
                  ": invalid variable name"),
        bad_field(prefix, "env", st.dictionaries(env_name, non_string_item, min_size=1,
                                                 max_size=1), "."),
        bad_field(prefix, "env", st.just({"TOKEN": SECRET + "\0tail"}),
                  ".TOKEN: value must not contain NUL"),
        bad_field(prefix, "env", st.just({"TOKEN": SECRET + "x" * MAX_ENV_VALUE}),
                  ".TOKEN: value longer than"),
        bad_field(prefix, "env", st.just({f"K{i}": SECRET for i in range(257)}),
                  ": more than 256 variables"),
        *bad_common(prefix),
        # Well-typed, refused all the same: PROTOCOL.md's sentences.
        st.sampled_from([
            "..", "../..", "/", str(world.outside), str(world.base / ".."), world.link_out,
            f"{world.link_out}/.", f"{world.link_in}/../..", str(world.base) + "/../x",
        ]).map(lambda v: ("cwd", v, escape)),
        st.sampled_from(["nope", world.a_file]).map(
            lambda v: ("cwd", v, f"invalid {prefix}.cwd: not a directory")),
        unknown(("command",)).filter(lambda v: 0 < len(v) <= 64).map(
            lambda v: ("provider", v, f"provider not available on this orchestrator: {v}")),
        st.just(("providerArgs", [], f"invalid {prefix}.providerArgs: provider command runs")),
    ]
    return st.one_of(choices)


# -- well-formed params --------------------------------------------------------------------


def good_spawn(world: World) -> st.SearchStrategy[dict[str, Any]]:
    optional = st.fixed_dictionaries({}, optional={
        "model": short_text, "providerModel": short_text, "effort": short_text,
        "profile": short_text, "label": short_text, "policyName": short_text,
        "spawnRequestId": word.map(lambda w: "sp_" + w),
        "tags": st.lists(short_text, max_size=4),
        "capabilities": st.lists(short_text, max_size=3),
        "agentProfile": st.dictionaries(word, small_json, max_size=2),
        "permissionMode": st.sampled_from(PERMISSION_MODES),
        "approvalMode": st.sampled_from(PERMISSION_MODES),
        "workspaceMode": st.sampled_from(("shared", "inherit")),
        "headless": st.booleans(),
        "prompt": short_text,
        "requestedBy": short_text,
        "requestedAt": st.integers(0, 2**53),
        "reason": short_text,
        "action": st.just("spawn"),
        "env": st.dictionaries(env_name, st.just(SECRET), max_size=3),
        "cwd": st.sampled_from([str(world.base), ".", "sub", world.link_in,
                                f"{world.link_in}/..", str(world.base / "sub" / "..")]),
        "unknownExtra": small_json,
    })
    return optional.map(lambda extra: {
        "provider": "command", "providerArgs": list(world.argv), **extra})


def spawn_cases(world: World) -> tuple[st.SearchStrategy[Case], st.SearchStrategy[Case]]:
    """(well-formed, malformed or refused) spawns."""
    good = good_spawn(world).map(lambda p: Case(
        "agent.spawn", p, "succeeded", may_start=True, fresh_agent=True))
    bad = st.tuples(good_spawn(world), bad_spawn_fields(world, "params")).map(
        lambda t: Case("agent.spawn", {**t[0], t[1][0]: t[1][1]}, "failed", (t[1][2],),
                       fresh_agent=t[1][0] != "agentId"))
    refused = good_spawn(world).flatmap(lambda p: st.sampled_from([
        ({**p, "workspaceMode": "isolated"}, "workspaceMode isolated"),
        ({**p, "providerArgs": ["no-such-program-" + uuid.uuid4().hex[:6]]},
         "could not start agent: program not found"),
    ])).map(lambda t: Case("agent.spawn", t[0], "failed", (t[1],), fresh_agent=True))
    return good, st.one_of(bad, bad, bad, refused)


def stopping_fields(prefix: str = "params") -> list[st.SearchStrategy[tuple[str, Any, str]]]:
    out = [
        bad_field(prefix, "graceful", not_boolean, ": expected boolean"),
        bad_field(prefix, "timeoutMs", not_integer, ": expected integer"),
        bad_field(prefix, "timeoutMs", st.one_of(st.integers(max_value=-1),
                                                 st.integers(min_value=86_400_001)),
                  ": must be between"),
    ]
    for name in SELECTORS[1:]:
        out.append(bad_field(prefix, name, not_string, ": expected string"))
        out.append(bad_field(prefix, name, huge(MAX_TEXT), ": longer than"))
    out.append(bad_field(prefix, "agentId", not_string, ": expected string"))
    out.append(bad_field(prefix, "agentId", bad_agent_id.filter(bool), ": expected 1 to 128"))
    return [*out, *bad_common(prefix)]


def good_stopping() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional={
        "graceful": st.booleans(), "timeoutMs": st.integers(0, 5000),
        "reason": short_text, "requestedBy": short_text, "requestedAt": st.integers(0, 2**53),
    })


unknown_agent = word.map(lambda w: "ag_unknown_" + w)


def stop_cases() -> tuple[st.SearchStrategy[Case], st.SearchStrategy[Case]]:
    good = st.tuples(good_stopping(), st.sampled_from(SELECTORS), unknown_agent).map(
        lambda t: Case("agent.stop", {**t[0], t[1]: t[2]}, "failed",
                       (f"no managed agent matches {t[1]}=",)))
    # Aimed at the resident agent: were the bad field let through, it would stop.
    bad = st.tuples(good_stopping(), st.one_of(stopping_fields())).map(
        lambda t: Case("agent.stop", {**t[0], "agentId": RESIDENT, t[1][0]: t[1][1]},
                       "failed", (t[1][2],)))
    no_selector = good_stopping().map(
        lambda p: Case("agent.stop", p, "failed", ("invalid params.agentId",)))
    return good, st.one_of(bad, bad, no_selector)


def restart_cases(world: World) -> tuple[st.SearchStrategy[Case], st.SearchStrategy[Case]]:
    resident_spawn = good_spawn(world).map(lambda p: {**p, "agentId": RESIDENT})
    good = st.tuples(good_stopping(), resident_spawn).map(lambda t: Case(
        "agent.restart", {**t[0], "agentId": RESIDENT, "restartSpawn": t[1]}, "succeeded",
        may_start=True, touches_resident=True))
    bad_spawn = st.tuples(resident_spawn, bad_spawn_fields(world, "params.restartSpawn")).map(
        lambda t: Case("agent.restart", {"agentId": RESIDENT,
                                         "restartSpawn": {**t[0], t[1][0]: t[1][1]}},
                       "failed", (t[1][2],)))
    bad_own = st.tuples(resident_spawn, st.one_of(stopping_fields())).map(
        lambda t: Case("agent.restart", {"agentId": RESIDENT, "restartSpawn": t[0],
                                         t[1][0]: t[1][1]}, "failed", (t[1][2],)))
    not_obj = not_object.map(lambda v: Case(
        "agent.restart", {"agentId": RESIDENT, "restartSpawn": v}, "failed",
        ("invalid params.restartSpawn: expected object",)))
    return good, st.one_of(bad_spawn, bad_spawn, bad_spawn, bad_own, not_obj)


def compact_cases(world: World) -> tuple[st.SearchStrategy[Case], st.SearchStrategy[Case]]:
    field = "invalid params.memory.alwaysReload"
    escape = f"{field}[0]: must be within orchestrator base directory"
    # a missing file is no refusal: the compaction goes ahead and names it (result.missing)
    good = st.lists(st.sampled_from(["NOTES.md", "sub/MORE.md", f"{world.link_in}/MORE.md",
                                     "missing.md"]),
                    max_size=3).map(lambda paths: Case(
                        "agent.compact",
                        {"agentId": RESIDENT, "memory": {"alwaysReload": paths}},
                        "succeeded"))
    bad = st.one_of(
        not_object.map(lambda v: ("memory", v, "invalid params.memory: expected object")),
        not_array.map(lambda v: ("memory", {"alwaysReload": v}, f"{field}: expected array")),
        array_with_bad_item().map(lambda v: ("memory", {"alwaysReload": v}, f"{field}[")),
        st.sampled_from([
            "../outside.txt", "/etc/hostname", str(world.outside / "secret.txt"),
            world.file_link_out, f"{world.link_out}/secret.txt", "sub/../../outside.txt",
        ]).map(lambda p: ("memory", {"alwaysReload": [p, "NOTES.md"]}, escape)),
        st.just(("memory", {"alwaysReload": ["."]}, f"{field}[0]: not a file")),
        st.one_of(bad_common("params")),
        bad_field("params", "agentId", not_string, ": expected string"),
    )
    bad_cases = bad.map(lambda t: Case(
        "agent.compact", {"agentId": RESIDENT, t[0]: t[1]}, "failed", (t[2],)))
    return good, bad_cases


def host_cases() -> tuple[st.SearchStrategy[Case], st.SearchStrategy[Case]]:
    kinds = st.sampled_from(["orchestrator.restart", "orchestrator.shutdown"])
    unknown_target = st.tuples(kinds, good_stopping(), unknown_agent).map(lambda t: Case(
        t[0], {**t[1], "agentId": t[2]}, "failed", ("no managed agent matches agentId=",)))
    restart_resident = good_stopping().map(lambda p: Case(
        "orchestrator.restart", {**p, "agentId": RESIDENT}, "succeeded", may_start=True,
        touches_resident=True))
    bad = st.tuples(kinds, good_stopping(), st.one_of(stopping_fields())).map(
        lambda t: Case(t[0], {**t[1], "agentId": RESIDENT, t[2][0]: t[2][1]}, "failed",
                       (t[2][2],)))
    return st.one_of(unknown_target, restart_resident), bad


def upgrade_cases() -> tuple[st.SearchStrategy[Case], st.SearchStrategy[Case]]:
    refusal = "self-upgrade needs systemd or launchd supervision and a known unit"
    good = st.fixed_dictionaries(
        {"targetVersion": st.sampled_from(["9.9.9", "10.0.0", "99.1.2"])},
        optional={"force": st.booleans(), "providers": st.just(["orchestrator"]),
                  "action": st.just("upgrade"), "orchestratorId": word,
                  "fromVersion": st.just("0.1.0"), "requestedBy": short_text,
                  "requestedAt": st.integers(0, 2**53)})
    bad = st.one_of(
        bad_field("params", "targetVersion", not_string, ": expected string"),
        st.sampled_from(["latest", "1.2", "v1.2.3", "1.2.3.4.5", ""]).map(
            lambda v: ("targetVersion", v, "targetVersion must be a semver version")),
        bad_field("params", "force", not_boolean, ": expected boolean"),
        bad_field("params", "providers", st.one_of(not_array, array_with_bad_item()),
                  ": expected array of strings"),
        st.just(("providers", ["orchestrator", "left-pad"], "unknown runtime packages")),
        st.just(("targetVersion", "0.0.1", "refusing downgrade")),
        bad_field("params", "fromVersion", not_string, ": expected string"),
        *bad_info_types("params"),
    )
    return (
        good.map(lambda p: Case("orchestrator.upgrade", p, "failed", (refusal,))),
        st.tuples(good, bad).map(lambda t: Case(
            "orchestrator.upgrade", {**t[0], "force": False, t[1][0]: t[1][1]}
            if t[1][0] == "targetVersion" and t[1][1] == "0.0.1" else {**t[0], t[1][0]: t[1][1]},
            "failed", (t[1][2],))),
    )


ALL_TYPES = ("agent.spawn", "agent.stop", "agent.restart", "agent.compact",
             "orchestrator.restart", "orchestrator.shutdown", "orchestrator.upgrade")


def odd_cases() -> tuple[st.SearchStrategy[Case], st.SearchStrategy[Case]]:
    """(params that are no object, unknown command types)."""
    non_object = st.tuples(st.sampled_from(ALL_TYPES), st.one_of(st.none(), not_object)).map(
        lambda t: Case(t[0], t[1], "failed", ("invalid params: expected object",)))
    unknown_type = st.tuples(
        st.one_of(st.sampled_from(["agent.dance", "orchestrator.reboot", "AGENT.SPAWN", "x"]),
                  word.map(lambda w: "agent." + w).filter(
                      lambda t: t not in ALL_TYPES)),
        small_json,
    ).map(lambda t: Case(t[0], t[1], "failed", (f"unsupported command type: {t[0]}",)))
    return non_object, unknown_type


def command_groups(world: World) -> dict[str, st.SearchStrategy[Case]]:
    """Each type, well-formed and malformed apart: each gets its share of the examples."""
    groups = {
        "agent.spawn": spawn_cases(world),
        "agent.stop": stop_cases(),
        "agent.restart": restart_cases(world),
        "agent.compact": compact_cases(world),
        "orchestrator.restart/shutdown": host_cases(),
        "orchestrator.upgrade": upgrade_cases(),
    }
    out = {}
    for name, (good, bad) in groups.items():
        out[f"{name}, well-formed"] = good
        out[f"{name}, malformed"] = bad
    out["params not an object"], out["unknown types"] = odd_cases()
    return out


# -- the run ---------------------------------------------------------------------------


def make_world(tmp_path: Path, marker: str) -> World:
    base = (tmp_path / "base").resolve()
    (base / "sub").mkdir(parents=True, exist_ok=True)
    (base / "NOTES.md").write_text("notes\n")
    (base / "sub" / "MORE.md").write_text("more\n")
    outside = (tmp_path / "outside").resolve()
    outside.mkdir()
    (outside / "secret.txt").write_text("outside\n")
    (tmp_path / "outside.txt").write_text("outside\n")
    (base / "link_out").symlink_to(outside)
    (base / "link_in").symlink_to(base / "sub")
    (base / "secret-link.md").symlink_to(outside / "secret.txt")
    (base / "a-file").write_text("")
    return World(
        base=base,
        argv=(sys.executable, FAKE_AGENT, "--term", "exit", "--print", marker),
        outside=outside, link_out="link_out", link_in="link_in",
        file_link_out="secret-link.md", a_file="a-file",
    )


def marked_children(marker: str) -> set[int]:
    """Live (not zombie) children of this process that run this run's fake agent."""
    found = set()
    for child in psutil.Process().children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE and marker in child.cmdline():
                found.add(child.pid)
        except psutil.Error:
            pass
    return found


def alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class Runner:
    def __init__(self, relay: Any, orch: Any, world: World, marker: str) -> None:
        self.relay = relay
        self.orch = orch
        self.world = world
        self.marker = marker
        self.counter = 0
        self.resident_pid: int | None = None
        self.tally: dict[str, int] = {}
        self.timing: dict[str, float] = {}

    async def settle(self, type_: str, params: Any) -> dict[str, Any]:
        command = self.relay.create_command(self.orch.agent_id, type_, params)
        cid = command["id"]

        def done() -> bool:
            return self.relay.get_command(cid)["status"] in ("succeeded", "failed")

        with trio.fail_after(WAIT):
            await self.relay.wait_for(done)
        result: dict[str, Any] = self.relay.get_command(cid)
        return result

    async def start_resident(self) -> None:
        params = {"provider": "command", "agentId": RESIDENT, "cwd": str(self.world.base),
                  "providerArgs": list(self.world.argv)}
        command = await self.settle("agent.spawn", params)
        assert command["status"] == "succeeded", command
        self.resident_pid = command["result"]["pid"]

    def resident(self) -> dict[str, Any] | None:
        return next((a for a in self.orch.fleet.agents() if a["agentId"] == RESIDENT), None)

    async def run(self, case: Case) -> None:
        params = case.params
        fresh = None
        if case.fresh_agent and isinstance(params, dict):
            self.counter += 1
            fresh = f"ag_fuzz_{self.counter}"
            params = {**params, "agentId": fresh}
        before_children = marked_children(self.marker)
        before_agents = {a["agentId"] for a in self.orch.fleet.agents()}
        command = await self.settle(case.type, params)
        status, error = command["status"], command["error"]
        key = f"{case.type} {case.expect}"
        self.tally[key] = self.tally.get(key, 0) + 1

        assert status == case.expect, (case, command)
        if status == "failed":
            assert isinstance(error, str) and error
            assert SECRET not in error, error
            if case.needles:
                assert any(n in error for n in case.needles), (error, case.needles)
        if status == "failed" or not case.may_start:
            new = marked_children(self.marker) - before_children
            assert not new, f"{case.type} was refused but started {new}: {error}"
            agents = {a["agentId"] for a in self.orch.fleet.agents()}
            if case.type == "agent.spawn" and fresh is not None:
                failed_start = [a for a in self.orch.fleet.agents()
                                if a["agentId"] == fresh and a["status"] != "failed"]
                assert not failed_start, failed_start
            else:
                assert agents <= before_agents, agents - before_agents
        resident = self.resident()
        assert resident is not None and resident["status"] == "running", resident
        if case.touches_resident and status == "succeeded":
            self.resident_pid = resident["pid"]
        assert resident["pid"] == self.resident_pid, (case, resident)
        assert alive(self.resident_pid)
        if case.type == "agent.spawn" and status == "succeeded":
            pid = command["result"]["pid"]
            assert pid in marked_children(self.marker)
            stop = await self.settle("agent.stop", {"agentId": fresh, "timeoutMs": 5000})
            assert stop["status"] == "succeeded", stop
            assert not alive(pid)


async def test_fuzzed_commands_are_settled_and_refused_safely(
    relay: Any, start_orchestrator: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    marker = f"fuzz-marker-{uuid.uuid4().hex[:10]}"
    world = make_world(tmp_path, marker)
    orch = await start_orchestrator(
        heartbeat_interval="0.2",
        providers={"command": {"enabled": True, "session": "plain",
                               "compact_settle_seconds": 0.01}},
    )
    runner = Runner(relay, orch, world, marker)
    await runner.start_resident()

    beats = relay.orchestrator(orch.id)["heartbeats"]
    for name, strategy in command_groups(world).items():
        started = trio.current_time()

        @settings(max_examples=EXAMPLES_PER_GROUP, deadline=None, derandomize=True,
                  database=None, suppress_health_check=list(HealthCheck), print_blob=False)
        @given(case=strategy)
        def property_holds(case: Case) -> None:
            trio.from_thread.run(runner.run, case)

        await trio.to_thread.run_sync(property_holds)
        runner.timing[name] = trio.current_time() - started
    # Still heartbeating after the storm, and still online.
    with trio.fail_after(WAIT):
        await relay.wait_for(lambda: relay.orchestrator(orch.id)["heartbeats"] >= beats + 3)
    assert relay.orchestrator(orch.id)["status"] == "online"
    # Nothing the relay sent was unreadable to the orchestrator (every command parsed).
    assert not [r for r in caplog.records if "ignoring" in r.getMessage()]
    # Every type was drawn, and spawns both well-formed and malformed.
    drawn = {key.split()[0] for key in runner.tally}
    assert set(ALL_TYPES) <= drawn, runner.tally
    assert runner.tally.get("agent.spawn succeeded", 0) >= 5, runner.tally
    if os.environ.get("FUZZ_VERBOSE"):
        print(runner.tally, runner.timing)


async def test_unicode_line_separators_in_params_lose_no_command(
    relay: Any, start_orchestrator: Any
) -> None:
    """SSE lines end at CR or LF only: U+2028/U+2029/U+0085 inside a JSON string
    (which the relay need not escape) must not split the event (a fuzz find)."""
    orch = await start_orchestrator()
    separators = "a\u2028b\u2029c\x85d\x1ce\rf\ng\r\nh"
    ids = [relay.create_command(orch.agent_id, "agent.stop",
                                {"agentId": f"ag_sep_{i}", "reason": separators})["id"]
           for i in range(3)]
    with trio.fail_after(WAIT):
        await relay.wait_for(lambda: all(
            relay.get_command(cid)["status"] == "failed" for cid in ids))
    for cid in ids:
        assert relay.get_command(cid)["error"].startswith("no managed agent matches agentId=")
