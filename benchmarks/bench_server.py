"""Protected-API requests per second of the reference server, loaded from another process.

    python benchmarks/bench_server.py [--seconds 5] [--connections 4] [--client httpx|socket]

The server runs as ``serve`` in a subprocess (one uvicorn worker, h11, like the fixture). This
process loads ``GET /api/me`` with a bearer token over keep-alive connections, one thread per
connection. ``--client socket`` speaks minimal HTTP/1.1 over raw sockets, so that the client's
own overhead (httpx costs ~0.2 ms a request) does not hide the server's limit on a 2-core box.
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
from urllib.parse import urlsplit

import httpx
from _support import server_process


def httpx_worker(url: str, token: str, deadline: float, counts: list[int], slot: int) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, verify=False) as client:
        while time.perf_counter() < deadline:
            response = client.get("/api/me")
            if response.status_code != 200:
                raise RuntimeError(f"unexpected {response.status_code}")
            counts[slot] += 1


def socket_worker(url: str, token: str, deadline: float, counts: list[int], slot: int) -> None:
    parts = urlsplit(url)
    request = (
        f"GET /api/me HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Bearer {token}\r\n\r\n"
    ).encode()
    with socket.create_connection((parts.hostname, parts.port or 80)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buffer = b""
        while time.perf_counter() < deadline:
            sock.sendall(request)
            while b"\r\n\r\n" not in buffer:
                buffer += sock.recv(65536)
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"unexpected answer {head[:40]!r}")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            while len(buffer) < length:
                buffer += sock.recv(65536)
            buffer = buffer[length:]
            counts[slot] += 1


def measure(url: str, token: str, client: str, connections: int, seconds: float) -> float:
    worker = httpx_worker if client == "httpx" else socket_worker
    counts = [0] * connections
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    threads = [
        threading.Thread(target=worker, args=(url, token, deadline, counts, slot))
        for slot in range(connections)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--client", choices=["httpx", "socket", "both"], default="both")
    args = parser.parse_args()

    with server_process("--access-ttl", "3600") as url:
        login = httpx.post(f"{url}/auth/login", json={"username": "demo", "password": "demo"})
        token = login.json()["access_token"]
        measure(url, token, "socket", 1, 0.5)  # warm up: caches, connections
        clients = ["httpx", "socket"] if args.client == "both" else [args.client]
        for client in clients:
            rate = measure(url, token, client, args.connections, args.seconds)
            print(
                f"GET /api/me, {client} client, {args.connections} keep-alive connections,"
                f" {args.seconds:g} s: {rate:,.0f} requests/s"
            )


if __name__ == "__main__":
    main()
