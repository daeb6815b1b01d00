"""tmux sessions: an agent a person can attach to.

One tmux server per fleet, on a socket of its own (``tmux -L
relay-orchestrator``, ``FleetConfig.tmux_socket``): attach with ``tmux -L
relay-orchestrator attach -t relay-<agentId>``. The server is started by
the fleet's ``ProcessLauncher`` (``tmux -D``, in the foreground), so that,
like a plain agent, it lives outside the orchestrator's own teardown (under
systemd: in a transient unit of its own, not in the orchestrator's cgroup).
Every client call passes ``-N``: a client never starts a server by itself.

Each agent is the pane of session ``relay-<agentId>``. Neither its argv nor
its environment goes through tmux: the pane runs ``/bin/sh <launch file>``,
a 0600 file that removes itself, exports the agent's environment, changes
to its cwd and ``exec``s the agent (``_exec_env.py`` stands in when an
environment name is not a shell identifier). The pane pid is therefore the
agent's pid. The same tmux call sets ``remain-on-exit`` (so the exit status
survives the agent) and ``pipe-pane`` (output appended to ``output.log``)
before tmux reads any of the pane's output.

Input is pasted (``load-buffer`` from stdin, ``paste-buffer -p``, Enter),
so nothing typed shows in any argv either.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import trio

from supervisors import LaunchSpec, ProcessLauncher

from ._output import head_and_tail, last_lines, tail
from ._params import CommandRejected
from ._process import ExitStatus, ProcessWatch, identify, signal_name
from ._session import ORCHESTRATOR_ONLY, LaunchFailed

WIDTH, HEIGHT = "200", "50"
SERVER_START_TIMEOUT = 5.0
DEAD_STATUS_TIMEOUT = 2.0
_PANE_OWN = ("TERM", "TMUX", "TMUX_PANE")  # the pane's values win
_SH_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_EXEC_ENV = Path(__file__).with_name("_exec_env.py")


class TmuxError(Exception):
    pass


def _sh(word: str) -> str:
    return "'" + word.replace("'", "'\\''") + "'"


def _write_private(path: Path, data: bytes) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def launch_file(
    directory: Path, argv: Sequence[str], cwd: Path, env: Mapping[str, str]
) -> tuple[Path, list[str]]:
    """Write the 0600 launch file; return it and the pane's command."""
    if all(_SH_NAME.match(name) for name in env):
        path = directory / "launch.sh"
        lines = [f"rm -f -- {_sh(str(path))}"]
        # Whatever the server's own environment holds, never the orchestrator's.
        lines.append("unset " + " ".join(sorted(ORCHESTRATOR_ONLY - {*env, *_PANE_OWN})))
        lines += [
            f"export {name}={_sh(value)}" for name, value in env.items() if name not in _PANE_OWN
        ]
        lines += [
            f"cd -- {_sh(str(cwd))} || exit 127",
            "exec " + " ".join(_sh(arg) for arg in argv),
        ]
        _write_private(path, ("\n".join(lines) + "\n").encode())
        return path, ["/bin/sh", str(path)]
    path = directory / "launch.json"
    spec = {"argv": list(argv), "env": dict(env), "cwd": str(cwd), "keep": list(_PANE_OWN)}
    _write_private(path, json.dumps(spec).encode())
    return path, [sys.executable, "-I", "-S", str(_EXEC_ENV), str(path)]


# True once tmux has the pane's exit status or signal (a pane may be marked
# dead when its terminal closes, before tmux has reaped the process).
DEAD_STATUS_KNOWN = "#{!=:#{pane_dead_status}#{pane_dead_signal},}"


class _Call:
    """One ``TmuxServer.command`` waiting for its turn in a shared client."""

    __slots__ = ("args", "error", "finished", "output", "wake")

    def __init__(self, args: Sequence[str]) -> None:
        self.args = tuple(args)
        self.output = ""
        self.error: str | None = None
        self.finished = False
        self.wake = trio.Event()

    @property
    def size(self) -> int:
        return sum(len(arg.encode()) + 1 for arg in self.args) + 48  # + its marker

    def finish(self, output: str, error: str | None) -> None:
        self.output, self.error, self.finished = output, error, True
        self.wake.set()


class _Batch:
    """Calls queue up; whoever finds no client running runs the next one with
    every queued call that fits (tmux refuses a command list over 16 KiB),
    until its own call is done, then hands the running on."""

    MAX_BYTES = 12_000
    MAX_CALLS = 48
    CLIENT_TIMEOUT = 30.0  # a client still running then is killed

    def __init__(self) -> None:
        self._queue: list[_Call] = []
        self._running = False

    async def run(self, call: _Call, run_batch: Callable[[list[_Call]], Awaitable[None]]) -> None:
        self._queue.append(call)
        try:
            await self._until_finished(call, run_batch)
        except BaseException:
            if call in self._queue:  # never sent: nobody may send it later
                self._queue.remove(call)
            if not self._running and self._queue:
                self._queue[0].wake.set()  # it may have been handed the running
            raise

    async def _until_finished(
        self, call: _Call, run_batch: Callable[[list[_Call]], Awaitable[None]]
    ) -> None:
        while not call.finished:
            if self._running:
                await call.wake.wait()
                call.wake = trio.Event()
                continue
            self._running = True
            try:
                while not call.finished:
                    await self._run_one(self._take(), run_batch)
            finally:
                self._running = False
                if self._queue:
                    self._queue[0].wake.set()  # the next in line runs the client

    async def _run_one(
        self, batch: list[_Call], run_batch: Callable[[list[_Call]], Awaitable[None]]
    ) -> None:
        # The client carries other callers' calls: no caller's cancellation cuts
        # it short. tmux may already have run some of them, and running those
        # again would, say, start a session twice.
        with trio.CancelScope(shield=True), trio.move_on_after(self.CLIENT_TIMEOUT) as bound:
            try:
                await run_batch(batch)
            except trio.Cancelled:
                raise  # the bound (the shield keeps every other out): below
            except BaseException:
                self._queue[:0] = [c for c in batch if not c.finished]
                raise
        unfinished = [c for c in batch if not c.finished]
        if bound.cancelled_caught:  # killed: what it ran is unknown, so none runs again
            for c in unfinished:
                c.finish("", f"tmux did not answer within {self.CLIENT_TIMEOUT:g} s")
        else:  # tmux stopped at a failing call: those after it go first next time
            self._queue[:0] = unfinished

    def _take(self) -> list[_Call]:
        batch = [self._queue.pop(0)]
        size = batch[0].size
        while self._queue and len(batch) < self.MAX_CALLS:
            if size + self._queue[0].size > self.MAX_BYTES:
                break
            size += self._queue[0].size
            batch.append(self._queue.pop(0))
        return batch


class TmuxServer:
    """The fleet's tmux server: started once, through the launcher."""

    def __init__(
        self, *, socket: str, launcher: ProcessLauncher, env: Mapping[str, str], state_dir: Path
    ) -> None:
        self.socket = socket
        self._launcher = launcher
        self._env = dict(env)
        self._state_dir = state_dir
        self._lock = trio.Lock()
        self._watch: ProcessWatch | None = None
        self._batch = _Batch()

    async def command(self, *args: str, stdin: bytes = b"", check: bool = True) -> str:
        """Run one tmux command list; its standard output.

        Calls made while another is under way share the next tmux client
        (``_Batch``): a client process costs more than the commands it
        carries. A call that feeds standard input runs alone.
        """
        if stdin:
            result = await self._client(args, stdin)
            if check and result.returncode != 0:
                raise TmuxError(result.stderr.decode(errors="replace").strip() or "tmux failed")
            return result.stdout.decode(errors="replace")
        call = _Call(args)
        await self._batch.run(call, self._run_batch)
        if check and call.error is not None:
            raise TmuxError(call.error)
        return call.output

    async def _client(
        self, args: Sequence[str], stdin: bytes = b""
    ) -> subprocess.CompletedProcess[bytes]:
        return await trio.run_process(
            ["tmux", "-N", "-L", self.socket, *args],
            stdin=stdin,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=self._env,
        )

    async def _run_batch(self, calls: list[_Call]) -> None:
        """One client for ``calls``, in order; each followed by a marker line.

        tmux stops at the first command that fails: the calls before it are
        done (their markers came back), that one failed with the client's
        error, and those after it never ran (``_Batch`` runs them again).
        """
        token = f"relay-batch-{os.urandom(6).hex()}"
        argv: list[str] = []
        for i, call in enumerate(calls):
            if i:
                argv.append(";")
            argv += [*call.args, ";", "display-message", "-p", f"{token}:{i}"]
        result = await self._client(argv)
        lines: list[str] = []
        done = 0
        for line in result.stdout.decode(errors="replace").splitlines():
            if done < len(calls) and line == f"{token}:{done}":
                calls[done].finish("".join(f"{text}\n" for text in lines), None)
                done += 1
                lines = []
            else:
                lines.append(line)
        if done < len(calls):
            error = result.stderr.decode(errors="replace").strip() or "tmux failed"
            calls[done].finish("".join(f"{text}\n" for text in lines), error)

    async def server_pid(self) -> int | None:
        try:
            return int((await self.command("display-message", "-p", "#{pid}")).strip())
        except (TmuxError, ValueError):
            return None

    async def nudge(self) -> None:
        """Have the server look for ended children (a spurious SIGCHLD is harmless)."""
        watch = self._watch
        if watch is not None and not watch.ended.is_set():
            pid: int | None = watch.pid  # the server we watch: no tmux call to ask it
        else:
            pid = await self.server_pid()
        if pid is not None:
            try:
                os.kill(pid, signal.SIGCHLD)
            except ProcessLookupError:
                pass

    async def ensure(self, nursery: trio.Nursery) -> None:
        """Make sure the server runs (start it through the launcher if not)."""
        async with self._lock:
            if self._watch is not None and not self._watch.ended.is_set():
                return
            pid = await self.server_pid()
            if pid is None:
                argv = ["tmux", "-L", self.socket, "-D"]
                try:
                    await self._launcher.launch(
                        LaunchSpec(
                            name=f"relay-tmux-{self.socket}",
                            argv=argv,
                            cwd=self._state_dir,
                            env=self._env,
                            stdout_path=self._state_dir / "tmux-server.log",
                        )
                    )
                except Exception as exc:
                    raise LaunchFailed(f"could not start the tmux server: {exc}") from None
                with trio.move_on_after(SERVER_START_TIMEOUT):
                    while (pid := await self.server_pid()) is None:  # noqa: ASYNC110
                        await trio.sleep(0.01)
                if pid is None:
                    raise LaunchFailed("the tmux server did not come up")
            identity = identify(pid, ["tmux"])
            if identity is None:
                raise LaunchFailed("the tmux server ended as it started")
            self._watch = ProcessWatch.open_started(identity)
            nursery.start_soon(self._watch_server, self._watch)

    @staticmethod
    async def _watch_server(watch: ProcessWatch) -> None:
        try:
            await watch.wait()  # reaps the server when it is our child
        finally:
            watch.close()


class TmuxSession:
    kind = "tmux"

    def __init__(self, *, server: TmuxServer, name: str, log: Path) -> None:
        self._server = server
        self._name = name
        self._log = log

    @property
    def tmux_session(self) -> str:
        return self._name

    @property
    def log_path(self) -> Path:
        return self._log

    @property
    def _target(self) -> str:
        return f"={self._name}:"

    @classmethod
    async def start(
        cls,
        *,
        server: TmuxServer,
        name: str,
        argv: Sequence[str],
        cwd: Path,
        env: Mapping[str, str],
        directory: Path,
    ) -> tuple[TmuxSession, int]:
        session = cls(server=server, name=name, log=directory / "output.log")
        # There before the pane prints, so that it can be watched from the start.
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        os.close(os.open(session._log, flags, 0o600))
        path, command = launch_file(directory, argv, cwd, env)
        pipe = "exec cat >> " + shlex.quote(str(session._log)).replace("#", "##")
        args = (
            *("new-session", "-d", "-P", "-F", "#{pane_pid}", "-s", name),
            *("-x", WIDTH, "-y", HEIGHT, "--", *command),
            *(";", "set-option", "-p", "-t", session._target, "remain-on-exit", "on"),
            *(";", "pipe-pane", "-o", "-t", session._target, pipe),
        )
        try:
            try:
                output = await server.command(*args)
            except TmuxError as exc:
                if "duplicate session" not in str(exc):
                    raise
                # A dead pane left over from an earlier run of this agent.
                await server.command("kill-session", "-t", f"={name}", check=False)
                output = await server.command(*args)
            return session, int(output.split()[0])
        except (TmuxError, ValueError, IndexError) as exc:
            path.unlink(missing_ok=True)
            raise LaunchFailed(f"could not start agent in tmux: {exc}") from None

    @classmethod
    def reopen(cls, server: TmuxServer, data: dict[str, Any]) -> TmuxSession:
        return cls(server=server, name=data["name"], log=Path(data["log"]))

    async def send(self, text: str, *, enter_after: float = 0.0) -> None:
        """Paste ``text`` (bracketed) and press Enter; ``enter_after``: seconds
        between them, for a CLI that takes an Enter right after a paste as
        part of it."""
        buffer = f"relay-{self._name}"
        enter = () if enter_after else (";", "send-keys", "-t", self._target, "Enter")
        try:
            await self._server.command(
                *("load-buffer", "-b", buffer, "-"),
                *(";", "paste-buffer", "-d", "-p", "-b", buffer, "-t", self._target),
                *enter,
                stdin=text.encode(),
            )
            if enter_after:
                await trio.sleep(enter_after)
                await self._server.command("send-keys", "-t", self._target, "Enter")
        except TmuxError as exc:
            raise CommandRejected(f"could not type into tmux session {self._name}: {exc}") from None

    async def capture(self) -> str | None:
        """The pane's screen as text (None: no such pane, or it is dead)."""
        try:
            out = await self._server.command(
                "display-message", "-p", "-t", self._target, "#{pane_dead}",
                ";", "capture-pane", "-p", "-t", self._target,
            )  # fmt: skip
        except TmuxError:
            return None
        dead, _, screen = out.partition("\n")
        return None if dead.strip() == "1" else screen

    async def send_keys(self, keys: Sequence[str]) -> None:
        """Press ``keys`` (tmux key names, e.g. ``Enter``, ``Down``, ``1``)."""
        try:
            await self._server.command("send-keys", "-t", self._target, *keys)
        except TmuxError as exc:
            raise CommandRejected(f"could not type into tmux session {self._name}: {exc}") from None

    async def _remains(self, early: bool = False) -> tuple[ExitStatus, str] | None:
        """The dead pane's exit status and last lines (None: no such pane),
        and the session gone with it.

        One tmux call reads both and, once tmux knows the exit status (not
        merely that the pane is dead), ends the session (``if-shell -F`` runs
        no shell: tmux tests the format).
        """
        with trio.move_on_after(DEAD_STATUS_TIMEOUT):
            while True:
                try:
                    out = await self._server.command(
                        "display-message", "-p", "-t", self._target,
                        "#{pane_dead}|#{pane_dead_status}|#{pane_dead_signal}",
                        ";", "capture-pane", "-p", "-J", "-t", self._target, "-S", "-200",
                        ";", "if-shell", "-F", "-t", self._target, DEAD_STATUS_KNOWN,
                        f"kill-session -t ={self._name}",
                    )  # fmt: skip
                except TmuxError:
                    return None
                first, _, captured = out.partition("\n")
                _, code, sig = (first.strip().split("|") + ["", "", ""])[:3]
                if code.isdigit() or sig.isdigit():
                    lines = [
                        line
                        for line in captured.splitlines()
                        if not line.startswith("Pane is dead")
                    ]
                    said = (head_and_tail if early else last_lines)("\n".join(lines))
                    if code.isdigit():
                        return ExitStatus(exit_code=int(code)), said
                    return ExitStatus(signal=signal_name(int(sig))), said
                # tmux has not reaped the pane yet. tmux 3.3 now and then
                # misses a SIGCHLD (when the pane and its pipe-pane end close
                # together) and would leave the pane a zombie until the next
                # one: nudge it (a signal, no tmux call) before each new look.
                await self._server.nudge()
                await trio.sleep(0.01)
        return ExitStatus(), ""

    async def finish(self, status: ExitStatus, *, early: bool = False) -> tuple[ExitStatus, str]:
        remains = await self._remains(early)
        output = ""
        if remains is not None:
            dead, output = remains
            if status.exit_code is None and status.signal is None:
                status = dead
            if not (dead.exit_code is not None or dead.signal is not None):
                # tmux never took note of the exit: end the session all the same
                await self._server.command("kill-session", "-t", f"={self._name}", check=False)
        return status, output or tail(self._log)

    def close(self) -> None:
        pass

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self._name,
            "log": str(self._log),
            "socket": self._server.socket,
        }
