"""What a durable store costs: FileStore versus MemoryStore, and one cross-process hand-off.

1. Steady state. The same httpx client sends the same requests to the reference server
   through a TokenManager on a MemoryStore and on a FileStore (plain and encrypted), tokens
   cached, rounds alternating so that drift affects all alike; the median round counts.
   Target: FileStore / MemoryStore requests/s >= 0.95. The bare ``get_tokens()`` rate (no
   HTTP) is printed as well: it is the whole per-request cost of the store.
2. Hand-off. Process A holds the refresh lock and refreshes while process B waits on it for
   the same expired token; measured: from A's save to B holding A's tokens (lock release,
   B's wake-up, re-read, adopt), and B's refresh count (must be 0).
3. Crash window. A child refreshes in a loop and is killed (-9) at random moments; how often
   does the kill fall between sending the refresh and the fsync of its answer, losing the
   session when the server has no reuse grace? (The tests assert that the file is never torn.)

    python benchmarks/bench_stores.py [--requests 300] [--rounds 15] [--handoffs 15] [--kills 40]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from _support import login, server_process, stats

from freshtoken import OAuth2Refresher, SessionExpired, TokenManager, TokenSet, TokenStore
from freshtoken.httpx import TokenAuth
from freshtoken.stores import FileStore, MemoryStore

KEY = "bench-passphrase"

# Process B of a hand-off: set up, wait for "go", then ask for tokens (blocking on A's lock).
HANDOFF_CHILD = """
import json, sys, time
from freshtoken import OAuth2Refresher, TokenManager
from freshtoken.stores import FileStore
path, profile, token_url = sys.argv[1:4]
refresher = OAuth2Refresher(token_url, client_id="demo", client_secret="demo-secret")
manager = TokenManager(refresher, FileStore(path, profile=profile))
print("ready", flush=True)
sys.stdin.readline()
print("waiting", flush=True)
started = time.monotonic()
manager.get_tokens()
done = time.monotonic()
print(json.dumps({"done": done, "waited": done - started, **manager.stats.snapshot()}), flush=True)
"""

# A process that refreshes and saves until it is killed.
CHURN_CHILD = """
import sys
from freshtoken import OAuth2Refresher, TokenManager
from freshtoken.stores import FileStore
path, token_url = sys.argv[1:3]
refresher = OAuth2Refresher(token_url, client_id="demo", client_secret="demo-secret")
manager = TokenManager(refresher, FileStore(path))
print("ready", flush=True)
sys.stdin.readline()
while True:
    manager.refresh()
    print("refreshed", flush=True)
"""


def steady_state(url: str, requests: int, rounds: int, directory: Path) -> None:
    tokens = TokenSet.from_response(login(url))
    refresher = OAuth2Refresher(url + "/oauth/token", client_id="demo", client_secret="demo-secret")
    stores: dict[str, TokenStore] = {
        "MemoryStore": MemoryStore(),
        "FileStore": FileStore(directory / "steady.json"),
        "FileStore (encrypted)": FileStore(directory / "sealed.json", encryption_key=KEY),
    }
    clients: dict[str, httpx.Client] = {}
    managers: dict[str, TokenManager] = {}
    for name, store in stores.items():
        managers[name] = manager = TokenManager(refresher, store)
        manager.set_tokens(tokens)
        clients[name] = httpx.Client(auth=TokenAuth(manager))
    api = url + "/api/me"

    def http_round(name: str) -> float:
        client = clients[name]
        started = time.perf_counter()
        for _ in range(requests):
            client.get(api).raise_for_status()
        return requests / (time.perf_counter() - started)

    def bare_round(name: str) -> float:
        get_tokens = managers[name].get_tokens
        count = 20_000
        started = time.perf_counter()
        for _ in range(count):
            get_tokens()
        return count / (time.perf_counter() - started)

    for name in stores:  # warm up connections and caches
        http_round(name)
    print(f"\n1. steady state: {requests} GET /api/me per round, {rounds} rounds, median")
    _compare(stores, rounds, http_round, "requests/s")
    print(f"   get_tokens() alone (no HTTP), {rounds * 4} rounds of 20,000 calls, median:")
    _compare(stores, rounds * 4, bare_round, "calls/s")
    for client in clients.values():
        client.close()
    refresher.close()


def _compare(
    stores: dict[str, TokenStore], rounds: int, measure: Callable[[str], float], unit: str
) -> None:
    results: dict[str, list[float]] = {name: [] for name in stores}
    for _ in range(rounds):
        for name in stores:
            results[name].append(measure(name))
    baseline = statistics.median(results["MemoryStore"])
    for name, values in results.items():
        rate = statistics.median(values)
        print(f"   {name:<22} {rate:>12,.0f} {unit}   ratio {rate / baseline:.3f}")


def handoff(url: str, trials: int, directory: Path) -> None:
    token_url = url + "/oauth/token"
    path = directory / "handoff.json"
    refresher = OAuth2Refresher(token_url, client_id="demo", client_secret="demo-secret")
    children = [
        subprocess.Popen(
            [sys.executable, "-c", HANDOFF_CHILD, str(path), f"h{i}", token_url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(trials)
    ]
    handoffs, waits, refreshes, adopted = [], [], 0, 0
    try:
        for i, child in enumerate(children):
            store = FileStore(path, profile=f"h{i}")
            fresh_login = TokenSet.from_response(login(url))
            expired = dataclasses.replace(fresh_login, expires_at=time.time() - 1)
            store.save(expired, expected_generation=None)
            assert child.stdout is not None
            assert child.stdin is not None
            assert child.stdout.readline().strip() == "ready"
            with store.lock(10):
                child.stdin.write("go\n")
                child.stdin.flush()
                assert child.stdout.readline().strip() == "waiting"
                # A's refresh, as the manager's leader does it: B is now blocked on the lock.
                stored = store.load()
                assert stored is not None
                fresh = refresher.refresh(stored.tokens, time.time)
                store.save(fresh, expected_generation=stored.generation)
                saved_at = time.monotonic()
            report = json.loads(child.stdout.readline())
            child.wait(10)
            handoffs.append(report["done"] - saved_at)
            waits.append(report["waited"])
            refreshes += report["refreshes"]
            adopted += report["adopted"]
    finally:
        refresher.close()
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    print(f"\n2. cross-process hand-off, {trials} trials")
    print(
        f"   A saved -> B holds A's tokens: median {statistics.median(handoffs) * 1000:.2f} ms, "
        f"max {max(handoffs) * 1000:.2f} ms"
    )
    print(
        f"   B's whole wait (A's refresh included): median {statistics.median(waits) * 1000:.1f} ms"
    )
    print(f"   B refreshed {refreshes} times and adopted {adopted} times (expected 0 and {trials})")


def crash_window(url: str, kills: int, directory: Path) -> None:
    token_url = url + "/oauth/token"
    path = directory / "crash.json"
    store = FileStore(path)
    refresher = OAuth2Refresher(token_url, client_id="demo", client_secret="demo-secret")
    store.save(TokenSet.from_response(login(url)), expected_generation=None)
    rng = random.Random(7)
    lost = torn = 0
    before = stats(url)
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHURN_CHILD, str(path), token_url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(kills)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            assert child.stdin is not None
            assert child.stdout.readline().strip() == "ready"
            child.stdin.write("go\n")
            child.stdin.flush()
            for _ in range(1 + rng.randrange(3)):  # a few whole refreshes, then
                child.stdout.readline()
            time.sleep(rng.uniform(0, 0.01))  # ...a random moment of the next one (chaos)
            child.kill()
            child.wait()
            stored = store.load()
            if stored is None:
                torn += 1
                continue
            try:
                fresh = refresher.refresh(stored.tokens, time.time)
            except SessionExpired:
                lost += 1
                store.save(TokenSet.from_response(login(url)), expected_generation=None)
                continue
            store.save(fresh, expected_generation=stored.generation)
    finally:
        refresher.close()
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    after = stats(url)
    refreshes = after["refreshes"] - before["refreshes"]
    print(f"\n3. kill -9 during refresh/save, {kills} kills, server without reuse grace")
    print(
        f"   file unreadable or empty after a kill: {torn}; sessions lost: {lost}/{kills} "
        f"({lost / kills:.0%}) over {refreshes} server refreshes"
    )
    print(
        "   a lost session = the kill fell after the server rotated the refresh token and "
        "before the fsync; with --reuse-grace the next process replays it (see the tests)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # Many short alternating rounds: the median is robust to a busy machine.
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--handoffs", type=int, default=15)
    parser.add_argument("--kills", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary, server_process("--access-ttl", "86400") as url:
        directory = Path(temporary)
        print(f"reference server at {url} (its own process)")
        steady_state(url, args.requests, args.rounds, directory)
        handoff(url, args.handoffs, directory)
        crash_window(url, args.kills, directory)


if __name__ == "__main__":
    main()
