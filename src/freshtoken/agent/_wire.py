"""The agent's HTTP/1.1, with h11: a request read within the agent's limits (a head, a body
and a time for each), a JSON reply written, and the 403 another user gets before a byte of
theirs is read. `freshtoken.agent._server` routes what is read here."""

from __future__ import annotations

import asyncio
import json
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import h11

if TYPE_CHECKING:
    from ._server import AgentLimits

__all__ = [
    "FORBIDDEN",
    "Reply",
    "RequestTimeout",
    "TooLarge",
    "error_reply",
    "read_request",
    "send_reply",
]

_READ_CHUNK = 16 * 1024


class Reply:
    __slots__ = ("document", "headers", "status")

    def __init__(
        self, status: int, document: dict[str, Any], headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        self.status = status
        self.document = document
        self.headers = headers


def error_reply(status: int, error: str, description: str, **extra: Any) -> Reply:
    return Reply(status, {"error": error, "error_description": description, **extra})


class RequestTimeout(Exception):
    """No request came in time; ``started``: some of it had come."""

    def __init__(self, started: bool) -> None:
        self.started = started


class TooLarge(Exception):
    """A body over the limit."""


async def read_request(
    connection: h11.Connection, reader: asyncio.StreamReader, limits: AgentLimits
) -> tuple[h11.Request, bytes] | None:
    """The next request and its body; None when the client closed the connection.

    ``limits.idle_timeout`` bounds the wait for its first byte, then ``request_timeout`` the
    rest ([`RequestTimeout`][] says which); a body over ``max_body_bytes`` is [`TooLarge`][].
    """
    loop = asyncio.get_running_loop()
    started = False
    deadline = loop.time() + limits.idle_timeout
    request: h11.Request | None = None
    body = bytearray()
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise RequestTimeout(started)
            try:
                data = await asyncio.wait_for(reader.read(_READ_CHUNK), remaining)
            except asyncio.TimeoutError:
                raise RequestTimeout(started) from None
            if data and not started:
                started = True
                deadline = loop.time() + limits.request_timeout
            connection.receive_data(data)
        elif isinstance(event, h11.Request):
            request = event
            length = dict(event.headers).get(b"content-length")
            if length is not None and int(length) > limits.max_body_bytes:
                raise TooLarge
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > limits.max_body_bytes:
                raise TooLarge
        elif isinstance(event, h11.EndOfMessage):
            assert request is not None
            return request, bytes(body)
        else:  # ConnectionClosed, or PAUSED after a close: nothing more will come
            return None


async def send_reply(
    connection: h11.Connection,
    writer: asyncio.StreamWriter,
    reply: Reply,
    *,
    close: bool,
    timeout: float,
) -> None:
    """``reply`` as JSON, unless the connection is past answering; ``close`` says so to the
    client. ``timeout`` bounds the wait for a client that does not read."""
    if connection.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    body = json.dumps(reply.document).encode()
    headers = [
        ("content-type", "application/json"),
        ("content-length", str(len(body))),
        ("cache-control", "no-store"),
        *reply.headers,
    ]
    if close:
        headers.append(("connection", "close"))
    try:
        head = h11.Response(
            status_code=reply.status, headers=headers, reason=HTTPStatus(reply.status).phrase
        )
        data = connection.send(head)
        data += connection.send(h11.Data(data=body))
        data += connection.send(h11.EndOfMessage())
    except h11.LocalProtocolError:
        return  # the request was too broken to answer in HTTP at all
    writer.write(data)
    await asyncio.wait_for(writer.drain(), timeout)


def _forbidden() -> bytes:
    body = json.dumps({"error": "forbidden", "error_description": "this agent serves another user"})
    head = (
        "HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n"
    )
    return (head + body).encode()


FORBIDDEN = _forbidden()
