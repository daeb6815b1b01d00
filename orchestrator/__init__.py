"""relay-orchestrator: the per-host daemon of Agent Relay.

The process (``run_orchestrator``), its settings, the relay client, the
journal and the errors callers act on. The dev relay lives in
``orchestrator.devrelay._relay`` and is imported only by ``dev`` and ``relay``.
"""

from ._errors import ConfigError as ConfigError
from ._errors import OrchestratorError as OrchestratorError
from ._errors import RelayAuthError as RelayAuthError
from ._errors import RelayConflict as RelayConflict
from ._errors import RelayError as RelayError
from ._errors import RelayNotFound as RelayNotFound
from ._errors import RelayUnavailable as RelayUnavailable
from ._settings import Settings as Settings
from ._settings import load_settings as load_settings
from ._version import __version__ as __version__
from .daemon._app import Orchestrator as Orchestrator
from .daemon._app import run_orchestrator as run_orchestrator
from .daemon._journal import Journal as Journal
from .relay._client import RelayClient as RelayClient
from .relay._wire import Command as Command
from .relay._wire import CommandStatus as CommandStatus
from .relay._wire import Outcome as Outcome

__all__ = [
    "Command",
    "CommandStatus",
    "ConfigError",
    "Journal",
    "Orchestrator",
    "OrchestratorError",
    "Outcome",
    "RelayAuthError",
    "RelayClient",
    "RelayConflict",
    "RelayError",
    "RelayNotFound",
    "RelayUnavailable",
    "Settings",
    "__version__",
    "load_settings",
    "run_orchestrator",
]
