"""``RawSocketStream``: the socket layer under the relay client and the dev relay.

A real connected socket pair: what is sent arrives whole however the kernel
splits it, a full socket makes the sender wait rather than fail, closing the
stream wakes a task waiting to receive, and the peer's close reads as ``b""``.
"""

from __future__ import annotations

import os
import socket

import pytest
import trio
import trio.testing

from orchestrator.http._sockets import READ_SIZE, RawSocketStream


def pair() -> tuple[RawSocketStream, RawSocketStream]:
    a, b = socket.socketpair()
    return RawSocketStream(a), RawSocketStream(b)


async def test_a_send_larger_than_the_socket_takes_arrives_whole() -> None:
    left, right = pair()
    payload = os.urandom(8 * 1024 * 1024)  # far beyond the socket buffers: the sender must wait
    received = bytearray()

    async def receive() -> None:
        while len(received) < len(payload):
            data = await right.receive_some()
            assert data and len(data) <= READ_SIZE
            received.extend(data)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive)
            await left.send_all(payload)
    assert bytes(received) == payload
    left.close()
    right.close()


async def test_closing_wakes_a_task_waiting_to_receive() -> None:
    left, right = pair()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            errors: list[BaseException] = []

            async def waiting() -> None:
                try:
                    await right.receive_some()
                except trio.ClosedResourceError as exc:
                    errors.append(exc)

            nursery.start_soon(waiting)
            await trio.testing.wait_all_tasks_blocked()
            right.close()
    assert len(errors) == 1
    with pytest.raises(trio.ClosedResourceError):
        await right.send_all(b"x")
    left.close()


async def test_the_peers_close_reads_as_end_of_stream_after_its_data() -> None:
    left, right = pair()
    await left.send_all(b"last words")
    left.close()
    with trio.fail_after(10):
        assert await right.receive_some() == b"last words"
        assert await right.receive_some() == b""
    assert right.is_readable()  # a stale kept-alive connection looks like this
    right.close()


async def test_a_receive_is_a_cancellation_point() -> None:
    left, right = pair()
    with trio.move_on_after(0.05) as scope:
        await right.receive_some()
    assert scope.cancelled_caught
    left.close()
    right.close()
