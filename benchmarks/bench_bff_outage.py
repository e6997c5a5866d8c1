"""A BFF worker through a token endpoint outage: threads, browser call latency, lost sessions,
the herd at recovery, and how long until every session works again.

    python benchmarks/bench_bff_outage.py [--sessions 2000] [--mode refused|503|hanging]
        [--outage 60] [--warmup 25] [--recovery 30] [--rate 400] [--ttl 20]
    python benchmarks/bench_bff_outage.py --sessions 10000 --ttl 300 --outage 0 \
        --warmup 30 --recovery 0        # steady state only: proxied-call p99 with 10,000

Processes: the reference server (access tokens of ``--ttl`` s, 20 by default), a gate in front
of its token endpoint that passes, refuses, answers 503 or hangs on command, a light API that
accepts a token until its JWT ``exp``, one BFF worker (uvicorn) with every session in a
MemorySessionStore, and this process, which logs every session in (a password grant each: a
refresh token of its own), then calls the BFF round-robin over the sessions at ``--rate``
calls/s and records each call.

The sessions' tokens are handed to the BFF as if obtained at times spread over one lifetime
(``--spread``, on by default): their refreshes come at the steady rate of sessions / ttl from
the start, not all at once one lifetime after the logins. Every call gives up after
``--call-timeout`` s (counted as 599), so that a saturated worker still ends the run.

Goals (issue 19): threads at most 50; during the outage every call answers within 2 s (200
while its token works, else 503, never 500); no session lost; at recovery at most the
per-issuer cap of token requests in the air; every session working again within 10 s.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from _support import server_process

HERE = Path(__file__).resolve()
SECRET = "the outage benchmark's passphrase"


def leeway_for(ttl: float) -> float:
    """The BFF's leeway (a token is refreshed when it has this much left): its default of 30 s,
    or a quarter of shorter lifetimes (5 s for 20 s tokens)."""
    return min(30.0, ttl / 4)


MODES = ("refused", "503", "hanging")
STALL_TICK = 0.05  # the worker's loop is watched with sleeps of this length
STALL = 0.1  # a sleep that ends later than this past its time is a stall of the loop
background: set[asyncio.Future[None]] = set()


# -- the light API: a token works until its JWT exp ------------------------------------------


async def _api(port: int) -> None:
    ok = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 12\r\n\r\n"
        b'{"items":[]}'
    )
    rejected = (
        b'HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Bearer error="invalid_token"\r\n'
        b"content-length: 0\r\n\r\n"
    )

    def works(head: bytes) -> bool:
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"authorization":
                token = value.strip().split(b" ", 1)[-1]
                try:
                    payload = token.split(b".")[1]
                    claims = json.loads(
                        base64.urlsafe_b64decode(payload + b"=" * (-len(payload) % 4))
                    )
                    return float(claims["exp"]) > time.time()
                except (IndexError, ValueError, KeyError, TypeError):
                    return False
        return False

    class Protocol(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            self.buffer = b""

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            while b"\r\n\r\n" in self.buffer:
                head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
                self.transport.write(ok if works(head) else rejected)

    server = await asyncio.get_running_loop().create_server(Protocol, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


# -- the gate: the token endpoint's availability, on command ---------------------------------


class Gate:
    """A TCP relay to the reference server; ``mode`` is pass, refused, 503 or hanging. Counts
    the token requests in the air (a request sent, its answer not begun) and their peak.

    Leaving ``pass`` closes every connection at once, as a provider that fails abruptly does:
    a request in the air then may have been processed by the server (its refresh token
    rotated) with its answer lost. ``cut`` counts them."""

    def __init__(self, port: int, target: int) -> None:
        self.port, self.target = port, target
        self.mode = "pass"
        self.in_air = 0
        self.peak = 0
        self.requests = 0
        self.cut = 0
        self.server: asyncio.base_events.Server | None = None
        self.connections: set[asyncio.StreamWriter] = set()

    async def listen(self) -> None:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", self.port)

    async def set_mode(self, mode: str) -> None:
        if self.mode == "pass" and mode != "pass":
            self.cut += self.in_air
        self.mode = mode
        for writer in list(self.connections):  # every kept-alive connection ends with the mode
            writer.close()
        self.connections.clear()
        if mode == "refused" and self.server is not None:
            self.server.close()
            self.server = None
        elif mode != "refused" and self.server is None:
            await self.listen()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections.add(writer)
        try:
            if self.mode == "pass":
                await self.relay(reader, writer)
            elif self.mode == "503":
                while head := await reader.readuntil(b"\r\n\r\n"):
                    length = 0
                    for line in head.split(b"\r\n"):
                        if line.lower().startswith(b"content-length:"):
                            length = int(line.split(b":")[1])
                    await reader.readexactly(length)
                    self.requests += 1
                    writer.write(
                        b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
                        b'content-length: 35\r\n\r\n{"error":"temporarily_unavailable"}'
                    )
            else:  # hanging: read and never answer
                while await reader.read(65536):
                    self.requests += 1
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            self.connections.discard(writer)
            writer.close()

    async def relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        waiting = False

        async def upward() -> None:
            nonlocal waiting
            while data := await reader.read(65536):
                if not waiting:
                    waiting = True
                    self.requests += 1
                    self.in_air += 1
                    self.peak = max(self.peak, self.in_air)
                up_writer.write(data)
            up_writer.close()

        async def downward() -> None:
            nonlocal waiting
            while data := await up_reader.read(65536):
                if waiting:
                    waiting = False
                    self.in_air -= 1
                writer.write(data)
            writer.close()

        try:
            await asyncio.gather(upward(), downward())
        finally:
            if waiting:
                self.in_air -= 1
            up_writer.close()

    def stats(self) -> dict[str, int]:
        return {
            "in_air": self.in_air,
            "peak": self.peak,
            "requests": self.requests,
            "cut": self.cut,
        }


async def _gate(port: int, target: int) -> None:
    """Commands on stdin, one a line: ``mode M``, ``reset`` (the peak), ``stats``; each
    answered with the stats as one JSON line."""
    gate = Gate(port, target)
    await gate.listen()
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        words = line.split()
        if words[:1] == ["mode"]:
            await gate.set_mode(words[1])
        elif words[:1] == ["reset"]:
            gate.peak = gate.in_air
            gate.requests = 0
        print(json.dumps(gate.stats()), flush=True)


# -- the BFF worker --------------------------------------------------------------------------

TRACE_ENV = "BENCH_OUTAGE_TRACE"


def fingerprint(secret: str | None) -> str:
    """A refresh token's short SHA-256: traces name tokens without holding them."""
    import hashlib

    return "-" if secret is None else hashlib.sha256(secret.encode()).hexdigest()[:12]


def _tracing_refresher(token_url: str, attempts: list[tuple[float, str, str]]) -> Any:
    """The BFF's refresher, recording each token request: (monotonic start, the refresh token
    presented, what came of it: ``ok <new refresh token>`` or the failure)."""
    from freshtoken import OAuth2Refresher, TokenSet

    class Tracing(OAuth2Refresher):
        async def arefresh(self, current: TokenSet | None, *args: Any, **kwargs: Any) -> TokenSet:
            begun = time.monotonic()
            presented = fingerprint(None if current is None else current.refresh_token)
            try:
                tokens = await super().arefresh(current, *args, **kwargs)
            except Exception as error:
                code = getattr(error, "error", type(error).__name__)
                lost = " lost" if getattr(error, "answer_lost", False) else ""
                attempts.append((begun, presented, f"{code}{lost} +{time.monotonic() - begun:.3f}"))
                raise
            took = time.monotonic() - begun
            attempts.append(
                (begun, presented, f"ok {fingerprint(tokens.refresh_token)} +{took:.3f}")
            )
            return tokens

    return Tracing(
        token_url, client_id="demo", client_secret="demo-secret", allow_insecure_http=True
    )


def _bff(
    port: int,
    token_url: str,
    api: str,
    ids_file: str,
    tokens_file: str,
    *,
    spread: float,
    leeway: float,
    refresh_wait: float | None,
) -> None:
    import uvicorn

    from freshtoken import TokenSet
    from freshtoken.bff import BFF, MemorySessionStore
    from freshtoken.bff._app import REFRESH_WAIT

    answers = json.loads(Path(tokens_file).read_text())
    trace_file = os.environ.get(TRACE_ENV)
    attempts: list[tuple[float, str, str]] = []
    bff = BFF(
        token_url=token_url,
        refresher=None if trace_file is None else _tracing_refresher(token_url, attempts),
        client_id="demo",
        client_secret="demo-secret",
        secret_key=SECRET,
        routes={"/api/": f"{api}/"},
        sessions=MemorySessionStore(),
        allow_insecure_http=True,
        leeway=leeway,
        refresh_wait=REFRESH_WAIT if refresh_wait is None else refresh_wait,
    )

    # What the worker itself sees, written at shutdown: each call's start and its time in the
    # app, and the event loop's stalls. A browser's latency minus the app's is queueing outside
    # it (accept, parsing, a worker that gets little of a busy machine's CPU).
    answers_times: list[tuple[float, float]] = []
    stalls: list[tuple[float, float]] = []

    async def watch_loop() -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(STALL_TICK)
            late = time.monotonic() - before - STALL_TICK
            if late > STALL:
                stalls.append((before, late))

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            begun = time.monotonic()
            await bff(scope, receive, send)
            answers_times.append((begun, time.monotonic() - begun))
            return

        async def started(message: Any) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                document = {"calls": answers_times, "stalls": stalls}
                Path(ids_file + ".worker").write_text(json.dumps(document))
                if trace_file is not None:
                    Path(trace_file).write_text(json.dumps(attempts))
            if message["type"] == "lifespan.startup.complete":
                watcher = asyncio.ensure_future(watch_loop())
                background.add(watcher)
                ids = []
                now = time.time()
                for n, (answer, sent_at) in enumerate(answers):
                    # Spread: as if obtained earlier (never later than they were, so the BFF
                    # never believes a token lives longer than its JWT says).
                    obtained = min(sent_at, now - spread * n / len(answers))
                    tokens = TokenSet.from_response(answer, sent_at=obtained)
                    session_id, _ = await bff.start_session(tokens, {"sub": "demo"})
                    ids.append(session_id)
                Path(ids_file).write_text("\n".join(ids))
            await send(message)

        await bff(scope, receive, started)

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", access_log=False)


# -- this process: logins, load, measures ----------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def child(*args: str, stdin: bool = False) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, str(HERE), *args],
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE if stdin else subprocess.DEVNULL,
        text=True,
    )
    try:
        yield process
    finally:
        process.terminate()
        process.wait(10)


def wait_port(port: int, seconds: float = 60.0) -> None:
    import socket

    deadline = time.monotonic() + seconds
    while True:  # a subprocess's readiness: poll its port
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def logins(issuer: str, count: int) -> list[tuple[dict[str, Any], float]]:
    form = {
        "grant_type": "password",
        "username": "demo",
        "password": "demo",
        "client_id": "demo",
        "client_secret": "demo-secret",
        "scope": "read write",
    }
    with httpx.Client(timeout=30.0) as http:

        def one(_: int) -> tuple[dict[str, Any], float]:
            sent_at = time.time()
            answer = http.post(issuer + "/oauth/token", data=form)
            answer.raise_for_status()
            return answer.json(), sent_at

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            return list(pool.map(one, range(count)))


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Gatekeeper:
    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lock = threading.Lock()

    def __call__(self, command: str) -> dict[str, int]:
        with self.lock:
            assert self.process.stdin is not None
            assert self.process.stdout is not None
            self.process.stdin.write(command + "\n")
            self.process.stdin.flush()
            result: dict[str, int] = json.loads(self.process.stdout.readline())
            return result


async def load(
    url: str,
    ids: list[str],
    rate: float,
    seconds: float,
    calls: list[tuple[float, float, int, int]],
    *,
    call_timeout: float = 30.0,
) -> None:
    """GET /api/items round-robin over the sessions at ``rate`` calls/s for ``seconds``;
    each call recorded as (start, latency, status, session index); 599 for no answer."""
    import aiohttp

    position = 0
    started = time.monotonic()
    connector = aiohttp.TCPConnector(limit=0)  # browsers each have their own connections
    timeout = aiohttp.ClientTimeout(total=call_timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(index: int) -> None:
            begun = time.monotonic()
            headers = {"X-CSRF": "1", "Cookie": f"__Host-bff={ids[index]}"}
            try:
                async with session.get(url + "/api/items", headers=headers) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, asyncio.TimeoutError):
                status = 599
            calls.append((begun, time.monotonic() - begun, status, index))

        tasks = set()
        while (now := time.monotonic()) - started < seconds:
            due = int((now - started) * rate)
            while position < due:
                task = asyncio.ensure_future(one(position % len(ids)))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                position += 1
            await asyncio.sleep(0.005)
        if tasks:
            await asyncio.wait(tasks)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def run(args: argparse.Namespace) -> None:
    directory = Path(tempfile.mkdtemp(prefix="bench-bff-outage-"))
    ids_file, tokens_file = directory / "ids", directory / "tokens.json"
    trace_file = directory / "trace.json"
    if args.trace:
        os.environ[TRACE_ENV] = str(trace_file)  # the BFF child inherits it
    server_stats: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        issuer = stack.enter_context(server_process("--access-ttl", f"{args.ttl:g}"))
        issuer_port = int(issuer.rsplit(":", 1)[1])
        gate_port, api_port, bff_port = free_port(), free_port(), free_port()
        gate = Gatekeeper(
            stack.enter_context(child("--gate", str(gate_port), str(issuer_port), stdin=True))
        )
        stack.enter_context(child("--api", str(api_port)))
        started = time.monotonic()
        tokens_file.write_text(json.dumps(logins(issuer, args.sessions)))
        print(f"{args.sessions:,} logins in {time.monotonic() - started:.1f} s")
        bff = stack.enter_context(
            child(
                "--bff",
                str(bff_port),
                f"http://127.0.0.1:{gate_port}/oauth/token",
                f"http://127.0.0.1:{api_port}",
                str(ids_file),
                str(tokens_file),
                f"{args.ttl - leeway_for(args.ttl) if args.spread else 0.0:g}",
                f"{leeway_for(args.ttl):g}",
                "-" if args.refresh_wait is None else f"{args.refresh_wait:g}",
            )
        )
        wait_port(api_port)
        deadline = time.monotonic() + 600
        while not ids_file.exists() or not ids_file.read_text():
            if time.monotonic() > deadline or bff.poll() is not None:
                raise SystemExit("the BFF did not start its sessions")
            time.sleep(0.1)
        ids = ids_file.read_text().split()
        url = f"http://127.0.0.1:{bff_port}"
        calls: list[tuple[float, float, int, int]] = []
        samples: list[tuple[float, int]] = []
        marks: dict[str, float] = {}
        loads: dict[str, float] = {}
        cpu: dict[str, float] = {}
        gate_stats: dict[str, dict[str, int]] = {}
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.25):
                samples.append((time.monotonic(), threads_of(bff.pid)))

        def schedule() -> None:
            marks["start"] = time.monotonic()
            loads["start"] = os.getloadavg()[0]
            cpu["start"] = cpu_of(bff.pid)
            gate("reset")
            time.sleep(args.warmup)
            gate_stats["warmup"] = gate("stats")
            gate("reset")
            marks["down"] = time.monotonic()
            loads["down"] = os.getloadavg()[0]
            cpu["down"] = cpu_of(bff.pid)
            if args.outage > 0:
                gate(f"mode {args.mode}")
                time.sleep(args.outage)
            gate_stats["outage"] = gate("stats")
            if args.outage > 0:
                gate("mode pass")
            gate("reset")
            marks["up"] = time.monotonic()
            loads["up"] = os.getloadavg()[0]
            cpu["up"] = cpu_of(bff.pid)
            time.sleep(args.recovery)
            gate_stats["recovery"] = gate("stats")
            cpu["end"] = cpu_of(bff.pid)
            loads["end"] = os.getloadavg()[0]

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        scheduler = threading.Thread(target=schedule, daemon=True)
        scheduler.start()
        total = args.warmup + args.outage + args.recovery
        asyncio.run(load(url, ids, args.rate, total, calls, call_timeout=args.call_timeout))
        scheduler.join()
        # Lost sessions: every one called once more, now that the provider is back.
        final: list[tuple[float, float, int, int]] = []
        final_rate = max(args.rate, 500.0)
        asyncio.run(
            load(url, ids, final_rate, len(ids) / final_rate, final, call_timeout=args.call_timeout)
        )
        stop.set()
        threads_now = threads_of(bff.pid)
        server_stats = httpx.get(issuer + "/admin/stats").json()
    worker_file = Path(str(ids_file) + ".worker")
    worker = json.loads(worker_file.read_text()) if worker_file.exists() else None
    report(
        args,
        ids=ids,
        calls=calls,
        final=final,
        samples=samples,
        marks=marks,
        cpu=cpu,
        gate_stats=gate_stats,
        threads_end=threads_now,
        loads=loads,
        worker=worker,
    )
    refreshes = server_stats.get("refreshes", 0)
    print(
        f"  the server: {refreshes:,} refreshes, "
        f"{server_stats.get('reuse_detections', 0)} refresh token reuses detected "
        f"(each revokes a session), {server_stats.get('grace_replays', 0)} grace replays"
    )
    if args.trace:
        (directory / "calls.json").write_text(json.dumps({"calls": calls, "marks": marks}))
        print(f"  trace: {directory}")
    if args.trace and trace_file.exists():
        trace_lost(
            json.loads(trace_file.read_text()),
            json.loads(tokens_file.read_text()),
            [call[3] for call in final if call[2] == 401],
            marks,
        )


def trace_lost(
    attempts: list[tuple[float, str, str]],
    answers: list[tuple[dict[str, Any], float]],
    lost: list[int],
    marks: dict[str, float],
) -> None:
    """Every token request of each lost session, following its refresh tokens from its login,
    times relative to the outage's start."""
    by_token: dict[str, list[tuple[float, str, str]]] = {}
    for attempt in attempts:
        by_token.setdefault(attempt[1], []).append(attempt)
    for index in lost:
        print(f"  lost session {index}: its token requests (s from the outage's start)")
        token, seen = fingerprint(answers[index][0].get("refresh_token")), set()
        while token in by_token and token not in seen:
            seen.add(token)
            following = None
            for begun, presented, outcome in sorted(by_token[token]):
                print(f"    {begun - marks['down']:+9.3f}  presented {presented}: {outcome}")
                if outcome.startswith("ok "):
                    following = outcome.split()[1]
            if following is None:
                break
            token = following


def report(
    args: argparse.Namespace,
    *,
    ids: list[str],
    calls: list[tuple[float, float, int, int]],
    final: list[tuple[float, float, int, int]],
    samples: list[tuple[float, int]],
    marks: dict[str, float],
    cpu: dict[str, float],
    gate_stats: dict[str, dict[str, int]],
    threads_end: int,
    loads: dict[str, float],
    worker: dict[str, list[list[float]]] | None,
) -> None:
    down, up = marks["down"], marks["up"]
    during = [call for call in calls if down <= call[0] < up]
    latencies = [call[1] for call in during]
    statuses: dict[int, int] = {}
    for call in during:
        statuses[call[2]] = statuses.get(call[2], 0) + 1
    slow = sum(1 for latency in latencies if latency > 2.0)
    recovered: dict[int, float] = {}
    for begun, latency, status, index in calls:
        if begun >= up and status == 200 and index not in recovered:
            recovered[index] = begun + latency - up
    called_after = {call[3] for call in calls if call[0] >= up}
    lost = sum(1 for call in final if call[2] == 401)
    final_statuses: dict[int, int] = {}
    for call in final:
        final_statuses[call[2]] = final_statuses.get(call[2], 0) + 1
    threads = [count for _, count in samples]
    phase_threads = {
        name: max((count for at, count in samples if lo <= at < hi), default=0)
        for name, lo, hi in (
            ("warm-up", marks["start"], down),
            ("outage", down, up),
            ("recovery", up, up + args.recovery),
        )
    }
    before = [call[1] for call in calls if call[0] < down]
    before_statuses: dict[int, int] = {}
    for call in calls:
        if call[0] < down:
            before_statuses[call[2]] = before_statuses.get(call[2], 0) + 1
    print(
        f"BFF outage, mode {args.mode}: {len(ids):,} sessions, tokens of {args.ttl:g} s "
        f"({'refreshes spread over a lifetime' if args.spread else 'as obtained'}), "
        f"leeway {leeway_for(args.ttl):g} s, "
        f"refresh_wait {'default' if args.refresh_wait is None else f'{args.refresh_wait:g} s'}, "
        f"{args.rate:g} calls/s; warm-up {args.warmup:g} s, outage {args.outage:g} s, "
        f"recovery {args.recovery:g} s"
    )
    print(
        f"  threads: max {max(threads, default=0)} (warm-up {phase_threads['warm-up']}, "
        f"outage {phase_threads['outage']}, recovery {phase_threads['recovery']}; "
        f"{threads_end} at the end)"
    )
    print(
        f"  calls before the outage: {len(before):,} {dict(sorted(before_statuses.items()))}; "
        f"latency p50 {1000 * percentile(before, 0.5):.1f} ms, "
        f"p99 {1000 * percentile(before, 0.99):.1f} ms, "
        f"max {1000 * max(before, default=0):.0f} ms"
    )
    if args.outage <= 0:
        seconds = down - marks["start"]
        print(f"  BFF CPU: {(cpu['down'] - cpu['start']) / seconds:.2f} core")
        print(
            f"  machine load average (1 min): start {loads['start']:.1f}, end {loads['down']:.1f}"
        )
        print(f"  sessions lost (401 login_required afterwards): {lost} {final_statuses}")
        return
    print(
        f"  calls during the outage: {len(during):,} {dict(sorted(statuses.items()))}; "
        f"latency p50 {1000 * percentile(latencies, 0.5):.0f} ms, "
        f"p99 {1000 * percentile(latencies, 0.99):.0f} ms, "
        f"max {1000 * max(latencies, default=0):.0f} ms; {slow} over 2 s"
    )
    if worker is not None:
        inside = [latency for begun, latency in worker["calls"] if down <= begun < up]
        stalled = [late for begun, late in worker["stalls"] if down <= begun < up]
        print(
            f"  the same calls inside the worker (its app, from the request to the answer): "
            f"p50 {1000 * percentile(inside, 0.5):.0f} ms, "
            f"p99 {1000 * percentile(inside, 0.99):.0f} ms, "
            f"max {1000 * max(inside, default=0):.0f} ms; its loop stalled over "
            f"{1000 * STALL:.0f} ms {len(stalled)} times, the longest "
            f"{1000 * max(stalled, default=0):.0f} ms"
        )
    print(
        "  machine load average (1 min): "
        + ", ".join(
            f"{name} {loads[name]:.1f}" for name in ("start", "down", "up", "end") if name in loads
        )
    )
    for phase, (lo, hi) in (("warm-up", ("start", "down")), ("outage", ("down", "up"))):
        seconds = marks[hi] - marks[lo]
        print(f"  BFF CPU, {phase}: {(cpu[hi] - cpu[lo]) / seconds:.2f} core")
    if args.recovery > 0:
        print(f"  BFF CPU, recovery: {(cpu['end'] - cpu['up']) / args.recovery:.2f} core")
    outage_requests = gate_stats["outage"]["requests"]
    print(
        f"  token requests in the air when the gate closed (cut off, answers lost; a server "
        f"that processed one rotated its refresh token): {gate_stats['outage']['cut']}"
    )
    print(
        f"  token requests: {gate_stats['warmup']['requests'] / args.warmup:.0f}/s before, "
        f"{outage_requests / args.outage:.0f}/s during the outage reached the gate"
    )
    print(
        f"  at recovery: at most {gate_stats['recovery']['peak']} token requests in the air; "
        f"{gate_stats['recovery']['requests']} in {args.recovery:g} s"
    )
    if recovered:
        slowest = max(recovered.values())
        print(
            f"  sessions working again (first 200 after recovery): {len(recovered):,} of "
            f"{len(called_after):,} called; the last {slowest:.1f} s after the provider "
            f"(a round over every session takes {len(ids) / args.rate:.1f} s at this rate); "
            f"{len(called_after - set(recovered)):,} called but never answered 200"
        )
    print(f"  sessions lost (401 login_required afterwards): {lost} {final_statuses}")


def main() -> None:
    # Thousands of browsers' connections: the BFF, and this process, need the fds (inherited).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--mode", choices=MODES, default="refused")
    parser.add_argument("--outage", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=25.0)
    parser.add_argument("--recovery", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=400.0)
    parser.add_argument("--ttl", type=float, default=20.0, help="access token lifetime, s")
    parser.add_argument(
        "--spread",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="tokens as if obtained over one lifetime: refreshes at a steady rate",
    )
    parser.add_argument(
        "--call-timeout", type=float, default=30.0, help="a call unanswered after this is 599"
    )
    parser.add_argument(
        "--trace",
        action="store_true",
        help="record the BFF's token requests; print those of each lost session",
    )
    parser.add_argument("--api", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--gate", nargs=2, type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--refresh-wait", type=float, help="the BFF's refresh_wait (default: the BFF's own)"
    )
    parser.add_argument("--bff", nargs=8, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.api is not None:
        asyncio.run(_api(args.api))
    elif args.gate is not None:
        asyncio.run(_gate(*args.gate))
    elif args.bff is not None:
        port, token_url, api, ids_file, tokens_file, spread, leeway, wait = args.bff
        _bff(
            int(port),
            token_url,
            api,
            ids_file,
            tokens_file,
            spread=float(spread),
            leeway=float(leeway),
            refresh_wait=None if wait == "-" else float(wait),
        )
    else:
        run(args)


if __name__ == "__main__":
    main()
