"""Actors: one per managed agent; providers; sessions; workspaces.

Knows processes and agents, never HTTP or the relay: the orchestrator hands
commands to ``AgentFleet.execute`` and takes state changes from a
``Reporter``.

The field reader every input is checked with (``FieldError``, ``Fields``,
``CONFIG_READER``) is exported too: the orchestrator reads its settings and
the upgrade's params with it, so that every input fails in the same way.
"""

from ._config import BUILTIN_PROVIDERS as BUILTIN_PROVIDERS
from ._config import FleetConfig as FleetConfig
from ._config import ProviderConfig as ProviderConfig
from ._config import provider_config_from_table as provider_config_from_table
from ._fields import CONFIG_READER as CONFIG_READER
from ._fields import FieldError as FieldError
from ._fields import Fields as Fields
from ._fleet import AgentFleet as AgentFleet
from ._logins import login_evidence as login_evidence
from ._logins import login_places as login_places
from ._output import LogFollower as LogFollower
from ._output import agent_log_path as agent_log_path
from ._output import rotate_if_needed as rotate_if_needed
from ._output import tail_lines as tail_lines
from ._params import CommandRejected as CommandRejected
from ._store import AgentStore as AgentStore
from ._store import MemoryStore as MemoryStore
from ._store import Reporter as Reporter

__all__ = [
    "BUILTIN_PROVIDERS",
    "CONFIG_READER",
    "AgentFleet",
    "AgentStore",
    "CommandRejected",
    "FieldError",
    "Fields",
    "FleetConfig",
    "LogFollower",
    "MemoryStore",
    "ProviderConfig",
    "Reporter",
    "agent_log_path",
    "login_evidence",
    "login_places",
    "provider_config_from_table",
    "rotate_if_needed",
    "tail_lines",
]
