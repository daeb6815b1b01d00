"""First-run answers written into a CLI's own settings, and a CLI's own
session id read back from what it wrote."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from pathlib import Path

from actors._cli_config import claude_answers
from actors._sessions import codex_session_id


def claude_home(tmp_path: Path, config: dict[str, object] | None) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    if config is not None:
        path = home / ".claude.json"
        path.write_text(json.dumps(config))
        path.chmod(0o600)
    return {"HOME": str(home)}


def test_trust_and_the_key_go_where_claude_keeps_them(tmp_path: Path) -> None:
    env = claude_home(tmp_path, {"hasCompletedOnboarding": True, "theme": "dark"})
    cwd = tmp_path / "base" / "proj"
    key = "sk-ant-0123456789abcdefghijklmnopqrstuvwxyz"
    assert claude_answers(env, cwd, trust=True, api_key=key) == ["trust", "api-key"]
    path = Path(env["HOME"]) / ".claude.json"
    config = json.loads(path.read_text())
    assert config["projects"][str(cwd)] == {"hasTrustDialogAccepted": True}
    assert config["customApiKeyResponses"]["approved"] == [key[-20:]]
    assert config["theme"] == "dark"  # the rest as it was
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert claude_answers(env, cwd, trust=True, api_key=key) == []  # nothing twice
    assert [p.name for p in path.parent.iterdir()] == [".claude.json"]  # no temporary left


def test_nothing_is_written_without_policy_or_without_claudes_own_file(tmp_path: Path) -> None:
    env = claude_home(tmp_path, {"hasCompletedOnboarding": True})
    before = (Path(env["HOME"]) / ".claude.json").read_text()
    assert claude_answers(env, tmp_path, trust=False, api_key=None) == []
    assert (Path(env["HOME"]) / ".claude.json").read_text() == before
    fresh = {"HOME": str(tmp_path / "nobody")}
    (tmp_path / "nobody").mkdir()
    assert claude_answers(fresh, tmp_path, trust=True, api_key="k" * 30) == []
    assert not (tmp_path / "nobody" / ".claude.json").exists()  # a first run: claude's own


def test_a_file_claude_is_rewriting_is_left_alone(tmp_path: Path) -> None:
    env = claude_home(tmp_path, None)
    path = Path(env["HOME"]) / ".claude.json"
    path.write_text('{"projects": {')  # half written
    assert claude_answers(env, tmp_path, trust=True, api_key=None) == []
    assert path.read_text() == '{"projects": {'


def test_claude_config_dir_wins_over_home(tmp_path: Path) -> None:
    env = claude_home(tmp_path, {"a": 1})
    other = tmp_path / "config"
    other.mkdir()
    (other / ".claude.json").write_text("{}")
    env["CLAUDE_CONFIG_DIR"] = str(other)
    assert claude_answers(env, tmp_path, trust=True, api_key=None) == ["trust"]
    assert "projects" in json.loads((other / ".claude.json").read_text())
    assert "projects" not in json.loads((Path(env["HOME"]) / ".claude.json").read_text())


def test_agents_started_together_each_keep_their_answer(tmp_path: Path) -> None:
    env = claude_home(tmp_path, {})
    folders = [tmp_path / f"p{i}" for i in range(20)]
    threads = [threading.Thread(target=claude_answers, args=(env, f),
                                kwargs={"trust": True, "api_key": None}) for f in folders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    config = json.loads((Path(env["HOME"]) / ".claude.json").read_text())
    assert sorted(config["projects"]) == sorted(str(f) for f in folders)


def rollout(home: Path, session: str, cwd: Path, when: str) -> Path:
    day = time.strftime("%Y/%m/%d")
    directory = home / ".codex" / "sessions" / day
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"rollout-{when}-{session}.jsonl"
    meta = {"timestamp": when, "type": "session_meta",
            "payload": {"id": session, "timestamp": when, "cwd": str(cwd)}}
    path.write_text(json.dumps(meta) + "\n" + json.dumps({"type": "turn"}) + "\n")
    return path


def test_codex_session_is_the_first_begun_in_the_folder_since_the_start(tmp_path: Path) -> None:
    home = tmp_path / "home"
    cwd, other = tmp_path / "proj", tmp_path / "elsewhere"
    env = {"HOME": str(home)}
    since = time.time()
    assert codex_session_id(env, cwd, since=since) is None
    old = rollout(home, "old-session", cwd, "2026-01-01T00:00:00Z")
    os.utime(old, (since - 3600, since - 3600))  # before the agent started
    rollout(home, "other-folder", other, "2026-12-07T10:00:00Z")
    rollout(home, "second", cwd, "2026-12-07T10:00:02Z")
    rollout(home, "first", cwd, "2026-12-07T10:00:01Z")
    assert codex_session_id(env, cwd, since=since) == "first"
    assert codex_session_id(env, cwd, since=since, taken={"first"}) == "second"
    assert codex_session_id(env, cwd, since=since, taken={"first", "second"}) is None
    assert codex_session_id({"HOME": str(home), "CODEX_HOME": str(tmp_path / "x")}, cwd,
                            since=since) is None  # CODEX_HOME wins
