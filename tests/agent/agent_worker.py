"""One client process of the agent fleet test: ``python agent_worker.py SOCKET THREADS CALLS``.

For each ``go`` line on stdin, THREADS threads each ask the agent CALLS times for a token
(``AgentRefresher.refresh``, no cache in between); the process then prints one JSON line:
the access tokens it was given and any failures. ``quit`` ends it.
"""

from __future__ import annotations

import json
import sys
import threading

from freshtoken import AgentRefresher, system_clock


def one_round(refresher: AgentRefresher, threads: int, calls: int) -> dict[str, list[str]]:
    tokens: list[str] = []
    failures: list[str] = []
    lock = threading.Lock()

    def ask() -> None:
        for _ in range(calls):
            try:
                token = refresher.refresh(None, system_clock).access_token
            except Exception as error:  # noqa: BLE001 - reported to the test
                with lock:
                    failures.append(repr(error))
            else:
                with lock:
                    tokens.append(token)

    workers = [threading.Thread(target=ask) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return {"tokens": tokens, "failures": failures}


def main() -> None:
    socket_path, threads, calls = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    refresher = AgentRefresher("default", socket=socket_path, autostart=False)
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "go":
            break
        print(json.dumps(one_round(refresher, threads, calls)), flush=True)
    refresher.close()


if __name__ == "__main__":
    main()
