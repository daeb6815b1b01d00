"""Workspaces: where an agent works.

``shared`` runs the agent in its ``cwd``. ``isolated`` gives it a git
worktree of the repository at ``cwd`` on a new branch ``relay/<agentId>``,
made from ``HEAD``:

    git -C <repoRoot> worktree add -b relay/<agentId> <state_dir>/worktrees/<agentId> HEAD

Worktrees live in the orchestrator's state directory, never inside the
user's tree (``baseDir``): nothing appears in the user's repositories but
the branch. The agent runs in the same sub-directory of the worktree as
``cwd`` is of the repository; its memory files may lie in its worktree.
A restart that keeps the agentId keeps its worktree (and its work); a
worktree is never removed here, the relay's workspace flow owns its end.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import attrs
import trio

from ._params import CommandRejected
from ._session import base_environment


@attrs.frozen(kw_only=True)
class Workspace:
    mode: str  # "shared" | "isolated"
    requested_mode: str  # "shared" | "isolated" | "inherit"
    id: str | None = None
    repo_root: str | None = None
    worktree_path: str | None = None
    branch: str | None = None
    base_sha: str | None = None
    status: str = "active"

    def to_json(self) -> dict[str, Any]:
        if self.mode != "isolated":
            return {"mode": self.mode, "requestedMode": self.requested_mode}
        return {
            "mode": self.mode,
            "requestedMode": self.requested_mode,
            "id": self.id,
            "repoRoot": self.repo_root,
            "worktreePath": self.worktree_path,
            "branch": self.branch,
            "baseSha": self.base_sha,
            "status": self.status,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Workspace:
        return cls(
            mode=data["mode"],
            requested_mode=data.get("requestedMode", data["mode"]),
            id=data.get("id"),
            repo_root=data.get("repoRoot"),
            worktree_path=data.get("worktreePath"),
            branch=data.get("branch"),
            base_sha=data.get("baseSha"),
            status=data.get("status", "active"),
        )


@attrs.frozen(kw_only=True)
class Repository:
    root: Path
    head: str
    cwd_in_repo: Path  # cwd relative to root


async def _git(*args: str, cwd: Path) -> tuple[int, str, str]:
    result = await trio.run_process(
        ["git", "-C", str(cwd), *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        stdin=b"",
        # Hooks (post-checkout…) must not see the orchestrator's own variables.
        env={**base_environment(), "GIT_TERMINAL_PROMPT": "0"},
    )
    return (
        result.returncode,
        result.stdout.decode(errors="replace").strip(),
        result.stderr.decode(errors="replace").strip(),
    )


async def probe_repository(cwd: Path) -> Repository:
    """The git repository at ``cwd``, checked before anything is created."""
    code, root, _ = await _git("rev-parse", "--show-toplevel", cwd=cwd)
    if code != 0 or not root:
        raise CommandRejected(
            f"workspaceMode isolated needs a git repository, and cwd is not in one: {cwd}"
        )
    code, head, _ = await _git("rev-parse", "--verify", "HEAD^{commit}", cwd=cwd)
    if code != 0:
        raise CommandRejected(f"workspaceMode isolated needs a commit to start from: {root}")
    root_path = Path(await trio.Path(root).resolve())
    return Repository(root=root_path, head=head, cwd_in_repo=cwd.relative_to(root_path))


async def _is_worktree_on(path: Path, branch: str) -> bool:
    if not await trio.Path(path).is_dir():
        return False
    code, current, _ = await _git("symbolic-ref", "--short", "HEAD", cwd=path)
    return code == 0 and current == branch


async def make_worktree(
    repo: Repository,
    *,
    agent_id: str,
    worktrees_dir: Path,
    requested_mode: str,
    previous: Workspace | None,
) -> Workspace:
    """An isolated worktree for ``agent_id``: its own again, or a new one."""
    branch = f"relay/{agent_id}"
    path = worktrees_dir / agent_id
    same_repo = previous is not None and previous.repo_root == str(repo.root)
    if same_repo and previous is not None and await _is_worktree_on(path, branch):
        return attrs.evolve(previous, requested_mode=requested_mode, status="active")
    await trio.Path(worktrees_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
    await _git("worktree", "prune", cwd=repo.root)
    code, _, _ = await _git(
        "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}", cwd=repo.root
    )
    if code == 0:  # the branch outlived its worktree: check it out again
        args = ["worktree", "add", str(path), branch]
        base = previous.base_sha if same_repo and previous is not None else None
    else:
        args = ["worktree", "add", "-b", branch, str(path), repo.head]
        base = repo.head
    code, _, err = await _git(*args, cwd=repo.root)
    if code != 0:
        raise CommandRejected(f"could not create a git worktree for {agent_id}: {err[-300:]}")
    return Workspace(
        mode="isolated",
        requested_mode=requested_mode,
        id=previous.id if same_repo and previous is not None else f"ws_{os.urandom(8).hex()}",
        repo_root=str(repo.root),
        worktree_path=str(path),
        branch=branch,
        base_sha=base or repo.head,
    )
