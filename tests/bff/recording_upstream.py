"""An upstream API of the tests' own, on a real port, that remembers every request exactly as
it arrived (method, raw path, headers) and echoes it back, as a TRACE-answering or debugging
server would. Paths under ``/slow/`` are held until the test releases them: the test decides
when they answer, no sleep involved."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from freshtoken.bff._serving import ServedApp

from .bff_support import CSRF, Deployment

WAIT = 10.0


@dataclasses.dataclass(frozen=True)
class Arrival:
    method: str
    raw_path: str
    headers: dict[str, str]


class RecordingUpstream:
    def __init__(self) -> None:
        self.arrivals: list[Arrival] = []
        self._changed = threading.Condition()
        self._held = 0
        self._release: asyncio.Event | None = None
        self.served: ServedApp | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        arrival = Arrival(
            scope["method"],
            scope["raw_path"].decode("latin-1"),
            {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]},
        )
        with self._changed:
            self.arrivals.append(arrival)
            self._changed.notify_all()
        if arrival.raw_path.startswith("/slow/"):
            if self._release is None:
                self._release = asyncio.Event()
            with self._changed:
                self._held += 1
                self._changed.notify_all()
            await self._release.wait()
        body = json.dumps(dataclasses.asdict(arrival)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def wait_held(self, count: int) -> bool:
        """Whether ``count`` calls are being held at /slow/ (waits up to WAIT seconds)."""
        with self._changed:
            return self._changed.wait_for(lambda: self._held >= count, WAIT)

    def release(self) -> None:
        """Let every held call answer (and every later one pass)."""
        assert self.served is not None

        async def release() -> None:
            if self._release is None:
                self._release = asyncio.Event()
            self._release.set()

        self.served.call(release())

    def paths(self) -> list[str]:
        with self._changed:
            return [arrival.raw_path for arrival in self.arrivals]


@pytest.fixture
def upstream() -> Iterator[RecordingUpstream]:
    api = RecordingUpstream()
    with ServedApp(api) as served:
        api.served = served
        yield api
        api.release()  # nothing held past the test


def upstream_url(api: RecordingUpstream) -> str:
    assert api.served is not None
    return api.served.url


def send_raw(
    deployment: Deployment,
    target: str | bytes,
    session: str | None,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    csrf: bool = True,
) -> httpx.Response:
    """A request with exactly ``target`` on its request line: httpx would otherwise resolve
    dot segments and re-encode the path before sending."""
    sent = {**(CSRF if csrf else {}), **(headers or {})}
    if session is not None:
        sent.update(deployment.cookie(session))
    request = deployment.http.build_request(method, "/", headers=sent)
    request.extensions["target"] = target.encode("latin-1") if isinstance(target, str) else target
    return deployment.http.send(request)
