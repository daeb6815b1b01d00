"""Whether a CLI looks logged in: the files and variables each CLI reads."""

from __future__ import annotations

import json
from pathlib import Path

from actors import login_evidence, login_places


def test_nothing_is_no_login(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path)}
    for kind in ("claude", "codex", "gemini", "command"):
        assert login_evidence(kind, env) is None
    files, variables = login_places("claude", env)
    assert files == [f"{tmp_path}/.claude/.credentials.json", f"{tmp_path}/.claude.json"]
    assert variables[0] == "ANTHROPIC_API_KEY"


def test_claude(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path)}
    settings = tmp_path / ".claude.json"
    settings.write_text(json.dumps({"projects": {}}))  # written at first start, before a login
    assert login_evidence("claude", env) is None
    settings.write_text(json.dumps({"oauthAccount": {"emailAddress": "a@b"}}))
    assert login_evidence("claude", env) == str(settings)
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / ".credentials.json").write_text("{}")
    assert login_evidence("claude", {**env, "CLAUDE_CONFIG_DIR": str(other)}) == str(
        other / ".credentials.json")
    assert login_evidence("claude", {"ANTHROPIC_API_KEY": "k"}) == "ANTHROPIC_API_KEY"
    assert login_evidence("claude", {"ANTHROPIC_API_KEY": ""}) is None


def test_codex(tmp_path: Path) -> None:
    (tmp_path / "codex-home").mkdir()
    (tmp_path / "codex-home" / "auth.json").write_text("{}")
    assert login_evidence("codex", {"HOME": str(tmp_path)}) is None
    assert login_evidence("codex", {"CODEX_HOME": str(tmp_path / "codex-home")}) == str(
        tmp_path / "codex-home" / "auth.json")
    assert login_evidence("codex", {"OPENAI_API_KEY": "k"}) == "OPENAI_API_KEY"


def test_gemini(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path)}
    (tmp_path / ".gemini").mkdir()
    dotenv = tmp_path / ".gemini" / ".env"
    dotenv.write_text("OTHER=1\nGEMINI_API_KEY=\n")
    assert login_evidence("gemini", env) is None
    dotenv.write_text("export GEMINI_API_KEY='k'\n")
    assert login_evidence("gemini", env) == f"GEMINI_API_KEY in {dotenv}"
    dotenv.unlink()
    (tmp_path / ".gemini" / "oauth_creds.json").write_text("{}")
    assert login_evidence("gemini", env) == str(tmp_path / ".gemini" / "oauth_creds.json")
    assert login_evidence("gemini", {"GOOGLE_GENAI_USE_GCA": "true"}) == "GOOGLE_GENAI_USE_GCA"
    assert login_evidence("gemini", {"GOOGLE_GENAI_USE_GCA": "false"}) is None
