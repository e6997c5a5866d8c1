"""What DPoP costs per request: signing a proof, and DPoP against Bearer on the same traffic.

1. Signing: microseconds per proof (claims, JSON, base64url, signature) for ES256, EdDSA and
   RS256, and per request's first attempt (``manager.call(...).first(tokens)``: what an
   integration does per request).
2. Traffic: the same GETs through each integration's auth, once with a Bearer manager and
   once with a DPoP manager (ES256, a nonce cached), answered in-process (httpx's
   MockTransport, a requests adapter that answers without a socket), so that the auth's own
   cost is what is measured. Batches alternate between the two to share the machine's drift.
   aiohttp has no in-process transport; its per-request DPoP work is the same call.

    python benchmarks/bench_dpop.py [--proofs 2000] [--batch 200] [--batches 10]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import time
from collections.abc import Callable
from typing import Any

import httpx
import requests
import requests.adapters

import freshtoken
import freshtoken.httpx
import freshtoken.requests
from freshtoken import DPoPKey, TokenManager, TokenSet
from freshtoken._oauth.dpop import access_token_hash

URL = "https://api.example/v1/items?page=2"
ACCESS_TOKEN = "a" * 800  # a JWT access token's usual size


def _per_call_us(function: Callable[[], object], calls: int) -> float:
    function()  # warm caches
    started = time.perf_counter()
    for _ in range(calls):
        function()
    return (time.perf_counter() - started) / calls * 1e6


def signing(proofs: int) -> None:
    print(f"{'algorithm':<10} {'proof (us)':>12} {'first attempt (us)':>20}")
    ath = access_token_hash(ACCESS_TOKEN)
    for algorithm in ("ES256", "EdDSA", "RS256"):
        key = DPoPKey.generate(algorithm)
        proof_us = _per_call_us(functools.partial(_sign, key, ath), proofs)
        manager = freshtoken.TokenManager(_Never(), dpop=key)
        tokens = TokenSet(ACCESS_TOKEN, "DPoP", expires_at=time.time() + 3600, dpop_key=key)
        headers_us = _per_call_us(functools.partial(_first_attempt, manager, tokens), proofs)
        print(f"{algorithm:<10} {proof_us:>12.1f} {headers_us:>20.1f}")


def _first_attempt(manager: freshtoken.TokenManager, tokens: TokenSet) -> object:
    return manager.call("GET", URL).first(tokens)


def _sign(key: DPoPKey, ath: str) -> str:
    return key.proof("GET", URL, now=time.time(), nonce="n0nce", ath=ath)


class _Never:
    can_acquire = False

    def refresh(
        self,
        current: TokenSet | None,
        clock: Any,
        *,
        deadline: float | None = None,
        dpop: Any = None,
    ) -> TokenSet:
        raise AssertionError("the benchmark's tokens never expire")


def _manager(dpop: DPoPKey | None) -> TokenManager:
    manager = TokenManager(_Never(), dpop=dpop)
    token_type = "Bearer" if dpop is None else "DPoP"
    manager.set_tokens(
        TokenSet(ACCESS_TOKEN, token_type, expires_at=time.time() + 3600, dpop_key=dpop)
    )
    if manager.dpop is not None:
        manager.dpop.nonces.learn(("https", "api.example", 443), "n0nce")
    return manager


def _ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"ok": True})


class _InProcess(requests.adapters.HTTPAdapter):
    def send(
        self, request: requests.PreparedRequest, *args: Any, **kwargs: Any
    ) -> requests.Response:
        response = requests.Response()
        response.status_code = 200
        response._content = b'{"ok": true}'
        response.request = request
        response.url = request.url or ""
        response.connection = self
        return response


def _httpx_sync(manager: TokenManager) -> Callable[[int], None]:
    client = httpx.Client(
        auth=freshtoken.httpx.TokenAuth(manager), transport=httpx.MockTransport(_ok)
    )

    def run(n: int) -> None:
        for _ in range(n):
            client.get(URL)

    return run


def _httpx_async(manager: TokenManager) -> Callable[[int], None]:
    client = httpx.AsyncClient(
        auth=freshtoken.httpx.TokenAuth(manager), transport=httpx.MockTransport(_ok)
    )
    loop = asyncio.new_event_loop()

    async def many(n: int) -> None:
        for _ in range(n):
            await client.get(URL)

    return lambda n: loop.run_until_complete(many(n))


def _requests(manager: TokenManager) -> Callable[[int], None]:
    session = requests.Session()
    session.auth = freshtoken.requests.TokenAuth(manager)
    session.mount("https://", _InProcess())

    def run(n: int) -> None:
        for _ in range(n):
            session.get(URL)

    return run


def traffic(batch: int, batches: int) -> None:
    key = DPoPKey.generate("ES256")
    print(
        f"\n{'integration':<12} {'bearer (us)':>12} {'dpop (us)':>10} "
        f"{'dpop - bearer':>14} {'ratio':>7}"
    )
    for name, make in (
        ("httpx-sync", _httpx_sync),
        ("httpx-async", _httpx_async),
        ("requests", _requests),
    ):
        runs = {"bearer": make(_manager(None)), "dpop": make(_manager(key))}
        totals = dict.fromkeys(runs, 0.0)
        for run in runs.values():
            run(batch)  # warm up
        for index in range(batches):
            order = list(runs) if index % 2 == 0 else list(reversed(runs))
            for which in order:
                started = time.perf_counter()
                runs[which](batch)
                totals[which] += time.perf_counter() - started
        bearer, dpop = (totals[which] / (batch * batches) * 1e6 for which in ("bearer", "dpop"))
        print(
            f"{name:<12} {bearer:>12.1f} {dpop:>10.1f} {dpop - bearer:>14.1f} {dpop / bearer:>7.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--proofs", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--batches", type=int, default=10)
    options = parser.parse_args()
    signing(options.proofs)
    traffic(options.batch, options.batches)


if __name__ == "__main__":
    main()
