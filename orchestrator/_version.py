"""The running version: the installed distribution's metadata version."""

from __future__ import annotations

import os
import re
import sys

DISTRIBUTION = "relay-orchestrator"
_NORMALIZED = "relay_orchestrator"


def current_version() -> str:
    """What ``importlib.metadata.version`` says, found the way it finds it
    (the first ``*.dist-info``/``*.egg-info`` of ours along ``sys.path``) but
    read directly: the daemon does without ``importlib.metadata`` and the
    ``email`` parser it loads (docs/performance.md, "Memory"). Anything
    unusual is left to it."""
    version = _version_on_path()
    if version is not None:
        return version
    from importlib import metadata

    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0"


def _version_on_path() -> str | None:
    for entry in sys.path:
        root = entry or "."
        try:
            children = os.listdir(root)
        except OSError:
            continue  # a zip or a missing directory: not where we are installed
        for child in children:  # in listing order, as importlib.metadata takes them
            low = child.lower()
            if not low.endswith((".dist-info", ".egg-info")):
                continue
            name = low.rpartition(".")[0].partition("-")[0]
            if re.sub(r"[-_.]+", "_", name) != _NORMALIZED:
                continue
            return _read_version(os.path.join(root, child))  # the first one found is it
    return None


def _read_version(path: str) -> str | None:
    candidates = [os.path.join(path, "METADATA"), os.path.join(path, "PKG-INFO"), path]
    for candidate in candidates:
        try:
            with open(candidate, encoding="utf-8") as file:
                for line in file:
                    if not line.strip():
                        break  # the end of the headers
                    key, sep, value = line.partition(":")
                    if sep and key.strip().lower() == "version" and value.strip():
                        return value.strip()
        except (OSError, UnicodeDecodeError):
            continue
    return None


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
