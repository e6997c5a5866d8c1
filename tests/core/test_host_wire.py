"""The flight host's own HTTP/1.1 client (``_runtime/http1.py``) against a raw TCP server that
writes exactly the bytes a test gives: framing, codings, closes and lies a token endpoint may
send. Every refresh here goes through a manager, so it runs on the host and its pool.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import ssl
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from certificates import self_signed

from freshtoken import (
    OAuth2Refresher,
    RefreshFailed,
    RetryPolicy,
    TokenManager,
    TokenSet,
)
from freshtoken._core.answers import LARGEST_ANSWER

TIMEOUT = 30.0
REFRESH = "refresh-secret-2"
NEW = {"access_token": "new-access-3", "refresh_token": "new-refresh-4", "expires_in": 3600}
Script = Callable[[int], bytes]  # the request's number on its connection -> the bytes to write


class RawServer:
    """A loopback server that reads each request (head and ``Content-Length`` body) and
    answers with ``script(n)``, n counting the requests on that connection from 0. An answer
    ending in ``CLOSE`` closes the connection after writing."""

    def __init__(
        self, script: Script, tls: ssl.SSLContext | None = None, host: str = "127.0.0.1"
    ) -> None:
        self.script = script
        self.tls = tls
        self.connections = 0
        self.requests: list[bytes] = []
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.create_server((host, 0), family=family)
        port = self._listener.getsockname()[1]
        where = f"[{host}]" if ":" in host else host
        self.url = f"{'https' if tls else 'http'}://{where}:{port}/token"
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _secured(self, connection: socket.socket) -> socket.socket:
        if self.tls is None:
            return connection
        return self.tls.wrap_socket(connection, server_side=True)

    def _serve(self, connection: socket.socket) -> None:
        # A client that gives up on an answer resets the connection, and one that does not
        # trust the certificate ends the handshake: either ends it, quietly.
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            self._answer(self._secured(connection))

    def _answer(self, connection: socket.socket) -> None:
        with connection, connection.makefile("rb") as reader:
            number = 0
            while True:
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    line = reader.readline()
                    if not line:
                        return
                    head += line
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                self.requests.append(head + reader.read(length))
                answer = self.script(number)
                number += 1
                closing = answer.endswith(CLOSE)
                connection.sendall(answer.removesuffix(CLOSE))
                if closing:
                    return

    def close(self) -> None:
        with contextlib.suppress(OSError):  # wakes the accepting thread (close alone does not)
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()


CLOSE = b"<close>"


def answer(body: bytes, *headers: str, status: str = "200 OK", framing: str = "length") -> bytes:
    head = [f"HTTP/1.1 {status}", "Content-Type: application/json", *headers]
    if framing == "length":
        head.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(head) + "\r\n\r\n").encode() + body
    if framing == "chunked":
        head.append("Transfer-Encoding: chunked")
        chunks = b"".join(
            b"%x\r\n%s\r\n" % (len(body[i : i + 7]), body[i : i + 7])
            for i in range(0, len(body), 7)
        )
        return ("\r\n".join(head) + "\r\n\r\n").encode() + chunks + b"0\r\n\r\n"
    # "close": no length, the body ends with the connection
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body + CLOSE


TOKENS = json.dumps(NEW).encode()


@pytest.fixture
def serve() -> Iterator[Callable[[Script], RawServer]]:
    servers: list[RawServer] = []

    def start(script: Script) -> RawServer:
        server = RawServer(script)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def session(server: RawServer, attempts: int = 1) -> TokenManager:
    # Reads time out after 1 s: an answer that stops short is found out quickly.
    refresher = OAuth2Refresher(server.url, client_id="app", timeout=1.0)
    manager = TokenManager(refresher, retry=RetryPolicy(attempts=attempts))
    manager.set_tokens(TokenSet("old-access-1", refresh_token=REFRESH, expires_at=0.0))
    return manager


def refreshed(server: RawServer) -> TokenSet:
    return session(server).refresh(timeout=TIMEOUT)


def failed(server: RawServer) -> RefreshFailed:
    with pytest.raises(RefreshFailed) as raised:
        refreshed(server)
    assert REFRESH not in str(raised.value)
    return raised.value


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
def test_every_framing_of_an_answer_is_read_whole(
    serve: Callable[[Script], RawServer], framing: str
) -> None:
    server = serve(lambda _: answer(TOKENS, framing=framing))
    assert refreshed(server).access_token == "new-access-3"


@pytest.mark.parametrize(
    ("coding", "encode"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),  # RFC 9110's deflate: the zlib format
        ("deflate", lambda body: zlib.compress(body)[2:-4]),  # what some servers send: raw
    ],
)
def test_compressed_answers_are_decoded(
    serve: Callable[[Script], RawServer], coding: str, encode: Callable[[bytes], bytes]
) -> None:
    server = serve(lambda _: answer(encode(TOKENS), f"Content-Encoding: {coding}"))
    assert refreshed(server).refresh_token == "new-refresh-4"


def test_a_corrupt_compressed_answer_is_malformed_and_maybe_lost(
    serve: Callable[[Script], RawServer],
) -> None:
    server = serve(lambda _: answer(b"\x1f\x8b not gzip at all", "Content-Encoding: gzip"))
    error = failed(server)
    assert error.error == "malformed_response"
    assert error.answer_lost


def test_a_compression_bomb_is_cut_off_at_the_largest_answer(
    serve: Callable[[Script], RawServer],
) -> None:
    bomb = gzip.compress(b"{" + b" " * (64 * LARGEST_ANSWER))  # 64 MiB from ~64 KiB
    server = serve(lambda _: answer(bomb, "Content-Encoding: gzip"))
    error = failed(server)
    assert error.error == "malformed_response"
    assert "bytes long" in str(error)


def test_an_informational_answer_before_the_real_one_is_skipped(
    serve: Callable[[Script], RawServer],
) -> None:
    server = serve(lambda _: b"HTTP/1.1 100 Continue\r\n\r\n" + answer(TOKENS))
    assert refreshed(server).access_token == "new-access-3"


def test_a_server_that_closes_a_kept_alive_connection_costs_no_refresh(
    serve: Callable[[Script], RawServer],
) -> None:
    """The server answers, keeps quiet about it, and closes the connection afterwards (as
    servers do with idle connections): the next refresh takes a new connection, not a failure.
    """
    server = serve(lambda _: answer(TOKENS) + CLOSE)
    manager = session(server)
    for _ in range(3):
        manager.refresh(timeout=TIMEOUT)
    assert server.connections == 3


def test_a_kept_alive_connection_closed_unanswered_is_tried_once_more_on_a_new_one(
    serve: Callable[[Script], RawServer],
) -> None:
    """The idle-close race: the server closes a kept-alive connection just as the next
    request goes out on it, and answers not a byte. The request goes once more on a new
    connection (as the engine's own retry would, only at once); a new connection closed
    unanswered fails as before."""
    server = serve(lambda number: answer(TOKENS) if number == 0 else CLOSE)
    manager = session(server)
    manager.refresh(timeout=TIMEOUT)
    manager.refresh(timeout=TIMEOUT)
    assert server.connections == 2
    assert len(server.requests) == 3
    assert manager.stats.snapshot()["refresh_failures"] == 0


def test_an_ipv6_token_endpoint_is_reached_and_its_connection_kept() -> None:
    server = RawServer(lambda _: answer(TOKENS), host="::1")
    try:
        manager = session(server)
        for _ in range(2):
            assert manager.refresh(timeout=TIMEOUT).access_token == "new-access-3"
        assert server.connections == 1
        assert server.requests[0].startswith(b"POST /token HTTP/1.1\r\n")
        assert b"\r\nhost: [::1]:" in server.requests[0].lower()
    finally:
        server.close()


def test_connection_close_is_honoured(serve: Callable[[Script], RawServer]) -> None:
    server = serve(lambda _: answer(TOKENS, "Connection: close"))
    manager = session(server)
    for _ in range(3):
        manager.refresh(timeout=TIMEOUT)
    assert server.connections == 3


def test_a_clean_answer_leaves_the_connection_for_the_next_refresh(
    serve: Callable[[Script], RawServer],
) -> None:
    server = serve(lambda _: answer(TOKENS))
    manager = session(server)
    for _ in range(5):
        manager.refresh(timeout=TIMEOUT)
    assert server.connections == 1
    assert len(server.requests) == 5
    first = server.requests[0]
    assert first.startswith(b"POST /token HTTP/1.1\r\n")
    assert b"refresh_token=" + REFRESH.encode() in first


@pytest.mark.parametrize(
    "garbage",
    [
        b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"HTTP/1.1 2000 Wow\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 1_000_000,  # a head without end
        b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"access_token"' + CLOSE,
        CLOSE,
    ],
    ids=["not-http", "two-lengths", "bad-status", "long-header", "cut-short", "silent-close"],
)
def test_whatever_is_not_an_answer_is_a_failure_that_may_have_lost_one(
    serve: Callable[[Script], RawServer], garbage: bytes
) -> None:
    """The request was sent, so the server may have acted on it: answer_lost is said, and
    the error is a RefreshFailed like any other network failure (retried, tokens kept)."""
    server = serve(lambda _: garbage)
    error = failed(server)
    assert error.error in {"network_error", "malformed_response"}, error
    assert error.answer_lost


def test_a_connection_refused_was_never_sent(serve: Callable[[Script], RawServer]) -> None:
    server = serve(lambda _: answer(TOKENS))
    server.close()
    error = failed(server)
    assert error.error == "network_error"
    assert not error.answer_lost


def test_after_a_garbled_answer_the_next_refresh_uses_a_new_connection(
    serve: Callable[[Script], RawServer],
) -> None:
    """An answer that could not be read leaves its connection mid-message: it is closed, and
    the retry goes out on a fresh one."""
    answers = iter([answer(TOKENS)[:-5], answer(TOKENS)])
    server = serve(lambda _: next(answers))
    manager = session(server, attempts=2)
    assert manager.refresh(timeout=TIMEOUT).access_token == "new-access-3"
    assert server.connections == 2


def test_a_forced_refresh_answered_with_the_same_access_token_sends_one_request(
    serve: Callable[[Script], RawServer],
) -> None:
    """Some servers answer a refresh with the access token they issued before, while it is
    valid. refresh() asked for a refresh and got one: it returns, where it used to start
    another flight, and another, thousands a second, past its own timeout."""
    server = serve(lambda _: answer(TOKENS))
    manager = session(server)
    for number in range(1, 4):
        assert manager.refresh(timeout=TIMEOUT).access_token == "new-access-3"
        assert len(server.requests) == number


@pytest.mark.anyio
async def test_an_async_forced_refresh_answered_with_the_same_token_sends_one_request(
    serve: Callable[[Script], RawServer],
) -> None:
    server = serve(lambda _: answer(TOKENS))
    manager = session(server)
    for number in range(1, 4):
        assert (await manager.arefresh()).access_token == "new-access-3"
        assert len(server.requests) == number


def certificate(directory: Path) -> tuple[ssl.SSLContext, Path]:
    """A self-signed certificate for 127.0.0.1: the server's context and the CA file."""
    self_signed(directory)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    return context, directory / "cert.pem"


def test_over_tls_the_connection_is_verified_and_kept_alive(tmp_path: Path) -> None:
    context, ca_file = certificate(tmp_path)
    server = RawServer(lambda _: answer(TOKENS), tls=context)
    try:
        refresher = OAuth2Refresher(server.url, client_id="app", verify=str(ca_file))
        manager = TokenManager(refresher, retry=RetryPolicy(attempts=1))
        manager.set_tokens(TokenSet("old-access-1", refresh_token=REFRESH, expires_at=0.0))
        for _ in range(3):
            assert manager.refresh(timeout=TIMEOUT).access_token == "new-access-3"
        assert server.connections == 1
        assert len(server.requests) == 3
    finally:
        server.close()


def test_a_certificate_not_trusted_is_a_failure_that_sent_nothing(tmp_path: Path) -> None:
    """The handshake fails before the request is written: nothing reached the server, and
    the error says so (answer_lost is False: the refresh token was not spent)."""
    context, _ = certificate(tmp_path)
    server = RawServer(lambda _: answer(TOKENS), tls=context)
    try:
        refresher = OAuth2Refresher(server.url, client_id="app")  # the system's CAs
        manager = TokenManager(refresher, retry=RetryPolicy(attempts=1))
        manager.set_tokens(TokenSet("old-access-1", refresh_token=REFRESH, expires_at=0.0))
        with pytest.raises(RefreshFailed) as raised:
            manager.refresh(timeout=TIMEOUT)
        assert raised.value.error == "network_error"
        assert not raised.value.answer_lost
        assert server.requests == []
    finally:
        server.close()


@pytest.fixture
def no_proxy_settings(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for scheme in ("http", "https", "all", "no"):
        monkeypatch.delenv(f"{scheme}_proxy", raising=False)
        monkeypatch.delenv(f"{scheme.upper()}_PROXY", raising=False)
    return monkeypatch


def test_a_proxy_the_environment_names_carries_the_token_request(
    serve: Callable[[Script], RawServer], no_proxy_settings: pytest.MonkeyPatch
) -> None:
    """Behind a corporate proxy (HTTP_PROXY), the host's requests go through it, as httpx's
    would: the proxy gets the absolute URL of a token endpoint nothing else could reach."""
    proxy = serve(lambda _: answer(TOKENS))
    no_proxy_settings.setenv("HTTP_PROXY", proxy.url.removesuffix("/token"))
    unreachable = RawServer(lambda _: answer(b"{}"))
    unreachable.close()  # its port now refuses: only the proxy can answer
    assert refreshed(unreachable).access_token == "new-access-3"
    assert proxy.requests[0].startswith(f"POST {unreachable.url} HTTP/1.1".encode())


def test_no_proxy_sends_the_token_request_directly(
    serve: Callable[[Script], RawServer], no_proxy_settings: pytest.MonkeyPatch
) -> None:
    proxy = serve(lambda _: answer(b"{}"))
    endpoint = serve(lambda _: answer(TOKENS))
    no_proxy_settings.setenv("HTTP_PROXY", proxy.url.removesuffix("/token"))
    no_proxy_settings.setenv("NO_PROXY", "127.0.0.1")
    assert refreshed(endpoint).access_token == "new-access-3"
    assert proxy.requests == []
    assert len(endpoint.requests) == 1
