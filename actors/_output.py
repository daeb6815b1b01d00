"""Where an agent's files live, and its output log: rotation and reading.

``<state_dir>/agents/<agentId>/`` (mode 0700) holds ``output.log`` (stdout
and stderr of a plain session, or a tmux pane's output via ``pipe-pane``),
``stdin`` (a plain session's FIFO) and, for a moment, the launch file of a
tmux session.

The agent (or tmux's ``cat``) keeps appending to the same open file
(``O_APPEND``), so a log is rotated in place, never renamed. Rotation takes
the log's head off into ``output.log.1`` (older ones move to ``.2`` …
``.<backups>``) without losing a line::

    copy bytes [0, cut) to output.log.1          cut: a block boundary < size
    fallocate(COLLAPSE_RANGE, 0, cut)            the rest moves to the front,
                                                 atomically with the appends
    output.log.head += cut                       bytes taken off so far

Where the file system cannot collapse a range (tmpfs, btrfs, APFS) it falls
back to copy-and-truncate, copying until the size holds still and then
truncating: a line written in the microseconds between the last copy and
the truncation would be lost there. The rotation holds an exclusive
``flock`` on ``output.log``; readers that follow the log take a shared one
while they read, so they never see a rotation half done. A line may be cut
in two by a rotation (its start ends ``.1``, its end begins ``output.log``):
the readers here read the backups and the log as the one stream they are.

``output.log.head`` makes every byte's position absolute: position ``p`` of
``output.log`` is byte ``head + p`` of everything the agent ever wrote, and
``output.log.1`` holds the bytes just before ``head``. So a follower keeps one
number, however many rotations pass between two of its reads.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LAST_LINES = 20
_TAIL_BYTES = 16_384
_MAX_LAST_OUTPUT = 4000
_COPY_CHUNK = 1 << 20
_FALLOC_FL_COLLAPSE_RANGE = 0x08
_STILL_TRIES = 20  # copy-and-truncate: copies of the growing end before truncating anyway


def agent_dir(state_dir: Path, agent_id: str) -> Path:
    return state_dir / "agents" / agent_id


def agent_log_path(state_dir: Path, agent_id: str) -> Path:
    """The output log of agent ``agent_id`` (for ``relay-orchestrator logs``)."""
    return agent_dir(state_dir, agent_id) / "output.log"


def make_agent_dir(state_dir: Path, agent_id: str) -> Path:
    path = agent_dir(state_dir, agent_id)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def backup_path(path: Path, index: int) -> Path:
    return path.with_name(f"{path.name}.{index}")


def head_path(path: Path) -> Path:
    return path.with_name(f"{path.name}.head")


def last_lines(text: str, count: int = LAST_LINES) -> str:
    lines = [line.rstrip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    tail = "\n".join(lines[-count:])
    return tail[-_MAX_LAST_OUTPUT:]


def head_and_tail(text: str, count: int = LAST_LINES) -> str:
    """The first and the last lines of ``text``, ``count`` in all: a program
    that ends at once may have said why at the top (its usage error) and
    printed its help below."""
    lines = [line.rstrip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    while lines and not lines[0]:
        lines.pop(0)
    if len(lines) > count:
        half = count // 2
        lines = [*lines[:half], "…", *lines[-half:]]
    return "\n".join(lines)[-_MAX_LAST_OUTPUT:]


def tail(path: Path, count: int = LAST_LINES) -> str:
    """The last ``count`` lines of the log ``path`` ("" when it does not exist)."""
    data, complete = _read_end(path, _TAIL_BYTES)
    text = data.decode(errors="replace")
    if not complete:
        text = text.partition("\n")[2]  # drop the cut first line
    return last_lines(text, count)


def tail_lines(path: Path, count: int) -> list[str]:
    """Exactly the last ``count`` lines of the log, across its backups."""
    if count <= 0:
        return []
    want = 8192
    while True:
        with _shared_lock(path):
            data, complete = _read_end(path, want)
        if complete or data.count(b"\n") > count:
            break
        want *= 4
    lines = data.decode(errors="replace").splitlines()
    return lines[-count:]


# -- rotation ------------------------------------------------------------------


def rotate_if_needed(path: Path, max_bytes: int, backups: int) -> bool:
    """Take the head off ``path`` once it has grown past ``max_bytes``.

    Skips (returns False) while a reader holds the log: the next check
    rotates it.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if os.fstat(fd).st_size <= max_bytes:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        size = os.fstat(fd).st_size
        if size <= max_bytes:
            return False
        for index in range(backups - 1, 0, -1):
            older = backup_path(path, index)
            if older.exists():
                os.replace(older, backup_path(path, index + 1))
        removed = _take_head(fd, path, size, keep=backups > 0)
        _write_head(path, read_head(path) + removed)
        return True
    finally:
        os.close(fd)  # releases the lock


def _take_head(fd: int, path: Path, size: int, *, keep: bool) -> int:
    """Remove the head of the log (into ``.1`` when ``keep``); how many bytes."""
    block = os.fstatvfs(fd).f_bsize or 4096
    cut = (size - 1) // block * block  # collapse needs a block multiple short of the end
    tmp = path.with_name(f"{path.name}.1.tmp")
    out = None
    if keep:
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        copied = 0
        if cut > 0:
            if out is not None:
                copied = _copy(fd, out, 0, cut)
            if _collapse(fd, cut):
                removed = cut
            else:
                removed = _copy_until_still(fd, out, copied)
        else:
            removed = _copy_until_still(fd, out, 0)
    except BaseException:
        if out is not None:
            os.close(out)
            tmp.unlink(missing_ok=True)
        raise
    if out is not None:
        os.close(out)
        os.replace(tmp, backup_path(path, 1))
    return removed


def _copy_until_still(fd: int, out: int | None, start: int) -> int:
    """Copy-and-truncate: copy what is there until it stops growing, then truncate."""
    copied = start
    for _ in range(_STILL_TRIES):
        size = os.fstat(fd).st_size
        if size == copied:
            break
        copied = _copy(fd, out, copied, size) if out is not None else size
    os.ftruncate(fd, 0)
    return copied


def _copy(src: int, dst: int | None, start: int, end: int) -> int:
    """Copy bytes [start, end) of ``src`` to the end of ``dst``; returns ``end``."""
    position = start
    while dst is not None and position < end:
        chunk = os.pread(src, min(_COPY_CHUNK, end - position), position)
        if not chunk:
            break
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst, view) :]
        position += len(chunk)
    return end


def _fallocate() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        function = libc.fallocate
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    function.restype = ctypes.c_int
    return function


_FALLOCATE = _fallocate()


def _collapse(fd: int, length: int) -> bool:
    """Remove bytes [0, length) of ``fd`` in place; False where unsupported."""
    if _FALLOCATE is None:
        return False
    if _FALLOCATE(fd, _FALLOC_FL_COLLAPSE_RANGE, 0, length) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS, errno.EPERM):
        return False
    raise OSError(code, os.strerror(code))


def read_head(path: Path) -> int:
    """How many bytes rotations have taken off the front of the log so far."""
    try:
        return int(head_path(path).read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def _write_head(path: Path, value: int) -> None:
    target = head_path(path)
    tmp = path.with_name(f"{path.name}.head.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, f"{value}\n".encode())
    finally:
        os.close(fd)
    os.replace(tmp, target)


# -- reading ---------------------------------------------------------------------


@contextlib.contextmanager
def _shared_lock(path: Path) -> Iterator[None]:
    """Hold off rotations while reading (nothing to hold when there is no log)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def _files(path: Path) -> Iterator[Path]:
    """The log, then its backups from the newest: the stream read backwards."""
    yield path
    index = 1
    while (older := backup_path(path, index)).exists():
        yield older
        index += 1


def _read_end(path: Path, want: int) -> tuple[bytes, bool]:
    """The last ``want`` bytes of the stream; True when that is all of it."""
    parts: list[bytes] = []
    need = want
    for file in _files(path):
        try:
            fd = os.open(file, os.O_RDONLY | os.O_CLOEXEC)  # no buffered file object: one read
        except OSError:
            continue
        try:
            size = os.fstat(fd).st_size
            data = os.pread(fd, need, max(0, size - need)) if size else b""
        except OSError:
            continue
        finally:
            os.close(fd)
        parts.append(data)
        need -= len(data)
        if need <= 0:
            return b"".join(reversed(parts)), False
    return b"".join(reversed(parts)), True


class LogFollower:
    """Reads what an agent writes to its log, across rotations, losing nothing.

    ``read()`` returns every byte written since the previous call (since the
    follower was made, with ``from_end``), in order, whatever rotations came
    between; only bytes already dropped from the last backup are missed.
    """

    def __init__(self, path: Path, *, from_end: bool = True) -> None:
        self.path = path
        self.position = 0  # absolute: head + offset in output.log
        if from_end:
            with _shared_lock(path):
                self.position = self._end()
        self.missed = 0  # bytes rotated away before we could read them

    @classmethod
    def with_tail(cls, path: Path, count: int) -> tuple[LogFollower, list[str]]:
        """A follower, and the last ``count`` complete lines just before where it starts.

        Taken in one look at the log: no line is both in the tail and followed,
        none is in neither (an unfinished last line is left to the follower).
        """
        follower = cls(path, from_end=False)
        want = 8192
        with _shared_lock(path):
            end = follower._end()
            while True:
                data, complete = _read_end(path, want)
                if complete or data.count(b"\n") > count:
                    break
                want *= 4
        unfinished = len(data) - (data.rfind(b"\n") + 1)
        follower.position = end - unfinished
        lines = data[: len(data) - unfinished].decode(errors="replace").splitlines()
        if not complete:
            lines = lines[1:]  # the first may be cut
        return follower, lines[-count:] if count > 0 else []

    def _end(self) -> int:
        try:
            size = self.path.stat().st_size
        except OSError:
            size = 0
        return read_head(self.path) + size

    def read(self) -> bytes:
        with _shared_lock(self.path):
            head = read_head(self.path)
            chunks = self._from_backups(head) if self.position < head else []
            offset = self.position - head
            try:
                with open(self.path, "rb") as fh:
                    fh.seek(offset)
                    data = fh.read()
            except OSError:
                data = b""
            chunks.append(data)
            self.position = head + offset + len(data)
        return b"".join(chunks)

    def _backup_sizes(self) -> list[int]:
        sizes = []
        for file in list(_files(self.path))[1:]:
            try:
                sizes.append(file.stat().st_size)
            except OSError:
                break
        return sizes

    def _from_backups(self, head: int) -> list[bytes]:
        """Bytes from our position up to ``head``, from the backups that hold them."""
        spans = []  # (file, absolute start, size), newest first
        start = head
        for file, size in zip(list(_files(self.path))[1:], self._backup_sizes(), strict=False):
            start -= size
            spans.append((file, start, size))
        if self.position < start:  # older than the oldest backup: gone
            self.missed += start - self.position
            self.position = start
        chunks = []
        for file, begin, size in reversed(spans):
            if self.position >= begin + size:
                continue
            try:
                with open(file, "rb") as fh:
                    fh.seek(self.position - begin)
                    chunks.append(fh.read(begin + size - self.position))
            except OSError:
                pass
            self.position = begin + size
        return chunks
