"""The command line's requests to a relay (``ctl``, ``doctor``).

One blocking httpx client built from the settings (URL, token, CA file), no
proxy from the environment (the daemon uses none either); every id that
goes into a path is one percent-encoded segment, so an id holding ``/``,
``?``, ``#`` or a space names that id and not another path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote, urlencode

from .._errors import ConfigError
from .._settings import Settings

if TYPE_CHECKING:
    import httpx  # loaded when a command calls the relay: `run` never needs it

TIMEOUT = 10.0  # seconds for one request, connecting included


def segment(text: str) -> str:
    """``text`` as one path segment."""
    return quote(text, safe="")


def query(**params: str | None) -> str:
    """``?k=v&…`` of the params that are set ("" when none is)."""
    given = {key: value for key, value in params.items() if value is not None and value != ""}
    return "?" + urlencode(given) if given else ""


def relay_client(settings: Settings, token: str | None) -> httpx.Client:
    """A client for ``settings.relay_url`` that sends ``token`` (when there is one)."""
    import ssl

    import httpx

    if not settings.relay_url:
        raise ConfigError("--relay-url is required (or RELAY_ORCHESTRATOR_RELAY_URL)")
    verify: ssl.SSLContext | bool = True
    if settings.ca_file is not None:
        try:
            verify = ssl.create_default_context(cafile=str(settings.ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"--ca-file {settings.ca_file}: {exc}") from exc
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        return httpx.Client(base_url=settings.relay_url, headers=headers, timeout=TIMEOUT,
                            trust_env=False, verify=verify)
    except httpx.InvalidURL as exc:
        raise ConfigError(f"--relay-url {settings.relay_url}: {exc}") from exc
