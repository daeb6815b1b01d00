"""The relay client: every request, auth, errors.

An ``http://`` relay is spoken to through ``PlainHTTPTransport`` alone, event
stream included, and httpx is never loaded (nor the stdlib modules it pulls
in: docs/performance.md, "Memory"); an ``https://`` relay goes
through one ``httpx.AsyncClient`` (TLS, certificate checks).

Every answer that is not a success is translated into the ``RelayError``
tree (``_errors.py``) so callers decide by type: retry, re-register, drop;
an error status here (``_check``), a foreign error (httpx's, h11's, a
socket's) and a request's timeout in ``_foreign.py``.

Auth is this module's to report: a refused token, or a token file that
cannot be read when it is read again after a refusal (missing, empty or
readable by others while it is being rewritten), is logged here once, and
raised as ``RelayAuthError`` for the caller to back off and retry; the next
accepted request logs that it healed.
"""

from __future__ import annotations

import json
import logging
import re
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import trio

from .._errors import (
    ConfigError,
    RelayAuthError,
    RelayConflict,
    RelayError,
    RelayNotFound,
    RelayUnavailable,
)
from ..http._transport import PlainHTTPTransport
from ._foreign import relay_errors
from ._wire import Heartbeat, Registration, RegistrationAnswer, converter, unstructure

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("relay_orchestrator.relay")

REQUEST_TIMEOUT = 10.0
URL_CACHE = 1024  # parsed request URLs kept (httpx's parsing is costly: docs/performance.md)


def make_http_transport(
    base_url: str, *, verify: str | bool = True
) -> httpx.AsyncBaseTransport | PlainHTTPTransport:
    """The transport under the one client.

    An ``http://`` relay gets ``PlainHTTPTransport`` (lean HTTP/1.1 on trio, no
    TLS, so no CA bundle either); an ``https://`` one httpx's own transport,
    verifying with ``verify`` (True: the system's CAs; a path: that CA file).
    """
    if not base_url.startswith("https://"):
        return PlainHTTPTransport(max_connections=32, max_idle=32)
    import httpx

    transport_verify: Any = verify
    if isinstance(transport_verify, str):  # a CA file; httpx deprecates verify=<path>
        import ssl

        transport_verify = ssl.create_default_context(cafile=transport_verify)
    return httpx.AsyncHTTPTransport(
        verify=transport_verify,
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
    )


def make_http_client(
    base_url: str,
    *,
    verify: str | bool = True,
    transport: httpx.AsyncBaseTransport | PlainHTTPTransport | None = None,
) -> httpx.AsyncClient:
    """An httpx client (it owns and closes ``transport``): what an ``https://``
    relay is spoken to through."""
    import httpx

    return httpx.AsyncClient(
        base_url=base_url,
        transport=transport or make_http_transport(base_url, verify=verify),  # type: ignore[arg-type]
        timeout=httpx.Timeout(None),
        trust_env=False,
    )


def plain_parts(base_url: str) -> tuple[tuple[str, int], str, str] | None:
    """For a relay ``PlainHTTPTransport`` can speak to by itself: its address,
    its Host header and its path prefix; None: httpx is needed."""
    try:
        url = urlsplit(base_url.rstrip("/"))
        port = url.port
    except ValueError:
        return None
    if url.scheme != "http" or not url.hostname or url.query or url.fragment:
        return None
    if not _PLAIN_TARGET.fullmatch(url.path or "/"):
        return None
    netloc = url.netloc.rpartition("@")[2]  # the Host header: no userinfo
    return (url.hostname, port or 80), netloc, url.path.rstrip("/")


class RelayClient:
    """The protocol's requests. ``transport``, when given, is the one ``http``
    was made with: requests go to it straight, without the client's per-request
    machinery (cookies, auth flow, redirects, event hooks: none of which the
    relay uses), which costs more than the request itself on loopback."""

    def __init__(
        self,
        base_url: str,
        token: Callable[[], str | None],
        *,
        http: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | PlainHTTPTransport | None = None,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self.base_url = base_url
        self.wire = log.isEnabledFor(logging.DEBUG)
        self._base = base_url.rstrip("/")
        self._read_token = token
        self._token: str | None = None
        self._json_headers: httpx.Headers | None = None
        self._urls: dict[str, httpx.URL] = {}  # parsed once: a claim's URL serves its settle
        self._http = http
        self._transport = transport
        self.request_timeout = request_timeout
        # The hot path: requests rendered straight to bytes for our own
        # transport (an http:// relay); None: through httpx objects.
        self._plain: tuple[tuple[str, int], str, str] | None = None
        self._plain_head: bytes | None = None  # the headers after the request line, per token
        self._auth_problem: str | None = None  # logged once, until a request is accepted
        if isinstance(transport, PlainHTTPTransport):
            self._plain = plain_parts(self._base)
        if self._plain is None and http is None:
            raise ValueError("an https:// relay (or a custom transport) needs an httpx client")

    # -- plumbing -------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        if self._token is None:
            try:
                self._token = self._read_token()
            except ConfigError as exc:  # at start-up it is fatal; while running, retried
                self._auth_failed(f"{exc}; retrying until it is fixed")
                raise RelayAuthError(str(exc)) from exc
            self._json_headers = None
            self._plain_head = None
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    def _render(self, method: str, path: str, body: bytes | None) -> bytes | None:
        """The whole request as bytes for our own transport; None: not renderable
        here (a path that needs encoding goes through httpx, which encodes it)."""
        assert self._plain is not None
        target = self._plain[2] + path
        if not _PLAIN_TARGET.fullmatch(target):
            return None
        auth = self._headers()
        if self._plain_head is None:
            lines = [f"Host: {self._plain[1]}"]
            lines += [f"{name}: {value}" for name, value in auth.items()]
            lines += ["Accept: application/json", "Content-Type: application/json", ""]
            self._plain_head = "\r\n".join(lines).encode("latin-1")
        length = b"Content-Length: %d\r\n\r\n" % len(body) if body is not None else (
            b"Content-Length: 0\r\n\r\n" if method not in ("GET", "HEAD") else b"\r\n")
        return b"".join((f"{method} {target} HTTP/1.1\r\n".encode("ascii"),
                         self._plain_head, length, body or b""))

    def _request_headers(self) -> httpx.Headers:
        """The headers of every JSON request, made once per token."""
        import httpx

        auth = self._headers()
        if self._json_headers is None:
            self._json_headers = httpx.Headers(
                {**auth, "Content-Type": "application/json", "Accept": "application/json"}
            )
        return self._json_headers

    def _auth_failed(self, problem: str) -> None:
        if problem != self._auth_problem:
            self._auth_problem = problem
            log.error("%s", problem)

    def _check(self, method: str, path: str, status: int, content: bytes) -> None:
        if status < 400:
            if self._auth_problem is not None:
                self._auth_problem = None
                log.warning("relay %s accepts our token again", self.base_url)
            return
        detail = _error_detail(content)
        what = f"{method} {self.base_url}{path}: {status}{': ' + detail if detail else ''}"
        if status in (401, 403):
            self._token = None  # re-read the token file before the next attempt
            problem = (f"relay {self.base_url} refused our token ({status}); check the token "
                       f"file or RELAY_ORCHESTRATOR_TOKEN")
            self._auth_failed(problem)
            raise RelayAuthError(problem, status=status)
        if status == 404:
            raise RelayNotFound(what, status=status)
        if status == 409:
            raise RelayConflict(what, status=status)
        if status >= 500 or status in (408, 429):
            raise RelayUnavailable(what, status=status)
        raise RelayError(what, status=status)

    def _url(self, path: str) -> httpx.URL:
        import httpx

        url = self._urls.get(path)
        if url is None:
            if len(self._urls) >= URL_CACHE:
                del self._urls[next(iter(self._urls))]  # the oldest
            url = self._urls[path] = httpx.URL(self._base + path)
        return url

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        started = trio.current_time() if self.wire else 0.0
        content = None if body is None else _dumps(body)
        with relay_errors(method, self.base_url, path, self.request_timeout, bounded=True):
            status, answer = await self._exchange(method, path, content)
        if self.wire:  # --verbose: one line per exchange; bodies never (they may hold env)
            log.debug("wire %s %s -> %d (%.2f ms)", method, path, status,
                      (trio.current_time() - started) * 1000)
        self._check(method, path, status, answer)
        if not answer:
            return None
        try:
            return json.loads(answer)
        except ValueError as exc:
            raise RelayUnavailable(f"{method} {self.base_url}{path}: answer is not JSON") from exc

    async def _exchange(self, method: str, path: str, content: bytes | None) -> tuple[int, bytes]:
        if self._plain is not None:
            data = self._render(method, path, content)
            if data is not None:
                assert isinstance(self._transport, PlainHTTPTransport)
                return await self._transport.exchange(
                    self._plain[0], data, head_only=method == "HEAD"
                )
        import httpx  # a request the fast path cannot render, or an https:// relay

        request = httpx.Request(
            method, self._url(path), headers=self._request_headers(), content=content
        )
        if self._transport is not None:
            response = await self._transport.handle_async_request(request)
            try:
                await response.aread()
            finally:
                await response.aclose()
        else:
            assert self._http is not None
            response = await self._http.send(request)
        return response.status_code, response.content

    # -- the protocol -----------------------------------------------------------
    async def register(self, registration: Registration) -> RegistrationAnswer:
        raw = await self.request("POST", "/api/orchestrators", unstructure(registration))
        try:
            return converter.structure(raw, RegistrationAnswer)
        except Exception as exc:
            raise RelayUnavailable(f"registration answer unreadable: {raw!r}") from exc

    async def heartbeat(self, orchestrator_id: str, heartbeat: Heartbeat) -> None:
        await self.request(
            "POST", f"/api/orchestrators/{_q(orchestrator_id)}/heartbeat", unstructure(heartbeat)
        )

    async def put_agent(self, orchestrator_id: str, agent_id: str, agent: dict[str, Any]) -> None:
        path = f"/api/orchestrators/{_q(orchestrator_id)}/agents/{_q(agent_id)}"
        await self.request("PUT", path, agent)

    async def patch_command(self, command_id: str, body: dict[str, Any]) -> Any:
        return await self.request("PATCH", f"/api/commands/{_q(command_id)}", body)

    async def get_command(self, command_id: str) -> Any:
        return await self.request("GET", f"/api/commands/{_q(command_id)}")

    async def pending_commands(self, target: str) -> list[Any]:
        raw = await self.request(
            "GET", f"/api/commands?target={_q(target)}&status=pending"
        )
        if isinstance(raw, dict):
            raw = raw.get("commands", [])
        return list(raw) if isinstance(raw, list) else []

    @asynccontextmanager
    async def stream(self, target: str) -> AsyncIterator[AsyncIterator[bytes]]:
        """Open the SSE stream; yields an iterator of its bytes, as they come
        (``relay/_sse.py`` decodes them)."""
        path = f"/api/commands/stream?target={_q(target)}"
        if self._plain is not None and _PLAIN_TARGET.fullmatch(self._plain[2] + path):
            async with self._plain_stream(path) as chunks:
                yield chunks
            return
        assert self._http is not None
        with relay_errors("GET", self.base_url, path, self.request_timeout, bounded=True):
            request = self._http.build_request(
                "GET", path, headers={**self._headers(), "Accept": "text/event-stream"}
            )
            response = await self._http.send(request, stream=True)
        translated = None
        try:
            with relay_errors("GET", self.base_url, path, self.request_timeout) as errors:
                if response.status_code >= 400:
                    await response.aread()
                    self._check("GET", path, response.status_code, response.content)
            translated = errors.parts(response.aiter_bytes())
            yield translated
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                if translated is not None:
                    await translated.aclose()
                await response.aclose()

    @asynccontextmanager
    async def _plain_stream(self, path: str) -> AsyncIterator[AsyncIterator[bytes]]:
        """The stream on our own transport: no httpx objects at all."""
        assert self._plain is not None and isinstance(self._transport, PlainHTTPTransport)
        key, host, prefix = self._plain
        head = [f"GET {prefix}{path} HTTP/1.1", f"Host: {host}"]
        head += [f"{name}: {value}" for name, value in self._headers().items()]
        data = ("\r\n".join([*head, "Accept: text/event-stream", "", ""])).encode("latin-1")
        async with AsyncExitStack() as stack:  # the stream outlives the translation of its start
            with relay_errors("GET", self.base_url, path, self.request_timeout) as errors:
                status, body, parts = await stack.enter_async_context(
                    self._transport.open_stream(key, data, head_timeout=self.request_timeout))
                if status >= 400:
                    self._check("GET", path, status, body + b"".join([p async for p in parts]))
            translated = errors.parts(parts)
            stack.push_async_callback(translated.aclose)
            yield translated


# A request target sent as is: the characters RFC 3986 allows in a path and
# query, with nothing that needs encoding (ids come from the relay).
_PLAIN_TARGET = re.compile(r"/[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*")


def _dumps(body: Any) -> bytes:
    # The default arguments: json keeps one encoder for them (any other
    # argument builds a new encoder at each call, twice the cost).
    return json.dumps(body).encode()


def _q(text: str) -> str:
    """One path segment or query value, percent-encoded: an id holding ``/``,
    ``?`` or ``#`` names that id, not another path."""
    if _PLAIN_SEGMENT.fullmatch(text):
        return text  # the usual id: nothing to encode
    from urllib.parse import quote

    return quote(text, safe="")


_PLAIN_SEGMENT = re.compile(r"[A-Za-z0-9\-._~]*")


def _error_detail(content: bytes) -> str:
    try:
        raw = json.loads(content)
    except ValueError:
        return content[:200].decode("utf-8", "replace").strip()
    if isinstance(raw, dict):
        for key in ("error", "message", "detail"):
            if isinstance(raw.get(key), str):
                return str(raw[key])[:300]
    return ""
