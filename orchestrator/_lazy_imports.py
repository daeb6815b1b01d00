"""``ssl`` and ``hmac``, loaded on first use rather than when trio is imported.

trio imports both when it is imported itself (for ``trio.SSLStream`` and the
cookies of ``trio.DTLSEndpoint``), and both map OpenSSL's libcrypto, with
``ssl`` its own module besides: about 4 MB of the daemon's resident memory,
against a budget of 35 MB. A daemon talking to an ``http://`` relay uses
neither. Until something reads an attribute of one, its ``sys.modules`` entry
is a stand-in; the first read imports the real module, puts it in
``sys.modules``, and from then on the stand-in holds the real module's
attributes, so the references trio took at import keep working for an
``https://`` relay or the dev relay's TLS.

importlib's ``LazyLoader`` is no help here: the import statement itself reads
``__spec__`` of the module it finds in ``sys.modules``, and that read loads
it.
"""

from __future__ import annotations

import importlib
import sys
import threading
import types
from typing import Any

DEFERRED = ("ssl", "hmac")

_lock = threading.Lock()


class _StandIn(types.ModuleType):
    """Forwards every attribute it does not have to the real module."""

    def __getattr__(self, attr: str) -> Any:
        real = _load(self)
        self.__dict__.update(real.__dict__)  # later reads find them directly
        return getattr(real, attr)


def _load(stand_in: _StandIn) -> types.ModuleType:
    name = stand_in.__name__
    with _lock:
        if sys.modules.get(name) is stand_in:
            del sys.modules[name]
            try:
                return importlib.import_module(name)
            except BaseException:
                sys.modules[name] = stand_in
                raise
        return importlib.import_module(name)


def install(names: tuple[str, ...] = DEFERRED) -> None:
    """Put a stand-in in place of each of ``names`` not imported yet."""
    for name in names:
        if name not in sys.modules:
            sys.modules[name] = _StandIn(name, f"{name}, imported on first use (see {__name__})")


install()  # on import: the package imports this module before anything imports trio
