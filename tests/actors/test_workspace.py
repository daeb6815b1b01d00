"""Isolated workspaces: real git worktrees on their own branch."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from actors import CommandRejected

from .conftest import Harness

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed"),
]


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def make_repo(path: Path) -> str:
    (path / "sub").mkdir(parents=True)
    (path / "sub" / "NOTES.md").write_text("from the repo\n")
    git(path, "init", "-q", "-b", "main")
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", "first")
    return git(path, "rev-parse", "HEAD")


async def test_isolated_agent_works_in_its_own_worktree(harness: Harness) -> None:
    repo = harness.base / "app"
    head = make_repo(repo)
    fleet = await harness.start()
    record = harness.record()
    params = harness.spawn(
        record=record, agentId="ag_w", cwd=str(repo / "sub"), workspaceMode="isolated"
    )
    result = await fleet.execute("agent.spawn", params, "c1")
    workspace = result["workspace"]
    worktree = harness.state / "worktrees" / "ag_w"
    assert workspace == {
        "mode": "isolated",
        "requestedMode": "isolated",
        "id": workspace["id"],
        "repoRoot": str(repo.resolve()),
        "worktreePath": str(worktree),
        "branch": "relay/ag_w",
        "baseSha": head,
        "status": "active",
    }
    assert workspace["id"].startswith("ws_")
    assert git(worktree, "symbolic-ref", "--short", "HEAD") == "relay/ag_w"
    assert git(repo, "rev-parse", "relay/ag_w") == head
    assert str(worktree) in git(repo, "worktree", "list")
    await record.started()
    report = harness.reporter.reports[-1]
    assert report["status"] == "running"
    assert report["cwd"] == str(worktree / "sub")  # the same sub-directory, in the worktree
    assert report["workspace"] == workspace
    assert harness.reporter.statuses("ag_w") == ["starting", "running"]
    # Memory paths resolve in the worktree.
    (worktree / "sub" / "NOTES.md").write_text("edited in the worktree\n")
    compact = await fleet.execute(
        "agent.compact", {"agentId": "ag_w", "memory": {"alwaysReload": ["NOTES.md"]}}, "c2"
    )
    assert compact["reloaded"] == ["NOTES.md"]
    assert await record.lines(3) == ["/compact", "@NOTES.md", "edited in the worktree"]

    # A restart that keeps the agentId keeps the worktree (and its work).
    (worktree / "work.txt").write_text("unsaved work")
    restarted = await fleet.execute(
        "agent.restart",
        {"agentId": "ag_w", "restartSpawn": {**params, "spawnRequestId": "sp_2"}},
        "c3",
    )
    assert restarted["agentId"] == "ag_w"
    agent = fleet.agents()[0]
    assert agent["workspace"]["id"] == workspace["id"]
    assert (worktree / "work.txt").read_text() == "unsaved work"


async def test_inherit_takes_the_configured_default(harness: Harness) -> None:
    repo = harness.base / "app"
    make_repo(repo)
    fleet = await harness.start(harness.config(default_workspace_mode="isolated"))
    params = harness.spawn(agentId="ag_i", cwd=str(repo), workspaceMode="inherit")
    result = await fleet.execute("agent.spawn", params, "c1")
    assert result["workspace"]["mode"] == "isolated"
    assert result["workspace"]["requestedMode"] == "inherit"
    shared = await fleet.execute(
        "agent.spawn", harness.spawn(agentId="ag_s", cwd=str(repo), workspaceMode="shared"), "c2"
    )
    assert shared["workspace"] == {"mode": "shared", "requestedMode": "shared"}


async def test_isolated_outside_a_repository_is_refused(harness: Harness) -> None:
    plain = harness.base / "plain"
    plain.mkdir()
    fleet = await harness.start()
    with pytest.raises(CommandRejected) as caught:
        await fleet.execute(
            "agent.spawn", harness.spawn(cwd=str(plain), workspaceMode="isolated"), "c1"
        )
    assert str(caught.value) == (
        f"workspaceMode isolated needs a git repository, and cwd is not in one: {plain.resolve()}"
    )
    assert harness.launcher.specs == []
    assert harness.reporter.reports == []


async def test_branch_left_from_an_earlier_agent_is_checked_out_again(harness: Harness) -> None:
    repo = harness.base / "app"
    make_repo(repo)
    fleet = await harness.start()
    params = harness.spawn(agentId="ag_b", cwd=str(repo), workspaceMode="isolated")
    await fleet.execute("agent.spawn", params, "c1")
    await fleet.execute("agent.stop", {"agentId": "ag_b"}, "c2")
    worktree = harness.state / "worktrees" / "ag_b"
    git(repo, "worktree", "remove", "--force", str(worktree))
    result = await fleet.execute("agent.spawn", params, "c3")
    assert result["workspace"]["branch"] == "relay/ag_b"
    assert git(worktree, "symbolic-ref", "--short", "HEAD") == "relay/ag_b"
