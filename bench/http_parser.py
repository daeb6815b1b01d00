"""Does the relay client's own HTTP/1.1 parser pay for itself? Ours against h11.

    python bench/http_parser.py [--repeat 5] [--requests 2000] [--events 2000] [--polls 300]

The client's framing (``orchestrator/http/_connection.py``, driven as the
relay client drives it: ``bench/_client_ours.py``) against an h11-based
equivalent (``bench/_client_h11.py``: the same socket layer, the request
sent and the answer read as ``h11.Connection`` events), on the daemon's real
traffic shapes:

- **heartbeat**: a POST with the JSON of ten agents, answered 200 with a
  small JSON body (``content-length``), on one kept-alive connection;
- **stream**: the command stream, one GET answered by a chunked
  ``text/event-stream``, one command event per chunk;
- **long poll**: a GET of the pending commands answered after a wait, a
  larger JSON body (twenty commands).

Measured three ways, the two parsers alternated in every repetition:

1. **parser alone**: the response bytes handed over from memory (no socket,
   no scheduler), CPU per request or event (``time.process_time``), medians;
2. **on loopback**: a server in a process of its own (plain blocking
   sockets, scripted answers; events paced so each arrives on its own), the
   client's CPU per request or event in this process, medians and ranges;
   beside it, for scale, a whole ``RelayClient.heartbeat`` (JSON, headers,
   the status check) on the real transport;
3. **memory**: a fresh interpreter per parser (``--memory-probe``): RSS
   before and after the parser's import (and what tracemalloc saw it
   allocate), then after the rest of the relay client (what ``run`` loads
   for it) and a workload in memory.

And the other side, for the record: the dev relay's server
(``devrelay/_asgi_server.py``, h11 since issue 20) in a process of its own
with an app that answers at once, its CPU per heartbeat on one kept-alive
connection.

Writes bench/results/http_parser.json. The figures and the decision they
support are in docs/performance.md ("One HTTP/1.1 parser per side").
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import fmt_row, write_json  # noqa: E402
from orchestrator.http._sockets import READ_SIZE, RawSocketStream  # noqa: E402

HOST = b"127.0.0.1"
TOKEN = b"bench-token"
HEARTBEAT_PATH = b"/api/orchestrators/orch-bench/heartbeat"
STREAM_PATH = b"/api/commands/stream?target=orch%3Aorch-bench"
POLL_PATH = b"/api/commands?target=orch%3Aorch-bench&status=pending"


# -- the traffic shapes ----------------------------------------------------------------


def _agent(n: int) -> dict[str, Any]:
    return {"agentId": f"ag_{n:04d}", "provider": "claude", "status": "running",
            "pid": 40000 + n, "cwd": f"/home/dev/work/project-{n}", "activity": "ready",
            "startedAt": 1765300000000 + n, "usage": {"cpuPercent": 0.4, "memoryRss": 180000000}}


def _command(n: int) -> dict[str, Any]:
    return {"id": f"cmd_{n:08d}", "type": "agent.spawn", "source": "user:dev",
            "target": "orch:orch-bench", "correlationId": None,
            "params": {"provider": "claude", "agentId": f"ag_{n:04d}",
                       "cwd": f"/home/dev/work/project-{n}", "prompt": "Fix the failing test."},
            "status": "pending", "result": None, "error": None,
            "createdAt": 1765300000000 + n, "updatedAt": 1765300000000 + n}


HEARTBEAT_BODY = json.dumps({"version": "0.1.0", "agents": [_agent(n) for n in range(10)],
                             "load": {"cpuPercent": 1.5, "memoryRss": 33000000,
                                      "agentCount": 10}}).encode()


def _response(body: bytes, content_type: bytes = b"application/json") -> bytes:
    return (b"HTTP/1.1 200 OK\r\ndate: Tue, 09 Dec 2026 10:00:00 GMT\r\nserver: relay\r\n"
            b"content-type: %s\r\ncontent-length: %d\r\n\r\n%s"
            % (content_type, len(body), body))


HEARTBEAT_ANSWER = _response(json.dumps(
    {"id": "orch-bench", "agentId": "orch:orch-bench", "status": "online"}).encode())
POLL_ANSWER = _response(json.dumps({"commands": [_command(n) for n in range(20)]}).encode())
STREAM_HEAD = (b"HTTP/1.1 200 OK\r\ndate: Tue, 09 Dec 2026 10:00:00 GMT\r\nserver: relay\r\n"
               b"content-type: text/event-stream\r\ncache-control: no-cache\r\n"
               b"transfer-encoding: chunked\r\n\r\n")


def event_chunk(n: int) -> bytes:
    command = _command(n)
    event = b"event: command\nid: %s\ndata: %s\n\n" % (command["id"].encode(),
                                                        json.dumps(command).encode())
    return b"%x\r\n%s\r\n" % (len(event), event)


STREAM_END = b"0\r\n\r\n"


# -- the two clients ---------------------------------------------------------------------
# Each in a module of its own, imported when first used: a memory probe loads one alone.

CLIENTS = {"ours": "bench._client_ours", "h11": "bench._client_h11"}


def make_client(kind: str, stream: Any) -> Any:
    """A client of that kind on ``stream``: ``exchange(method, target, body)`` and
    ``stream(target)``."""
    return importlib.import_module(CLIENTS[kind]).Client(stream, HOST, TOKEN)


# -- 1. the parser alone: answers from memory --------------------------------------------


class Replay:
    """A stream that answers every request with the same pieces, from memory."""

    closed = False

    def __init__(self, pieces: list[bytes]) -> None:
        self._answer = pieces
        self._pieces: list[bytes] = []

    async def send_all(self, data: bytes) -> None:
        self._pieces = list(reversed(self._answer))

    async def receive_some(self, max_bytes: int = READ_SIZE) -> bytes:
        return self._pieces.pop() if self._pieces else b""


def _timed(run: Callable[[], Awaitable[float]]) -> float:
    """``trio.run(run)`` with the collector out of the way; ``run`` returns the
    CPU seconds of its own loop (not trio's start, nor a connect)."""
    gc.collect()
    gc.disable()
    try:
        return trio.run(run)
    finally:
        gc.enable()


def in_memory(kind: str, shape: str, count: int) -> float:
    """µs of CPU per request (per event for the stream)."""
    if shape == "stream":
        chunk = event_chunk(1)
        client = make_client(kind, Replay([STREAM_HEAD, *[chunk] * count, STREAM_END]))

        async def run() -> float:
            started, seen = time.process_time(), 0
            async for _ in client.stream(STREAM_PATH):
                seen += 1
            assert seen == count, seen
            return time.process_time() - started

        return _timed(run) / count * 1e6
    answer = HEARTBEAT_ANSWER if shape == "heartbeat" else POLL_ANSWER
    client = make_client(kind, Replay([answer]))
    method, target, body = ((b"POST", HEARTBEAT_PATH, HEARTBEAT_BODY) if shape == "heartbeat"
                            else (b"GET", POLL_PATH, None))

    async def run() -> float:
        started = time.process_time()
        for _ in range(count):
            await client.exchange(method, target, body)
        return time.process_time() - started

    return _timed(run) / count * 1e6


# -- 2. on loopback: a server in its own process -----------------------------------------


def serve() -> None:
    """The scripted server (``--serve``): prints its port, answers until killed."""
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)
    while True:
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=_serve_connection, args=(conn,), daemon=True).start()


def _serve_connection(conn: socket.socket) -> None:
    buffer = b""
    with conn:
        while True:
            while b"\r\n\r\n" not in buffer:
                data = conn.recv(65536)
                if not data:
                    return
                buffer += data
            head, buffer = buffer.split(b"\r\n\r\n", 1)
            lines = head.split(b"\r\n")
            length = next((int(line.split(b":", 1)[1]) for line in lines[1:]
                           if line.lower().startswith(b"content-length:")), 0)
            while len(buffer) < length:
                buffer += conn.recv(65536)
            buffer = buffer[length:]
            url = urlsplit(lines[0].split(b" ")[1].decode())
            query = {key: values[0] for key, values in parse_qs(url.query).items()}
            if url.path.endswith("/heartbeat"):
                conn.sendall(HEARTBEAT_ANSWER)
            elif url.path.endswith("/stream"):
                conn.sendall(STREAM_HEAD)
                pace = float(query.get("pace", "0"))
                for n in range(int(query["n"])):
                    time.sleep(pace)
                    conn.sendall(event_chunk(n))
                conn.sendall(STREAM_END)
            else:
                time.sleep(float(query.get("delay", "0")))
                conn.sendall(POLL_ANSWER)


async def _open(port: int) -> RawSocketStream:
    return RawSocketStream.detach(await trio.open_tcp_stream("127.0.0.1", port))


def on_loopback(kind: str, shape: str, count: int, port: int, pace: float,
                delay: float) -> float:
    """µs of this process's CPU per request (per event for the stream)."""
    async def run() -> float:
        stream = await _open(port)
        client = make_client(kind, stream)
        started = time.process_time()
        try:
            if shape == "stream":
                target = STREAM_PATH + b"&n=%d&pace=%g" % (count, pace)
                seen = b"".join([part async for part in client.stream(target)])
                assert seen.count(b"event: command") == count
            elif shape == "heartbeat":
                for _ in range(count):
                    await client.exchange(b"POST", HEARTBEAT_PATH, HEARTBEAT_BODY)
            else:
                for _ in range(count):
                    await client.exchange(b"GET", POLL_PATH + b"&delay=%g" % delay, None)
            return time.process_time() - started
        finally:
            stream.close()

    return _timed(run) / count * 1e6


def whole_heartbeat(count: int, port: int) -> float:
    """µs of CPU per ``RelayClient.heartbeat`` on the real transport, for scale."""
    from orchestrator.relay._client import RelayClient, make_http_transport
    from orchestrator.relay._wire import Heartbeat, Load

    beat = Heartbeat(version="0.1.0", agents=[_agent(n) for n in range(10)],
                     load=Load(cpu_percent=1.5, memory_rss=33000000, agent_count=10))
    base = f"http://127.0.0.1:{port}"

    async def run() -> float:
        transport = make_http_transport(base)
        async with transport:  # type: ignore[union-attr]
            client = RelayClient(base, lambda: TOKEN.decode(), transport=transport)
            await client.heartbeat("orch-bench", beat)  # connected, headers made
            started = time.process_time()
            for _ in range(count):
                await client.heartbeat("orch-bench", beat)
            return time.process_time() - started

    return _timed(run) / count * 1e6


# -- the dev relay's server ----------------------------------------------------------------


def serve_asgi() -> None:
    """(``--serve-asgi``) The dev relay's HTTP server with an app that answers
    ``{}`` at once: prints its port, serves until killed."""
    from orchestrator.devrelay._asgi_server import serve_asgi as serve_app

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"{}"})

    async def main() -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_app, app, sock)  # listening from here
            print(sock.getsockname()[1], flush=True)

    trio.run(main)


def server_side(count: int) -> float:
    """µs of the dev relay server's CPU per heartbeat, one kept-alive connection."""
    import psutil

    server = subprocess.Popen([sys.executable, __file__, "--serve-asgi"], stdout=subprocess.PIPE)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        request = (b"POST %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"
                   b"Accept: application/json\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\n\r\n%s"
                   % (HEARTBEAT_PATH, HOST, TOKEN, len(HEARTBEAT_BODY), HEARTBEAT_BODY))
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            process = psutil.Process(server.pid)
            for n in range(count + 200):  # the first 200 warm it up
                if n == 200:
                    times = process.cpu_times()
                    started = times.user + times.system
                conn.sendall(request)
                answer = conn.recv(65536)
                assert answer.endswith(b"\r\n\r\n{}"), answer
            times = process.cpu_times()
            return (times.user + times.system - started) / count * 1e6
    finally:
        server.kill()
        server.wait(timeout=10)


# -- 3. memory: a fresh interpreter per probe ------------------------------------------


def memory_probe(kind: str) -> None:
    """(``--memory-probe``, a fresh interpreter) What the parser costs the
    client: RSS before and after its import (and what tracemalloc saw it
    allocate), after the rest of the relay client (what ``run`` loads for it),
    and after the workload in memory; printed as JSON."""
    import tracemalloc

    import attrs  # noqa: F401  (the daemon has it anyway; ours imports it)
    import psutil

    def rss() -> int:
        return int(psutil.Process().memory_info().rss)

    before = rss()
    tracemalloc.start()
    importlib.import_module(CLIENTS[kind])  # the parser and a few lines of client
    traced = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    imported = rss()
    import orchestrator.relay._client  # noqa: F401

    for shape in ("heartbeat", "stream", "poll"):
        in_memory(kind, shape, 1000)
    print(json.dumps({"rss_before": before, "rss_parser": imported, "rss_after": rss(),
                      "traced_bytes": traced}))


def _probe(kind: str) -> dict[str, int]:
    out = subprocess.run([sys.executable, __file__, "--memory-probe", kind], check=True,
                         capture_output=True, text=True, timeout=120).stdout
    result: dict[str, int] = json.loads(out)
    return result


# -- main ------------------------------------------------------------------------------------


def _summary(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "runs": values}


def _figure(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.0f}–{max(values):.0f})"


def main(args: argparse.Namespace) -> None:
    counts = {"heartbeat": args.requests, "stream": args.events, "poll": args.polls}
    kinds = list(CLIENTS)
    memory_counts = {shape: count * 10 for shape, count in counts.items()}
    alone: dict[str, dict[str, list[float]]] = {s: {k: [] for k in kinds} for s in counts}
    wire: dict[str, dict[str, list[float]]] = {s: {k: [] for k in kinds} for s in counts}
    whole: list[float] = []
    server = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        for shape in counts:  # warm both up: imports, caches, the server's threads
            for kind in kinds:
                in_memory(kind, shape, 100)
                on_loopback(kind, shape, 20, port, args.pace, args.delay)
        for repetition in range(args.repeat):
            order = kinds if repetition % 2 == 0 else kinds[::-1]
            for shape, count in counts.items():
                for kind in order:
                    alone[shape][kind].append(in_memory(kind, shape, memory_counts[shape]))
                    wire[shape][kind].append(
                        on_loopback(kind, shape, count, port, args.pace, args.delay))
            whole.append(whole_heartbeat(args.requests, port))
    finally:
        server.kill()
        server.wait(timeout=10)
    memory = {kind: [_probe(kind) for _ in range(3)] for kind in kinds}
    served = [server_side(args.requests) for _ in range(args.repeat)]

    h11_version = importlib.import_module("h11").__version__
    data: dict[str, Any] = {
        "requests": args.requests, "events": args.events, "polls": args.polls,
        "repeat": args.repeat, "pace_s": args.pace, "poll_delay_s": args.delay,
        "h11_version": h11_version,
        "parser_alone_us": {s: {k: _summary(v) for k, v in by.items()} for s, by in alone.items()},
        "loopback_us": {s: {k: _summary(v) for k, v in by.items()} for s, by in wire.items()},
        "whole_heartbeat_us": _summary(whole),
        "memory": memory,
        "dev_relay_server_us_per_heartbeat": _summary(served),
    }
    unit = {"heartbeat": "request", "stream": "event", "poll": "response"}
    print(f"HTTP/1.1 client framing, ours against h11 {h11_version}: µs of CPU, "
          f"medians of {args.repeat} (min–max)")
    print(f"  {'':<34} {'ours':>18} {'h11':>18} {'h11 adds':>9}")
    for shape in counts:
        for label, table in (("alone", alone), ("loopback", wire)):
            ours, theirs = (table[shape][k] for k in kinds)
            more = statistics.median(theirs) - statistics.median(ours)
            print(f"  {shape + ' per ' + unit[shape] + ', ' + label:<34} {_figure(ours):>18} "
                  f"{_figure(theirs):>18} {more:>9.1f}")
    whole_us = statistics.median(whole)
    added = statistics.median(wire["heartbeat"]["h11"]) - statistics.median(
        wire["heartbeat"]["ours"])
    data["h11_adds_to_a_heartbeat_percent"] = added / whole_us * 100
    print(fmt_row("whole RelayClient.heartbeat, ours", _figure(whole), "-"))
    print(fmt_row("h11 would add to it", f"{added / whole_us * 100:.0f} %",
                  "within noise, or keep ours"))
    for kind in kinds:
        runs = memory[kind]
        parser_mb = statistics.median(r["rss_parser"] - r["rss_before"] for r in runs) / 2**20
        after_mb = statistics.median(r["rss_after"] for r in runs) / 2**20
        module_kb = statistics.median(r["traced_bytes"] for r in runs) / 1024
        print(fmt_row(f"{kind}: its import, RSS (traced)",
                      f"{parser_mb:.2f} MB ({module_kb:.0f} kB)", "-"))
        print(fmt_row(f"{kind}: probe's RSS after the workload", f"{after_mb:.1f} MB",
                      "≤ 45 MB whole daemon (TARGETS)"))
    print(fmt_row("dev relay server (h11) per heartbeat", _figure(served), "-"))
    path = write_json("http_parser", data)
    print(f"wrote {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--requests", type=int, default=2000, help="heartbeats per run")
    parser.add_argument("--events", type=int, default=2000, help="stream events per run")
    parser.add_argument("--polls", type=int, default=300, help="long polls per run")
    parser.add_argument("--pace", type=float, default=0.0005, help="s between stream events")
    parser.add_argument("--delay", type=float, default=0.002, help="s before a poll's answer")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-asgi", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--memory-probe", choices=list(CLIENTS), help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.serve:
        serve()
    elif options.serve_asgi:
        serve_asgi()
    elif options.memory_probe:
        memory_probe(options.memory_probe)
    else:
        main(options)
