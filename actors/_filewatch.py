"""Wake-ups when files grow: what drives activity tracking.

An agent's output reaches ``output.log`` through ``pipe-pane``. Rather than
looking at every pane now and then, the fleet asks the kernel to say when a
log is written to: one inotify descriptor for all agents (Linux), read by
one task. An agent that prints nothing costs nothing. Where inotify is not
to be had (macOS), the sizes of the watched files are compared instead, a
few times a second.

``FileWatch.watch(path)`` returns a ``Watched``: ``await watched.wait()``
returns once the file was written to since the last call.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import struct
from pathlib import Path

import trio

log = logging.getLogger("relay_orchestrator.actors")

_IN_MODIFY = 0x00000002
_IN_IGNORED = 0x00008000
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_EVENT = struct.Struct("iIII")
POLL_INTERVAL = 0.25  # without inotify


class Watched:
    """One watched file: a flag set by the watcher, awaited by its owner."""

    def __init__(self, owner: FileWatch, path: Path) -> None:
        self.path = path
        self._owner = owner
        self._event = trio.Event()
        self.key: int | None = None
        self.size = -1

    def _touch(self) -> None:
        self._event.set()

    async def wait(self) -> None:
        """Until the file was written to (at once if it was since the last call)."""
        await self._event.wait()
        self._event = trio.Event()

    def close(self) -> None:
        self._owner._forget(self)


def _libc() -> ctypes.CDLL | None:
    if not hasattr(os, "pipe2"):  # not Linux
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        _ = libc.inotify_init1, libc.inotify_add_watch, libc.inotify_rm_watch
    except (OSError, AttributeError):
        return None
    return libc


class FileWatch:
    """The fleet's one watcher (run it with ``run``, in the fleet's nursery)."""

    def __init__(self) -> None:
        self._libc = _libc()
        self._fd = -1
        if self._libc is not None:
            fd = self._libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
            if fd >= 0:
                self._fd = fd
            else:
                log.warning("inotify is not available (%s): output is looked at by size",
                            os.strerror(ctypes.get_errno()))
        self._by_key: dict[int, list[Watched]] = {}
        self._polled: list[Watched] = []
        self._wake = trio.Event()

    @property
    def uses_inotify(self) -> bool:
        return self._fd >= 0

    def watch(self, path: Path) -> Watched:
        watched = Watched(self, path)
        if self._fd >= 0 and self._libc is not None:
            wd = self._libc.inotify_add_watch(self._fd, os.fsencode(path), _IN_MODIFY)
            if wd >= 0:
                watched.key = wd
                self._by_key.setdefault(wd, []).append(watched)
                return watched
            if ctypes.get_errno() == errno.ENOSPC:
                log.warning("out of inotify watches: %s is looked at by size", path)
        self._polled.append(watched)
        self._wake.set()
        return watched

    def _forget(self, watched: Watched) -> None:
        if watched.key is not None:
            others = self._by_key.get(watched.key, [])
            if watched in others:
                others.remove(watched)
            if not others:
                self._by_key.pop(watched.key, None)
                if self._libc is not None and self._fd >= 0:
                    self._libc.inotify_rm_watch(self._fd, watched.key)
            watched.key = None
        elif watched in self._polled:
            self._polled.remove(watched)

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                if self._fd >= 0:
                    nursery.start_soon(self._read_events)
                nursery.start_soon(self._poll_sizes)
        finally:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    async def _read_events(self) -> None:
        while True:
            await trio.lowlevel.wait_readable(self._fd)
            try:
                data = os.read(self._fd, 64 * 1024)
            except BlockingIOError:
                continue
            offset = 0
            while offset + _EVENT.size <= len(data):
                wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
                offset += _EVENT.size + length
                if mask & _IN_IGNORED:  # the file is gone: its owner will be told by its end
                    self._by_key.pop(wd, None)
                    continue
                for watched in self._by_key.get(wd, ()):
                    watched._touch()

    async def _poll_sizes(self) -> None:
        while True:
            if not self._polled:
                await self._wake.wait()
                self._wake = trio.Event()
                continue
            for watched in list(self._polled):
                try:
                    size = os.stat(watched.path).st_size
                except OSError:
                    continue
                if size != watched.size:
                    watched.size = size
                    watched._touch()
            await trio.sleep(POLL_INTERVAL)
