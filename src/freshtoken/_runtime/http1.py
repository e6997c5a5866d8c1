"""The flight host's HTTP/1.1 client for token endpoints: h11 over asyncio's own transports.

A refresh is one small POST and one small answer, and at a fleet's scale the client's own cost
is most of a refresh's CPU. One warm token POST to the reference server and its answer, median
microseconds, the clients taking turns (``benchmarks/bench_engine.py --transports --rounds
500``, two runs on a shared 2-core machine): this client 799 and 1,005; aiohttp 912 and 1,178;
httpcore's pool used directly 1,039 and 1,307; httpx's blocking client 1,116 and 1,460;
``httpx.AsyncClient`` 1,343 and 1,749. The difference is plumbing (anyio streams, httpcore's
pool and its locks, httpx's models), none of which a token request needs; h11, which does the
protocol, is the same. aiohttp comes close but is an optional dependency; h11 is one already.

What it does, and nothing more, since a token endpoint gets nothing else:

* one keep-alive pool per event loop and TLS configuration, keyed by scheme, host and port;
  an idle connection is dropped after ``KEEPALIVE`` seconds, or as soon as the server closes
  it, and never reused unless its last exchange ended cleanly;
* no proxies, no redirects, no cookies, no default headers: the request goes out as built;
* ``gzip`` and ``deflate`` answers are decoded, with the output capped (a small compressed
  answer cannot inflate past ``limit``); other codings are handed on as they are, as httpx
  does without their optional decoders;
* failures raise httpx's own exceptions (``ConnectError``, ``ConnectTimeout``,
  ``ReadTimeout``, ``RemoteProtocolError``...), so that callers classify them one way
  whichever client sent the request;
* a cancelled exchange closes its connection: it is mid-message.
"""

from __future__ import annotations

import asyncio
import select
import ssl
import time
import zlib
from collections.abc import Callable

import h11
import httpx

__all__ = ["KEEPALIVE", "Answer", "Pool"]

KEEPALIVE = 5.0  # seconds an idle connection is kept (httpx's default, under most servers')
MOST_IDLE = 64  # idle connections kept per origin
_LONGEST_HEAD = 64 * 1024  # bytes of an answer's head still incomplete: past them, refused
_HIGH_WATER = 256 * 1024  # bytes received and not yet parsed before reading pauses

Answer = tuple[int, list[tuple[bytes, bytes]], bytes]  # status, headers, decoded body
_Origin = tuple[str, str, int]


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection and its h11 state; the bytes the loop hands over wait in
    ``incoming`` until the exchange's task parses them."""

    def __init__(self) -> None:
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=_LONGEST_HEAD)
        self.transport: asyncio.Transport | None = None
        self.incoming = bytearray()
        self.ended = False  # the server closed its side, or the connection is gone
        self.received = 0  # bytes received since the last request went out
        self.paused = False
        self.idle_since = 0.0
        self._wake: asyncio.Future[None] | None = None
        self._eof_told = False  # h11 was told of the end of the server's side

    # -- asyncio's callbacks ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        self.incoming += data
        if len(self.incoming) > _HIGH_WATER and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake_up()

    def eof_received(self) -> bool:
        self.ended = True
        self._wake_up()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended = True
        self._wake_up()

    # -- for the exchange -------------------------------------------------------------------

    def reusable(self, now: float) -> bool:
        return (
            not self.ended
            and not self.incoming  # a server that talks out of turn is not to be trusted
            and self.h11.our_state is h11.IDLE
            and self.h11.their_state is h11.IDLE
            and now - self.idle_since < KEEPALIVE
            and not self._readable()
        )

    def _readable(self) -> bool:
        """Whether bytes or the end arrived that the loop has not handed over yet: an idle
        connection the server just closed is seen here, not by the request sent on it."""
        sock = None if self.transport is None else self.transport.get_extra_info("socket")
        if sock is None:
            return False
        try:
            return bool(select.select([sock], [], [], 0)[0])
        except (OSError, ValueError):  # closed under us
            return True

    def close(self) -> None:
        self.ended = True
        if self.transport is not None:
            self.transport.close()

    async def next_event(self, read_timeout: float | None) -> object:
        """The next h11 event of the answer, waiting at most ``read_timeout`` for each read."""
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            if self.incoming:
                data, self.incoming = bytes(self.incoming), bytearray()
                if self.paused and self.transport is not None:
                    self.paused = False
                    self.transport.resume_reading()
                self.h11.receive_data(data)
            elif self.ended:
                if self._eof_told:
                    raise httpx.RemoteProtocolError("the server closed the connection")
                self._eof_told = True
                self.h11.receive_data(b"")  # h11 says whether the answer was complete
            else:
                await self._wait(read_timeout)

    async def _wait(self, timeout: float | None) -> None:
        loop = asyncio.get_running_loop()
        wake = self._wake = loop.create_future()
        timer = None if timeout is None else loop.call_later(timeout, _expire, wake)
        try:
            await wake
        finally:
            self._wake = None
            if timer is not None:
                timer.cancel()

    def _wake_up(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)


class _Crossed(Exception):
    """The server closed the connection without a byte of answer to the request sent on it."""


def _expire(wake: asyncio.Future[None]) -> None:
    if not wake.done():
        wake.set_exception(httpx.ReadTimeout("no answer within the read timeout"))


class Pool:
    """The keep-alive connections of one event loop for one TLS configuration."""

    def __init__(self, verify: ssl.SSLContext) -> None:
        self._tls = verify
        self._idle: dict[_Origin, list[_Connection]] = {}

    async def send(self, request: httpx.Request, timeout: httpx.Timeout, limit: int) -> Answer:
        """Send ``request`` and read its answer, the body decoded and cut off past ``limit``
        bytes (the caller sees more than ``limit`` and refuses it).

        A kept-alive connection the server closed just as the request went out (its close
        and the request crossed: the checkout's look at the socket came too early) is not
        a failure: the request goes once more on a new connection. That closed connection
        sent not a byte back; a server that answers nothing and closes a new connection
        fails the request as usual."""
        url = request.url
        # raw_host: an internationalised name as the network spells it (IDNA), IPv6 unbracketed.
        host = url.raw_host.decode("ascii")
        origin = (url.scheme, host, url.port or (443 if url.scheme == "https" else 80))
        try:
            body = request.content
        except httpx.RequestNotRead:  # a streamed body (its framing is in its headers)
            body = await request.aread()
        head = h11.Request(method=request.method, target=url.raw_path, headers=request.headers.raw)
        kept = self._checkout(origin)
        if kept is not None:
            try:
                return await self._exchange(origin, kept, head, body, timeout=timeout, limit=limit)
            except _Crossed:
                pass
        connection = await self._connect(origin, timeout.connect)
        try:
            return await self._exchange(
                origin, connection, head, body, timeout=timeout, limit=limit
            )
        except _Crossed:
            raise httpx.RemoteProtocolError("the server closed the connection unanswered") from None

    async def _exchange(
        self,
        origin: _Origin,
        connection: _Connection,
        head: h11.Request,
        body: bytes,
        *,
        timeout: httpx.Timeout,
        limit: int,
    ) -> Answer:
        clean = False
        try:
            out = connection.h11.send(head) or b""
            if body:
                out += connection.h11.send(h11.Data(data=body)) or b""
            out += connection.h11.send(h11.EndOfMessage()) or b""
            if connection.ended or connection.transport is None:
                raise _Crossed
            connection.received = 0
            connection.transport.write(out)
            answer, clean = await _read_answer(connection, timeout.read, limit)
            return answer
        except (h11.ProtocolError, httpx.RemoteProtocolError) as error:
            if connection.ended and connection.received == 0:
                raise _Crossed from None
            if isinstance(error, httpx.RemoteProtocolError):
                raise
            raise httpx.RemoteProtocolError(f"not HTTP/1.1: {error}") from None
        finally:
            if clean and connection.h11.our_state is h11.DONE:
                self._checkin(origin, connection)
            else:
                connection.close()

    def close(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()

    def _checkout(self, origin: _Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if connection.reusable(now):
                return connection
            connection.close()
        return None

    def _checkin(self, origin: _Origin, connection: _Connection) -> None:
        if connection.h11.their_state is not h11.DONE or connection.ended:
            connection.close()
            return
        try:
            connection.h11.start_next_cycle()
        except h11.LocalProtocolError:  # the server asked to close ("Connection: close")
            connection.close()
            return
        connection.idle_since = time.monotonic()
        idle = self._idle.setdefault(origin, [])
        idle.append(connection)
        while len(idle) > MOST_IDLE:
            idle.pop(0).close()

    async def _connect(self, origin: _Origin, connect_timeout: float | None) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        secure = scheme == "https"
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(
                    _Connection,
                    host,
                    port,
                    ssl=self._tls if secure else None,
                    server_hostname=host if secure else None,
                ),
                connect_timeout,
            )
        except asyncio.TimeoutError:  # not the builtin TimeoutError on Python 3.10
            raise httpx.ConnectTimeout(f"no connection to {host}:{port} in time") from None
        except (OSError, ssl.SSLError) as error:
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {error}") from None
        return connection


async def _read_answer(
    connection: _Connection, read_timeout: float | None, limit: int
) -> tuple[Answer, bool]:
    """The answer (status, headers, decoded body) and whether it was read to its end: a body
    decoded past ``limit`` bytes is cut there (``limit`` + 1 bytes, which the caller refuses)
    and the rest left unread."""
    while True:
        event = await connection.next_event(read_timeout)
        if isinstance(event, h11.Response):
            break
        if not isinstance(event, h11.InformationalResponse):  # 100 Continue and the like
            raise httpx.RemoteProtocolError("the server closed the connection without answering")
    status, headers = event.status_code, list(event.headers)
    decode = _decoder(headers, limit)
    body = bytearray()
    while True:
        event = await connection.next_event(read_timeout)
        if isinstance(event, h11.Data):
            body += decode(bytes(event.data), limit + 1 - len(body))
            if len(body) > limit:
                return (status, headers, bytes(body)), False
        elif isinstance(event, h11.EndOfMessage):
            body += decode(b"", limit + 1 - len(body))
            return (status, headers, bytes(body)), True
        else:
            raise httpx.RemoteProtocolError("the server closed the connection mid-answer")


Decode = Callable[[bytes, int], bytes]


def _decoder(headers: list[tuple[bytes, bytes]], limit: int) -> Decode:
    """What turns the body's bytes as sent into its bytes (``Content-Encoding``, applied in
    reverse order), each call's output at most the room it is given."""
    codings = [
        coding.strip().lower()
        for name, value in headers
        if name == b"content-encoding"
        for coding in value.split(b",")
    ]
    steps = [_inflater(coding) for coding in reversed(codings)]
    known = [step for step in steps if step is not None]
    if not known:
        return _identity
    if len(known) == 1:
        return known[0]

    def chained(data: bytes, room: int) -> bytes:
        for step in known:
            data = step(data, room if step is known[-1] else limit + 1)
        return data

    return chained


def _identity(data: bytes, room: int) -> bytes:
    return data


def _inflater(coding: bytes) -> Decode | None:
    """gzip or deflate (zlib-wrapped, or raw as some servers send it); None for identity and
    for codings not decoded here (handed on as they are)."""
    if coding in (b"gzip", b"x-gzip"):
        inflate = zlib.decompressobj(zlib.MAX_WBITS | 16)
    elif coding == b"deflate":
        inflate = zlib.decompressobj()
    else:
        return None
    started = False

    def step(data: bytes, room: int) -> bytes:
        nonlocal inflate, started
        try:
            out = inflate.decompress(data, max(room, 1)) if data else inflate.flush()
        except zlib.error as error:
            if coding != b"deflate" or started:
                raise httpx.DecodingError(f"corrupt {coding.decode()} answer: {error}") from None
            inflate = zlib.decompressobj(-zlib.MAX_WBITS)  # deflate without its zlib wrapper
            started = True
            return step(data, room)
        started = True
        return out

    return step
