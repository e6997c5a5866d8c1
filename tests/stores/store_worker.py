"""A child process for the cross-process proofs: ``python store_worker.py MODE ARGS...``.

Every mode that takes part in a race prints ``ready`` once set up and waits for one line on
stdin before it starts (a barrier the parent releases for all children at once), and prints
one JSON line of results at the end.

Modes (STORE is a FileStore path or keyring:SERVICE:USERNAME:LOCK_PATH):
  hold-lock STORE                take the refresh lock, print "locked", hold it until stdin ends
  storm STORE TOKEN_URL API_URL THREADS REQUESTS
                                 THREADS threads each make REQUESTS API calls through TokenAuth
  astorm STORE TOKEN_URL API_URL TASKS REQUESTS
                                 the same with asyncio tasks on one httpx.AsyncClient
  steady STORE TOKEN_URL API_URL THREADS SECONDS
                                 threads call the API for SECONDS of wall time
  churn STORE TOKEN_URL          refresh and save in a loop until killed (the crash proof)
  exclusive STORE MARKER SECONDS take the refresh lock over and over while the profile (and
                                 with it the lock file) is removed and created again; count
                                 the times MARKER showed another process inside
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time

import httpx

from freshtoken import OAuth2Refresher, RetryPolicy, TokenManager, TokenSet
from freshtoken.httpx import TokenAuth
from freshtoken.stores import FileStore, KeyringStore, TokenStore


def _barrier() -> None:
    print("ready", flush=True)
    sys.stdin.readline()


def _store(spec: str) -> TokenStore:
    """A file path, or ``keyring:SERVICE:USERNAME:LOCK_PATH`` (the backend comes from
    $PYTHON_KEYRING_BACKEND)."""
    if spec.startswith("keyring:"):
        _, service, username, lock_path = spec.split(":", 3)
        return KeyringStore(service, username, lock_path=lock_path)
    return FileStore(spec)


def _manager(spec: str, token_url: str) -> TokenManager:
    refresher = OAuth2Refresher(token_url, client_id="demo", client_secret="demo-secret")
    # Short backoff: the proofs count failures, they do not wait for them.
    retry = RetryPolicy(attempts=3, initial=0.05, maximum=0.2)
    return TokenManager(refresher, _store(spec), retry=retry, lock_timeout=30)


def _report(manager: TokenManager, ok: int, failed: int, errors: list[str]) -> None:
    stats = manager.stats.snapshot()
    print(
        json.dumps({"ok": ok, "failed": failed, "errors": errors[:5], **stats}),
        flush=True,
    )


def hold_lock(spec: str) -> None:
    with _store(spec).lock(10):
        print("locked", flush=True)
        sys.stdin.read()


def storm(spec: str, token_url: str, api_url: str, threads: int, requests: int) -> None:
    manager = _manager(spec, token_url)
    client = httpx.Client(auth=TokenAuth(manager), timeout=30)
    counts = {"ok": 0, "failed": 0}
    errors: list[str] = []
    mutex = threading.Lock()
    go = threading.Event()

    def work() -> None:
        go.wait()
        for _ in range(requests):
            outcome = "ok"
            try:
                response = client.get(api_url)
                if response.status_code != 200:
                    outcome = "failed"
                    errors.append(f"HTTP {response.status_code}")
            except Exception as error:  # noqa: BLE001 - counted and reported
                outcome = "failed"
                errors.append(f"{type(error).__name__}: {error}")
            with mutex:
                counts[outcome] += 1

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    _barrier()
    go.set()
    for worker in workers:
        worker.join()
    client.close()
    _report(manager, counts["ok"], counts["failed"], errors)


def astorm(spec: str, token_url: str, api_url: str, tasks: int, requests: int) -> None:
    manager = _manager(spec, token_url)
    counts = {"ok": 0, "failed": 0}
    errors: list[str] = []

    async def main() -> None:
        limits = httpx.Limits(max_connections=tasks)
        async with httpx.AsyncClient(auth=TokenAuth(manager), timeout=30, limits=limits) as client:

            async def work() -> None:
                for _ in range(requests):
                    try:
                        response = await client.get(api_url)
                    except Exception as error:  # noqa: BLE001 - counted and reported
                        counts["failed"] += 1
                        errors.append(f"{type(error).__name__}: {error}")
                        continue
                    if response.status_code == 200:
                        counts["ok"] += 1
                    else:
                        counts["failed"] += 1
                        errors.append(f"HTTP {response.status_code}")

            await asyncio.to_thread(_barrier)
            await asyncio.gather(*(work() for _ in range(tasks)))

    asyncio.run(main())
    _report(manager, counts["ok"], counts["failed"], errors)


def steady(spec: str, token_url: str, api_url: str, threads: int, seconds: float) -> None:
    manager = _manager(spec, token_url)
    client = httpx.Client(auth=TokenAuth(manager), timeout=30)
    counts = {"ok": 0, "failed": 0}
    errors: list[str] = []
    mutex = threading.Lock()
    go = threading.Event()
    deadline = [0.0]

    def work() -> None:
        go.wait()
        while time.monotonic() < deadline[0]:
            outcome = "ok"
            try:
                response = client.get(api_url)
                if response.status_code != 200:
                    outcome = "failed"
                    errors.append(f"HTTP {response.status_code}")
            except Exception as error:  # noqa: BLE001 - counted and reported
                outcome = "failed"
                errors.append(f"{type(error).__name__}: {error}")
            with mutex:
                counts[outcome] += 1

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    _barrier()
    deadline[0] = time.monotonic() + seconds
    go.set()
    for worker in workers:
        worker.join()
    client.close()
    _report(manager, counts["ok"], counts["failed"], errors)


def churn(spec: str, token_url: str) -> None:
    """Refresh (forced) and save as fast as possible; the parent kills us at a random moment."""
    manager = _manager(spec, token_url)
    _barrier()
    while True:
        manager.refresh()
        print("refreshed", flush=True)


def exclusive(spec: str, marker: str, seconds: float) -> None:
    store = FileStore(spec, watch_interval=None)
    login = TokenSet("access", refresh_token="refresh")
    _barrier()
    entries = overlaps = removals = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with store.lock(30):
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            except FileExistsError:
                overlaps += 1  # another process is inside: its marker is not ours to remove
                continue
            os.close(fd)
            entries += 1
            if entries % 3 == 0:
                removals += store.remove_profile()  # the lock file goes as this process lets go
            os.unlink(marker)
        if store.load_profile() is None:
            store.save_profile(login, meta={})
    print(json.dumps({"entries": entries, "overlaps": overlaps, "removals": removals}), flush=True)


def main(argv: list[str]) -> None:
    mode, *args = argv
    if mode == "hold-lock":
        hold_lock(args[0])
    elif mode == "storm":
        storm(args[0], args[1], args[2], int(args[3]), int(args[4]))
    elif mode == "astorm":
        astorm(args[0], args[1], args[2], int(args[3]), int(args[4]))
    elif mode == "steady":
        steady(args[0], args[1], args[2], int(args[3]), float(args[4]))
    elif mode == "churn":
        churn(args[0], args[1])
    elif mode == "exclusive":
        exclusive(args[0], args[1], float(args[2]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
