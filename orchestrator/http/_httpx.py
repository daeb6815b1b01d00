"""``PlainHTTPTransport`` as httpx calls it: httpx requests in, httpx responses out.

Loaded on first use only (``PlainHTTPTransport.handle_async_request``): the
relay client's own requests and event stream never come through here.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import httpx

from ._connection import NO_BODY_STATUS, Connection, Pool, framing


async def handle_async_request(
    pool: Pool, request: httpx.Request
) -> httpx.Response:
    url = request.url
    if url.scheme != "http":
        raise httpx.UnsupportedProtocol(
            f"PlainHTTPTransport speaks http:// only, not {url.scheme}://", request=request
        )
    await pool.acquire()
    released = False
    try:
        data = _request_bytes(request, await request.aread())
        key = (url.host, url.port or 80)
        conn = pool.idle_connection(key)
        if conn is None:
            conn = await Connection.open(key, request)
        try:
            await conn.send(data, request)
            response = await _read_response(conn, request, pool)
        except BaseException:
            conn.close()
            raise
        released = True  # the response's stream releases it
        return response
    finally:
        if not released:
            pool.release()


def _request_bytes(request: httpx.Request, body: bytes) -> bytes:
    parts = [request.method.encode("ascii"), b" ", request.url.raw_path, b" HTTP/1.1\r\n"]
    length_given = False
    for name, value in request.headers.raw:
        lowered = name.lower()
        if lowered == b"transfer-encoding":
            continue  # the body is sent whole, with its length
        if lowered == b"content-length":
            length_given = True
        parts += (name, b": ", value, b"\r\n")
    if not length_given and (body or request.method not in ("GET", "HEAD")):
        parts += (b"Content-Length: ", str(len(body)).encode("ascii"), b"\r\n")
    parts += (b"\r\n", body)
    return b"".join(parts)


async def _read_response(
    conn: Connection, request: httpx.Request, pool: Pool
) -> httpx.Response:
    status, reason, version, headers = await conn.final_head(request)
    length, chunked, keep_alive = framing(headers, version, request)
    extensions: dict[str, Any] = {"http_version": version, "reason_phrase": reason}
    if request.method == "HEAD" or status in NO_BODY_STATUS:
        length, chunked = 0, False  # ends at the head, whatever it announces
    if length is not None and not chunked:
        body = await conn.read_sized(request, length)
        pool.done_with(conn, keep_alive)
        return httpx.Response(status, headers=headers, content=body, extensions=extensions)
    stream = _ResponseStream(
        conn.read_chunked(request) if chunked else conn.read_until_closed(request),
        conn, pool, keep_alive and chunked,
    )  # fmt: skip
    return httpx.Response(status, headers=headers, stream=stream, extensions=extensions)


class _ResponseStream(httpx.AsyncByteStream):
    """A body read as it arrives; closing it gives the connection back (or closes it)."""

    def __init__(
        self,
        parts: AsyncGenerator[bytes, None],
        conn: Connection,
        pool: Pool,
        keep_alive: bool,
    ) -> None:
        self._parts = parts
        self._conn = conn
        self._pool = pool
        self._keep_alive = keep_alive
        self._complete = False
        self._released = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for part in self._parts:
                yield part
        except BaseException:
            self._conn.close()
            raise
        self._complete = True

    async def aclose(self) -> None:
        if not self._released:
            self._released = True
            if not self._complete:
                self._conn.close()
                await self._parts.aclose()
            self._pool.done_with(self._conn, self._keep_alive and self._complete)
