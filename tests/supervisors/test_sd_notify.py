"""sd_notify over a real datagram socket, path and abstract."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisors import Notifier, notify, watchdog_interval


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(5)
        yield sock, address


@pytest.fixture
def abstract_socket() -> Iterator[tuple[socket.socket, str]]:
    name = f"relay-orchestrator-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(5)
        yield sock, "@" + name


def received(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_ready_with_status_over_a_path_socket(path_socket: tuple[socket.socket, str]) -> None:
    sock, address = path_socket
    notifier = Notifier.from_env({"NOTIFY_SOCKET": address})
    assert notifier.enabled
    assert notifier.ready("registered with http://relay")
    assert received(sock) == ["READY=1", "STATUS=registered with http://relay"]


def test_every_message_over_an_abstract_socket(
    abstract_socket: tuple[socket.socket, str],
) -> None:
    sock, address = abstract_socket
    notifier = Notifier.from_env({"NOTIFY_SOCKET": address})
    assert notifier.address == b"\0" + address[1:].encode()
    assert notifier.ready()
    assert received(sock) == ["READY=1"]
    assert notifier.status("relay unreachable: http://x")
    assert received(sock) == ["STATUS=relay unreachable: http://x"]
    assert notifier.watchdog()
    assert received(sock) == ["WATCHDOG=1"]
    assert notifier.stopping("bye")
    assert received(sock) == ["STOPPING=1", "STATUS=bye"]


def test_notify_function_reads_the_environment(
    path_socket: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, address = path_socket
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    assert notify(ready=True, status="up")
    assert received(sock) == ["READY=1", "STATUS=up"]
    assert notify(stopping=True, env={"NOTIFY_SOCKET": address})
    assert received(sock) == ["STOPPING=1"]
    assert not notify()  # nothing to say, nothing sent


def test_no_socket_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not Notifier.from_env().enabled
    assert not notify(ready=True)
    assert not Notifier.from_env({"NOTIFY_SOCKET": "vsock:2:1234"}).ready()


def test_an_absent_listener_is_not_an_error(tmp_path: Path) -> None:
    assert not Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "nobody")}).ready()


def test_a_status_must_be_one_line(path_socket: tuple[socket.socket, str]) -> None:
    _, address = path_socket
    with pytest.raises(ValueError, match="one line"):
        Notifier.from_env({"NOTIFY_SOCKET": address}).status("two\nlines")


def test_watchdog_interval() -> None:
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "2500000"}) == 2.5
    assert watchdog_interval({"WATCHDOG_USEC": "2500000", "WATCHDOG_PID": str(os.getpid())}) == 2.5
    assert watchdog_interval({"WATCHDOG_USEC": "2500000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
