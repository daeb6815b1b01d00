"""The running version: the installed distribution's metadata version."""

from __future__ import annotations

import re
from importlib import metadata

DISTRIBUTION = "relay-orchestrator"


def current_version() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0"


__version__ = current_version()

_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$"
)
_CORE = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)")


def is_semver(text: object) -> bool:
    return isinstance(text, str) and len(text) <= 128 and _SEMVER.match(text) is not None


def version_core(text: str) -> tuple[int, int, int]:
    """Numeric MAJOR.MINOR.PATCH, as the relay's rails compare (0.5.0.dev3 → (0, 5, 0))."""
    match = _CORE.match(text)
    if match is None:
        return (0, 0, 0)
    return (int(match[1]), int(match[2]), int(match[3]))
