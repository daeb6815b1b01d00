"""A CLI's first-run questions, answered by the provider's policy.

``trust_workspace`` says which folders the orchestrator trusts for a CLI
that asks (``base-dir``: any, all are inside baseDir; ``worktrees``: only
worktrees it made; ``never``); ``accept_env_api_key`` says whether a key the
spawn passed in ``params.env`` is to be used when the CLI asks. Where the
CLI keeps the answer in settings of its own, it is written there before the
agent starts (``_cli_config.py``); otherwise the question is answered on the
screen (``policy_keys``, for the tracker), and every other question is left
to a person.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import trio

from ._agent import AgentState
from ._cli_config import claude_answers
from ._config import ProviderConfig
from ._params import SpawnParams
from ._prepare import within
from ._screens import Screen, api_key_variable


def trusted(config: ProviderConfig, state: AgentState) -> bool:
    """Whether policy trusts the agent's folder."""
    if config.trust_workspace == "base-dir":
        return True
    if config.trust_workspace == "worktrees":
        tree = state.workspace.worktree_path if state.workspace else None
        return bool(tree) and within(Path(state.cwd), Path(str(tree)))
    return False


def env_api_key(config: ProviderConfig, params: SpawnParams) -> str | None:
    """The CLI's API key from the spawn's env, when policy says to use it."""
    variable = api_key_variable(config.kind)
    if not config.accept_env_api_key or variable is None:
        return None
    return params.env.get(variable)


def policy_keys(
    screen: Screen, *, config: ProviderConfig, state: AgentState, params: SpawnParams
) -> tuple[str, ...] | None:
    """The next key that answers ``screen``'s question, where policy says so."""
    if screen.topic == "trust" and trusted(config, state):
        return screen.answer
    if screen.topic == "api-key" and env_api_key(config, params) is not None:
        return screen.answer
    return None


async def answer_ahead(
    config: ProviderConfig, state: AgentState, params: SpawnParams, env: dict[str, str],
    cwd: Path,
) -> list[str]:
    """Write the answers the CLI keeps in its own settings; what was written."""
    if config.kind != "claude":
        return []
    return await trio.to_thread.run_sync(
        partial(claude_answers, env, cwd, trust=trusted(config, state),
                api_key=env_api_key(config, params))
    )
