"""Whether an agent CLI looks logged in, from the files and variables it reads.

Nothing is asked of the CLI or its service: each CLI keeps its login in a
file of its own or takes a key from its environment, and their presence is
the evidence (an expired login still looks logged in; the agent's screen
then says ``needs-login``, PROTOCOL §4 ``activity``).

- claude: ``$CLAUDE_CONFIG_DIR`` or ``~/.claude``: ``.credentials.json``
  (a subscription login, on Linux); ``.claude.json`` (in
  ``$CLAUDE_CONFIG_DIR`` or the home) with ``oauthAccount`` (the login,
  whose secret macOS keeps in the Keychain) or ``primaryApiKey``;
  ``ANTHROPIC_API_KEY``, ``ANTHROPIC_AUTH_TOKEN``, ``CLAUDE_CODE_OAUTH_TOKEN``,
  or a cloud provider chosen (``CLAUDE_CODE_USE_BEDROCK``/``_VERTEX``/``_FOUNDRY``).
- codex: ``$CODEX_HOME/auth.json`` (``~/.codex``), ``OPENAI_API_KEY``,
  ``CODEX_API_KEY``.
- gemini: ``$GEMINI_CLI_HOME`` or the home: ``.gemini/oauth_creds.json``;
  ``GEMINI_API_KEY`` (also in ``.gemini/.env`` or ``.env``, which gemini
  loads), ``GOOGLE_GENAI_USE_GCA``/``GOOGLE_GENAI_USE_VERTEXAI`` = true,
  ``GOOGLE_GEMINI_BASE_URL``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from ._sessions import codex_home

API_KEY_VARIABLES: Mapping[str, tuple[str, ...]] = {
    "claude": ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN",
               "CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX", "CLAUDE_CODE_USE_FOUNDRY"),
    "codex": ("OPENAI_API_KEY", "CODEX_API_KEY"),
    "gemini": ("GEMINI_API_KEY", "GOOGLE_GEMINI_BASE_URL"),
}  # fmt: skip
_GEMINI_TRUE = ("GOOGLE_GENAI_USE_GCA", "GOOGLE_GENAI_USE_VERTEXAI")


def login_places(kind: str, env: Mapping[str, str]) -> tuple[list[str], tuple[str, ...]]:
    """Where ``kind`` would find a login: its files, and its variables (the
    usual API key first)."""
    return [str(path) for path in _login_files(kind, env)], API_KEY_VARIABLES.get(kind, ())


def login_evidence(kind: str, env: Mapping[str, str]) -> str | None:
    """What says the CLI ``kind`` is logged in for a process with ``env`` (a
    file or a variable's name, never its value), or None."""
    for name in API_KEY_VARIABLES.get(kind, ()):
        if env.get(name):
            return name
    if kind == "gemini":
        for name in _GEMINI_TRUE:
            if env.get(name, "").lower() == "true":
                return name
    for path in _login_files(kind, env):
        if kind == "claude" and path.name == ".claude.json":
            if _has_key(path, ("oauthAccount", "primaryApiKey")):
                return str(path)
        elif kind == "gemini" and path.name == ".env":
            if _env_file_sets(path, "GEMINI_API_KEY"):
                return f"GEMINI_API_KEY in {path}"
        elif _is_file(path):
            return str(path)
    return None


def _is_file(path: Path) -> bool:
    """``Path.is_file``, but a folder it may not enter is "no" rather than an error."""
    try:
        return path.is_file()
    except OSError:
        return False


def _login_files(kind: str, env: Mapping[str, str]) -> list[Path]:
    home = Path(env["HOME"]) if env.get("HOME") else None
    if kind == "claude":
        config = env.get("CLAUDE_CONFIG_DIR")
        directory = Path(config) if config else (home / ".claude" if home else None)
        settings_home = Path(config) if config else home
        return [p for p in (directory / ".credentials.json" if directory else None,
                            settings_home / ".claude.json" if settings_home else None) if p]
    if kind == "codex":
        root = codex_home(env)
        return [root / "auth.json"] if root else []
    if kind == "gemini":
        base = Path(env["GEMINI_CLI_HOME"]) if env.get("GEMINI_CLI_HOME") else home
        if base is None:
            return []
        return [base / ".gemini" / "oauth_creds.json", base / ".gemini" / ".env", base / ".env"]
    return []


def _has_key(path: Path, keys: tuple[str, ...]) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and any(data.get(key) for key in keys)


def _env_file_sets(path: Path, name: str) -> bool:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, ValueError):
        return False
    for line in text.splitlines():
        key, sep, value = line.strip().removeprefix("export ").partition("=")
        if sep and key.strip() == name and value.strip().strip("'\""):
            return True
    return False
