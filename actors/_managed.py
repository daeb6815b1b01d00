"""One managed agent: its state and record, its process and session.

How an agent starts (its workspace, the first-run answers kept in its CLI's
settings, its session; from the session's start to its record, shielded
from cancellation), how its process is watched (``_process.py``) and its end
recorded (``stopped`` when a stop had begun, ``exited`` otherwise), how its
screen is followed (activity, questions answered by policy, codex's own
session id learnt), and how it is stopped. ``AgentActor`` (``_actor.py``)
adds the mailbox and the commands.

Stopping is one sequence (STYLE.md): the provider's quit input when it has
one (half the timeout), SIGTERM to the process group, SIGKILL after
``timeoutMs``, then the reap awaited (bounded by ``kill_grace``).

An agent's usage is sampled by the fleet (``UsageProbe``, ``_usage.py``); an
agent above a ``memory_max`` that no kernel enforces for it is ended here
(``kill_for_memory``): SIGTERM to its group, SIGKILL after
``memory_kill_grace``, then reported ``exited`` with the limit as its
``exit.reason``, as the kernel's OOM kill of its unit would be.
"""

from __future__ import annotations

import logging
import signal
import time
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import trio

from ._activity import ActivityTracker
from ._agent import AgentState, AgentStatus, ExitInfo, meta_of, now_ms
from ._first_run import answer_ahead, policy_keys
from ._limits import memory_limit_reason
from ._output import make_agent_dir
from ._params import CommandRejected, SpawnParams
from ._plain import PlainSession
from ._prepare import FleetContext, Launch
from ._process import (
    ExitStatus,
    ProcessIdentity,
    ProcessWatch,
    end_tree,
    identify,
    tree_of,
)
from ._screens import Activity, Screen, has_screens
from ._session import LaunchFailed, Session
from ._sessions import codex_session_id
from ._store import RECORD_VERSION
from ._tmux import TmuxSession
from ._typing import Typist
from ._usage import Usage, UsageProbe
from ._workspace import Workspace, make_worktree

log = logging.getLogger("relay_orchestrator.actors")

LAUNCH_BOUND = 30.0  # a start is shielded from cancellation, this long at most
SESSION_LOOK_MAX = 30.0  # a CLI's own session id is looked for at least this often
EARLY_EXIT = 10.0  # an agent that ends this soon after its start: its first lines are kept too
STOPPING_REPORT_DELAY = 0.05  # a stop is reported "stopping" this long after it began, if not over


@attrs.define(eq=False)
class Running:
    """The live process of the agent and its session."""

    watch: ProcessWatch
    session: Session
    probe: UsageProbe | None = None
    stopping: bool = False
    limit_reason: str | None = None  # set once it is being ended for its limit
    finished: trio.Event = attrs.field(factory=trio.Event)
    say_stopping_at: float | None = None  # when a stop still under way is reported
    tracker: ActivityTracker | None = None  # its screen, for providers whose screens are known
    tracker_scope: trio.CancelScope | None = None
    started: float = attrs.field(factory=trio.current_time)
    started_wall: float = attrs.field(factory=time.time)
    learning: bool = False  # its CLI's session id is being looked for



class ManagedAgent:
    """One agent: its state and record, and the process and session it runs in."""

    def __init__(self, agent_id: str, ctx: FleetContext) -> None:
        self.agent_id = agent_id
        self._ctx = ctx
        self.state: AgentState | None = None
        self.params: SpawnParams | None = None
        self._running: Running | None = None
        self._identity: ProcessIdentity | None = None
        self._session_json: dict[str, Any] | None = None
        self._nursery: trio.Nursery | None = None  # the actor's: its process watchers

    # -- records and reports -------------------------------------------------

    def _commit(self, *, durable: bool = False) -> None:
        """Store and report the agent's state (after every change); ``durable``:
        the record is on disk before this returns (else before the report leaves)."""
        assert self.state is not None and self.params is not None
        wire = self.state.to_wire()
        record = {
            "version": RECORD_VERSION,
            "agent": wire,
            "params": self.params.to_wire(),
            "process": self._identity.to_json() if self._identity else None,
            "session": self._session_json,
            "bootId": self._ctx.boot_id,
        }
        try:
            self._ctx.store.save_agent(self.agent_id, record, durable=durable)
        except Exception:
            log.exception("could not store agent %s", self.agent_id)
        self._ctx.reporter.agent_changed(wire)

    @property
    def live(self) -> bool:
        return self.state is not None and self.state.status.live

    # -- usage and limits ----------------------------------------------------

    @property
    def probe(self) -> UsageProbe | None:
        """The usage probe of the running agent (None when it does not run)."""
        return self._running.probe if self._running is not None else None

    def set_usage(self, probe: UsageProbe, usage: Usage) -> None:
        """A sample of the running agent (not stored: the next report carries it)."""
        state = self.state
        if state is not None and state.usage is not usage and self.probe is probe:
            state.usage = usage

    def kill_for_memory(self, probe: UsageProbe, memory_max: str) -> None:
        """End the agent for its memory limit: SIGTERM, then SIGKILL after a grace."""
        running = self._running
        if running is None or running.probe is not probe or running.stopping:
            return
        if running.limit_reason is not None or running.watch.ended.is_set():
            return
        running.limit_reason = memory_limit_reason(memory_max)
        log.warning(
            "agent %s is above its memory limit %s (%d bytes): stopping it",
            self.agent_id, memory_max, self.state.usage.memory_rss if self.state else 0,
        )  # fmt: skip
        running.watch.signal(signal.SIGTERM)
        assert self._nursery is not None
        self._nursery.start_soon(self._kill_after_grace, running)

    async def _kill_after_grace(self, running: Running) -> None:
        with trio.move_on_after(self._ctx.config.memory_kill_grace):
            await running.watch.ended.wait()
        running.watch.signal(signal.SIGKILL)

    def _oom_reason(self, running: Running) -> str | None:
        """The limit as the reason, if the kernel ended the agent's unit for it."""
        if running.limit_reason is not None:
            return running.limit_reason
        if running.probe is None or self.state is None:
            return None
        config = self._ctx.config.provider(self.state.provider)
        if config is None or config.memory_max is None:
            return None
        kills = running.probe.oom_kills()
        return memory_limit_reason(config.memory_max) if kills else None

    def log_rotation(self) -> tuple[str, int, int] | None:
        """(log path, max bytes, backups) of a running agent, for the fleet's sweep."""
        if self._running is None or self._session_json is None or self.state is None:
            return None
        config = self._ctx.config.provider(self.state.provider)
        if config is None:
            return None
        return self._session_json["log"], config.log_max_bytes, config.log_backups

    # -- start and end -------------------------------------------------------

    async def _start(
        self, launch: Launch, restart_count: int, *, resumed: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        ctx = self._ctx
        params = attrs.evolve(launch.params, agent_id=self.agent_id)
        directory = make_agent_dir(ctx.config.state_dir, self.agent_id)
        now = now_ms()
        previous = self.state.workspace if self.state is not None else None
        workspace = Workspace(mode="shared", requested_mode=params.workspace_mode)
        self.params = params
        self._identity = None
        self.state = AgentState(
            agent_id=self.agent_id,
            provider=launch.provider.name,
            status=AgentStatus.STARTING,
            cwd=str(launch.cwd),
            spawn_request_id=params.spawn_request_id,
            policy_name=params.policy_name,
            label=params.label,
            tags=list(params.tags),
            started_at=now,
            last_spawn_at=now,
            last_stop_at=self.state.last_stop_at if self.state is not None else None,
            restart_count=restart_count,
            workspace=workspace,
            meta=meta_of(params, launch.session_kind),
            provider_session_id=launch.provider_session_id,
        )
        if resumed is not None:
            self.state.meta["resumedFrom"] = resumed
            self._commit(durable=True)  # on disk before the process starts: never resumed twice
        cwd = launch.cwd
        try:
            if launch.repo is not None:
                self._commit()  # worktrees take a while: say so
                workspace = await make_worktree(
                    launch.repo,
                    agent_id=self.agent_id,
                    worktrees_dir=ctx.config.state_dir / "worktrees",
                    requested_mode=params.workspace_mode,
                    previous=previous,
                )
                assert workspace.worktree_path is not None
                cwd = Path(workspace.worktree_path) / launch.repo.cwd_in_repo
                self.state.workspace = workspace
                self.state.cwd = str(cwd)
            if launch.session_kind == "tmux":
                assert ctx.nursery is not None
                await ctx.tmux.ensure(ctx.nursery)
            await self._answer_ahead(launch, cwd)
            # From here to the record, a cancellation would lose a started agent.
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + LAUNCH_BOUND
                return self._started(launch, *await self._open_session(launch, cwd, directory))
            raise LaunchFailed(f"the agent did not start within {LAUNCH_BOUND:g} s")
        except CommandRejected as exc:
            self.state.status = AgentStatus.FAILED
            self.state.exit = ExitInfo(
                exit_code=None, signal=None, last_output=str(exc), at=now_ms()
            )
            self._commit()
            if isinstance(exc, LaunchFailed):
                raise
            raise LaunchFailed(str(exc)) from None

    async def _answer_ahead(self, launch: Launch, cwd: Path) -> None:
        """The first-run answers the CLI keeps in its own settings, by policy."""
        assert self.state is not None
        written = await answer_ahead(launch.provider, self.state, launch.params, launch.env, cwd)
        if written:
            log.info("agent %s: %s answered in the CLI's settings", self.agent_id,
                     " and ".join(written))

    async def _open_session(
        self, launch: Launch, cwd: Path, directory: Path
    ) -> tuple[Session, int, float | None]:
        ctx = self._ctx
        name = f"relay-{self.agent_id}"
        if launch.session_kind == "tmux":
            tmux_session, pid = await TmuxSession.start(
                server=ctx.tmux, name=name, argv=launch.argv, cwd=cwd, env=launch.env,
                directory=directory,
            )  # fmt: skip
            return tmux_session, pid, None
        session, launched = await PlainSession.start(
            launcher=ctx.launcher, name=name, argv=launch.argv, cwd=cwd, env=launch.env,
            directory=directory, provider=launch.provider,
        )  # fmt: skip
        return session, launched.pid, launched.started_boottime

    def _started(
        self, launch: Launch, session: Session, pid: int, started_boottime: float | None
    ) -> dict[str, Any]:
        assert self.state is not None and self._nursery is not None
        identity = identify(
            pid, launch.argv, started_boottime=started_boottime
        ) or ProcessIdentity(pid=pid, create_time=0.0, cmdline=tuple(launch.argv))
        unit = self._session_json_unit(session)
        probe = UsageProbe(pid, create_time=identity.create_time, unit=unit)
        running = Running(ProcessWatch.open_started(identity), session, probe)
        self._running = running
        self._identity = identity
        self._session_json = session.to_json()
        self.state.status = AgentStatus.RUNNING
        self.state.pid = pid
        self.state.tmux_session = session.tmux_session
        self.state.exit = None
        self._track(running)
        self._commit()
        self._nursery.start_soon(self._watch, running)
        log.info("agent %s started (pid %d, %s session)", self.agent_id, pid, session.kind)
        return {
            "agentId": self.agent_id,
            "spawnRequestId": self.state.spawn_request_id,
            "pid": pid,
            "tmuxSession": self.state.tmux_session,
            "workspace": self.state.workspace.to_json() if self.state.workspace else None,
        }

    @staticmethod
    def _session_json_unit(session: Session) -> str | None:
        unit = session.to_json().get("unit")
        return unit if isinstance(unit, str) and unit else None

    async def _watch(self, running: Running) -> None:
        status = await running.watch.wait()
        running.watch.close()
        reason = self._oom_reason(running)  # before the unit's cgroup goes away
        early = trio.current_time() - running.started < EARLY_EXIT and not running.stopping
        status, output = await running.session.finish(status, early=early)
        self._ended(running, running.stopping, status, output, reason=reason)

    def _ended(
        self,
        running: Running | None,
        stopping: bool,
        status: ExitStatus,
        output: str,
        *,
        reason: str | None = None,
    ) -> None:
        assert self.state is not None
        now = now_ms()
        self.state.status = AgentStatus.STOPPED if stopping else AgentStatus.EXITED
        self.state.exit = ExitInfo(
            exit_code=status.exit_code,
            signal=status.signal,
            last_output=output,
            at=now,
            reason=reason,
        )
        self.state.last_stop_at = now
        self.state.usage = self.state.usage.ended()
        self.state.activity = self.state.question = None
        if running is not None and running.tracker is not None:
            running.tracker.close()
            if running.tracker_scope is not None:
                running.tracker_scope.cancel()
        if running is not None and running.probe is not None:
            running.probe.close()
        if self._running is running:
            self._running = None
        self._commit()
        if running is not None:
            running.finished.set()
        log.info(
            "agent %s %s (exit code %s, signal %s)",
            self.agent_id, self.state.status.value, status.exit_code, status.signal,
        )  # fmt: skip

    # -- activity ------------------------------------------------------------

    def _track(self, running: Running) -> None:
        """Follow the screen of an agent whose provider's screens are known."""
        assert self.state is not None and self._nursery is not None
        session = running.session
        config = self._ctx.config.provider(self.state.provider)
        if not isinstance(session, TmuxSession) or config is None or not has_screens(config.kind):
            self.state.activity = self.state.question = None
            return
        tracker = ActivityTracker(
            kind=config.kind,
            watched=self._ctx.files.watch(session.log_path),
            capture=session.capture,
            send_keys=session.send_keys,
            answer=self._answer,
            on_change=self._activity_changed,
        )
        running.tracker = tracker
        self.state.activity = Activity.STARTING.value
        self.state.question = None
        self._nursery.start_soon(self._run_tracker, running, tracker)

    async def _run_tracker(self, running: Running, tracker: ActivityTracker) -> None:
        with trio.CancelScope() as scope:
            running.tracker_scope = scope
            if running.finished.is_set():
                return
            try:
                await tracker.run()
            except Exception:  # the agent goes on without its activity, never the fleet
                log.exception("agent %s: its activity is no longer followed", self.agent_id)
                tracker.close()

    def _activity_changed(self, screen: Screen) -> None:
        state = self.state
        if state is None or not state.status.live:
            return
        state.activity = screen.activity.value
        state.question = screen.question
        log.debug("agent %s is %s", self.agent_id, state.activity)  # never the question
        self._commit()
        running = self._running
        config = self._ctx.config.provider(state.provider)
        if (
            screen.activity is Activity.READY
            and state.provider_session_id is None
            and config is not None
            and config.kind == "codex"
            and running is not None
            and not running.learning
            and self._nursery is not None
        ):
            running.learning = True
            self._nursery.start_soon(self._learn_session, running)

    async def _learn_session(self, running: Running) -> None:
        """codex names its session itself: read the id back from what it wrote
        (it may write it only when its first turn begins: looked for again,
        less and less often, while the agent runs)."""
        state = self.state
        try:
            if state is None or self.params is None:
                return
            env = {**self._ctx.base_env, **self.params.env}
            delay = 0.25
            while self._running is running and state.provider_session_id is None:
                found = await trio.to_thread.run_sync(
                    partial(codex_session_id, env, Path(state.cwd),
                            since=running.started_wall, taken=self._ctx.session_ids())
                )
                if found is not None and self._running is running:
                    state.provider_session_id = found
                    self._commit()
                    log.info("agent %s: provider session %s", self.agent_id, found)
                    return
                await trio.sleep(delay)
                delay = min(delay * 2, SESSION_LOOK_MAX)
        finally:
            running.learning = False

    def _answer(self, screen: Screen) -> tuple[str, ...] | None:
        state, params = self.state, self.params
        config = self._ctx.config.provider(state.provider) if state else None
        if state is None or params is None or config is None:
            return None
        return policy_keys(screen, config=config, state=state, params=params)

    def _typist(self, running: Running) -> Typist:
        assert self.state is not None
        config = self._ctx.config.provider(self.state.provider)
        return Typist(
            agent_id=self.agent_id,
            session=running.session,
            ended=running.watch.ended,
            tracker=running.tracker,
            input_timeout=self._ctx.config.input_timeout,
            enter_after=config.enter_after if config is not None else 0.0,
        )

    # -- stop ----------------------------------------------------------------

    async def _stop_running(self, graceful: bool, timeout_ms: int | None) -> None:
        running = self._running
        if running is None:
            return
        assert self.state is not None
        config = self._ctx.config
        timeout = config.stop_timeout if timeout_ms is None else timeout_ms / 1000
        watch = running.watch
        if not watch.ended.is_set():
            running.stopping = True
            running.say_stopping_at = trio.current_time() + STOPPING_REPORT_DELAY
            self.state.status = AgentStatus.STOPPING
            await self._end(running, graceful, within=timeout)
            running.say_stopping_at = None
        with trio.move_on_after(config.kill_grace + timeout + 5):
            await running.finished.wait()
        if not running.finished.is_set():
            raise CommandRejected(f"agent {self.agent_id} did not end after SIGKILL")

    async def _end(self, running: Running, graceful: bool, *, within: float) -> None:
        """The provider's quit input, SIGTERM, then SIGKILL, each in its time."""
        assert self.state is not None
        watch = running.watch
        provider = self._ctx.config.provider(self.state.provider)
        # What it started, before it ends (a CLI's background server, say).
        tree = tree_of(watch.identity.pid, await self._ctx.processes.current())
        if graceful and provider is not None and provider.quit_input:
            deadline = trio.current_time() + within / 2
            with trio.move_on_at(deadline):
                try:
                    typist = self._typist(running)
                    if await typist.ready():  # never into a question
                        await running.session.send(
                            provider.quit_input, enter_after=provider.enter_after
                        )
                except CommandRejected:
                    pass
                await self._until_ended(running, deadline)
            within /= 2
        if graceful and not watch.ended.is_set():
            watch.signal(signal.SIGTERM)
            await self._until_ended(running, trio.current_time() + within)
        if not watch.ended.is_set():
            watch.signal(signal.SIGKILL)
        if tree:  # what outlived it (a CLI's background server): it goes too
            await trio.to_thread.run_sync(end_tree, tree, self._ctx.config.kill_grace)

    async def _until_ended(self, running: Running, deadline: float) -> None:
        """Wait for the agent to end, until ``deadline``; report ``stopping`` if it
        has not ended by ``running.say_stopping_at`` (one that ends sooner goes
        from running to stopped in one report)."""
        watch = running.watch
        say_at = running.say_stopping_at
        if say_at is not None and say_at < deadline:
            with trio.move_on_at(say_at):
                await watch.ended.wait()
            if watch.ended.is_set():
                return
            running.say_stopping_at = None
            if self.state is not None and self.state.status is AgentStatus.STOPPING:
                self._commit()
        with trio.move_on_at(deadline):
            await watch.ended.wait()
