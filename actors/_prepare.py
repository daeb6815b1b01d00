"""Checks that need the host, done before anything runs.

``FleetContext`` is what all actors of a fleet share (settings, storage,
reports, launcher, tmux server). Its ``prepare`` turns a validated
SpawnParams into a ``Launch``: provider offered, cwd within ``baseDir``
(after resolving symlinks and ``..``), the program found, the git
repository there when the workspace is isolated, the argv built. Nothing
is created or started until a ``Launch`` exists, so ``agent.restart``
prepares its ``restartSpawn`` completely before it stops the agent.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import attrs
import trio

from supervisors import ProcessLauncher

from ._agent import AgentState
from ._config import FleetConfig, ProviderConfig
from ._filewatch import FileWatch
from ._params import CommandRejected, SpawnParams
from ._process import ProcessTables
from ._providers import Provider, find_program
from ._store import AgentStore, Reporter
from ._tmux import TmuxServer
from ._workspace import Repository, probe_repository

MAX_MEMORY_FILE = 1_000_000


def within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


@attrs.frozen(kw_only=True)
class Launch:
    """A spawn, checked and ready to start."""

    agent_id: str
    params: SpawnParams
    provider: ProviderConfig
    argv: Sequence[str]
    cwd: Path  # the requested cwd, resolved
    env: dict[str, str] = attrs.field(repr=False)
    session_kind: str  # "plain" | "tmux"
    workspace_mode: str  # "shared" | "isolated"
    repo: Repository | None = None
    provider_session_id: str | None = None


@attrs.define(eq=False, kw_only=True)
class FleetContext:
    config: FleetConfig
    base_dir: Path  # resolved
    store: AgentStore
    reporter: Reporter
    launcher: ProcessLauncher
    tmux: TmuxServer
    base_env: dict[str, str]
    tmux_available: bool
    boot_id: str | None = None  # this boot's, stored with each record
    files: FileWatch = attrs.field(factory=FileWatch)  # wakes activity trackers on output
    processes: ProcessTables = attrs.field(factory=ProcessTables)  # shared by stops
    nursery: trio.Nursery | None = None
    # Starts a prepared launch under another agentId (restart to a new id).
    launch_elsewhere: Callable[[Launch, int], Awaitable[dict[str, object]]] | None = None
    # Whether the agent with this id is alive (starting, running, stopping).
    is_live: Callable[[str], bool] = lambda agent_id: False
    # The provider session ids the fleet's agents have (a CLI's own session,
    # learnt after its start, is never one of these).
    session_ids: Callable[[], set[str]] = lambda: set()

    @property
    def path(self) -> str | None:
        return self.base_env.get("PATH")

    def provider(self, name: str) -> Provider:
        config = self.config.provider(name)
        provider = Provider(config) if config else None
        if provider is None or not provider.offered(self.path):
            raise CommandRejected(f"provider not available on this orchestrator: {name}")
        return provider

    def resolve_cwd(self, raw: str | None, field: str) -> Path:
        path = self.base_dir if raw is None else Path(raw)
        if not path.is_absolute():
            path = self.base_dir / path
        resolved = Path(os.path.realpath(path))
        if not within(resolved, self.base_dir):
            raise CommandRejected(
                f"cwd must be within orchestrator base directory: {self.config.base_dir}"
            )
        if not resolved.is_dir():
            raise CommandRejected(f"invalid {field}: not a directory: {raw}")
        return resolved

    async def prepare(
        self,
        params: SpawnParams,
        *,
        agent_id: str,
        prefix: str = "params",
        resume_session: str | None = None,
    ) -> Launch:
        cwd = self.resolve_cwd(params.cwd, f"{prefix}.cwd")
        provider = self.provider(params.provider)
        config = provider.config
        kind = config.session or ("tmux" if self.tmux_available else "plain")
        if kind == "tmux" and not self.tmux_available:
            raise CommandRejected(
                f"provider {provider.name} uses tmux sessions; tmux is not on PATH"
            )
        env = {**self.base_env, **params.env}
        session_id = resume_session
        if session_id is None and provider.supports_sessions():
            session_id = str(uuid.uuid4())
        mode = params.workspace_mode
        if mode == "inherit":
            mode = self.config.default_workspace_mode
        repo = await probe_repository(cwd) if mode == "isolated" else None
        trust = config.trust_workspace
        argv = provider.argv(
            params,
            session_id=session_id,
            resume=resume_session is not None,
            trusted=trust == "base-dir" or (trust == "worktrees" and repo is not None),
        )
        if find_program(argv[0], cwd=str(cwd), env=env) is None:
            raise CommandRejected(f"could not start agent: program not found: {argv[0]}")
        return Launch(
            agent_id=agent_id,
            params=params,
            provider=config,
            argv=argv,
            cwd=cwd,
            env=env,
            session_kind=kind,
            workspace_mode=mode,
            repo=repo,
            provider_session_id=session_id,
        )

    def memory_files(
        self, state: AgentState, paths: Sequence[str]
    ) -> tuple[list[tuple[str, str]], list[str]]:
        """Each ``memory.alwaysReload`` file's content, all checked before any is
        sent, and the files that do not exist (named in the result, not fatal)."""
        roots = [self.base_dir]
        if state.workspace is not None and state.workspace.worktree_path:
            roots.append(Path(os.path.realpath(state.workspace.worktree_path)))
        files = []
        missing = []
        for index, given in enumerate(paths):
            field = f"params.memory.alwaysReload[{index}]"
            resolved = Path(os.path.realpath(Path(state.cwd) / given))
            if not any(within(resolved, root) for root in roots):
                raise CommandRejected(
                    f"invalid {field}: must be within orchestrator base directory: "
                    f"{self.config.base_dir}"
                )
            try:
                if resolved.stat().st_size > MAX_MEMORY_FILE:
                    raise CommandRejected(
                        f"invalid {field}: larger than {MAX_MEMORY_FILE} bytes: {given}"
                    )
                content = resolved.read_text(errors="replace")
            except FileNotFoundError:
                missing.append(given)
                continue
            except (IsADirectoryError, NotADirectoryError):
                raise CommandRejected(f"invalid {field}: not a file: {given}") from None
            except PermissionError:
                raise CommandRejected(f"invalid {field}: not readable: {given}") from None
            files.append((given, content))
        return files, missing
