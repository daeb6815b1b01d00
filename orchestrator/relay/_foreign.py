"""Foreign errors into the ``RelayError`` tree: the one place that knows them.

    with relay_errors("PATCH", base_url, path, timeout, bounded=True):
        status, body = await transport.exchange(...)

An exchange with the relay goes through httpx (an ``https://`` relay), or
through our own transport, whose errors are httpx's kinds by contract (it is
an httpx transport; ``http/_connection.py`` raises them from the socket's);
h11 may sit under either, and trio's streams and sockets under all. What
escapes an exchange leaves it through here, as what the caller does next:

- no answer in time (the context's own deadline, or a ``trio.TooSlowError``
  from within) → ``RelayUnavailable``, "no answer within T s";
- the exchange failed on the way: ``httpx.HTTPError`` (connect, read, write,
  timeouts, a malformed answer...), ``h11.RemoteProtocolError``, ``OSError``
  (refused, reset, TLS), ``trio.BrokenResourceError`` or
  ``ClosedResourceError`` → ``RelayUnavailable``: back off and retry (the
  request may have reached the relay);
- our request could not be sent as it is: ``httpx.LocalProtocolError``,
  ``httpx.UnsupportedProtocol``, ``h11.LocalProtocolError`` → ``RelayError``
  (it never left);
- anything else is left as it is: a bug stays a bug.

The message names the request and the error's kind, with its root cause
(a TLS failure says why): ``GET http://relay/api/x: ConnectError: [Errno
111] Connection refused``. httpx and h11 are never imported here: an error
of theirs can only exist once they are loaded.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncGenerator, AsyncIterator
from types import TracebackType

import trio

from .._errors import RelayError, RelayUnavailable

_SOCKET_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)


def relay_error(exc: BaseException, what: str, timeout: float) -> RelayError | None:
    """The ``RelayError`` that ``exc`` becomes (``what``: the request, say
    ``GET http://relay/api/x``), or None: not a foreign error, left as it is."""
    if isinstance(exc, RelayError) or not isinstance(exc, Exception):
        return None  # ours already; or Cancelled, KeyboardInterrupt: never translated
    if isinstance(exc, trio.TooSlowError):
        return RelayUnavailable(f"{what}: no answer within {timeout:g} s")
    local = False
    if (httpx := sys.modules.get("httpx")) is not None and isinstance(exc, httpx.HTTPError):
        local = isinstance(exc, (httpx.LocalProtocolError, httpx.UnsupportedProtocol))
    elif (h11 := sys.modules.get("h11")) is not None and isinstance(exc, h11.ProtocolError):
        local = isinstance(exc, h11.LocalProtocolError)
    elif not isinstance(exc, _SOCKET_ERRORS):
        return None
    kind = RelayError if local else RelayUnavailable
    return kind(f"{what}: {describe(exc)}")


def describe(exc: BaseException) -> str:
    """The error in words, its kind first, with its root cause."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    cause = exc.__cause__ or exc.__context__
    while cause is not None and cause.__cause__ is not None:
        cause = cause.__cause__
    if cause is not None and str(cause) and str(cause) not in text:
        text += f" ({type(cause).__name__}: {cause})"
    return text


class _RelayErrors:
    """The context manager ``relay_errors`` gives (a class, not a generator:
    it stands around every request of the hot path)."""

    __slots__ = ("_method", "_base", "_path", "_timeout", "_scope")

    def __init__(self, method: str, base: str, path: str, timeout: float,
                 scope: trio.CancelScope | None) -> None:
        self._method = method
        self._base = base
        self._path = path
        self._timeout = timeout
        self._scope = scope

    @property
    def what(self) -> str:
        return f"{self._method} {self._base}{self._path}"

    def __enter__(self) -> _RelayErrors:
        if self._scope is not None:
            self._scope.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._scope is not None:
            self._scope.__exit__(kind, exc, traceback)
            if self._scope.cancelled_caught:  # the deadline passed; its Cancelled is gone
                raise RelayUnavailable(
                    f"{self.what}: no answer within {self._timeout:g} s") from None
        if exc is not None and (error := relay_error(exc, self.what, self._timeout)) is not None:
            raise error from exc

    async def parts(self, parts: AsyncIterator[bytes]) -> AsyncGenerator[bytes, None]:
        """``parts`` (a body read as it arrives), with what the reading raises
        translated; what the consumer raises between two parts is not ours."""
        while True:
            try:
                part = await anext(parts)
            except StopAsyncIteration:
                return
            except Exception as exc:
                if (error := relay_error(exc, self.what, self._timeout)) is None:
                    raise
                raise error from exc
            yield part


def relay_errors(method: str, base: str, path: str, timeout: float, *,
                 bounded: bool = False) -> _RelayErrors:
    """A context in which foreign errors become the ``RelayError`` tree (the
    table above), naming the request ``method base+path``. ``bounded``: the
    context has ``timeout`` seconds, then it is cancelled and raises
    ``RelayUnavailable`` (no answer within ``timeout``); else ``timeout`` is
    only what a ``trio.TooSlowError`` from within is said to have waited."""
    scope = trio.CancelScope(deadline=trio.current_time() + timeout) if bounded else None
    return _RelayErrors(method, base, path, timeout, scope)
