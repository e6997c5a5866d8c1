"""Worker processes released together: the fleet tests' start line.

Each worker prints ``ready`` once set up, waits for ``go`` on its standard input, does its
part, and prints a JSON report as its last line. Releasing them only once all are ready makes
them meet at the same moment, however long each took to start.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from typing import Any

__all__ = ["released_together"]


def released_together(workers: Sequence[subprocess.Popen[str]], timeout: float = 120) -> list[Any]:
    """Wait until every worker (started with text pipes for stdin and stdout) says ``ready``,
    let them all go, and return each one's report; a worker that fails fails the test with
    the end of its stderr (when piped). Any worker still running at the end is killed."""
    try:
        for worker in workers:
            assert worker.stdout is not None
            line = worker.stdout.readline()
            assert line.strip() == "ready", f"worker did not start (got {line!r}): {_tail(worker)}"
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        reports = []
        for worker in workers:
            out, err = worker.communicate(timeout=timeout)
            assert worker.returncode == 0, f"worker failed: {(err or out)[-3000:]}"
            reports.append(json.loads(out.strip().splitlines()[-1]))
        return reports
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()


def _tail(worker: subprocess.Popen[str]) -> str:
    if worker.stderr is None or worker.poll() is None:
        return ""  # still running: reading its stderr would wait for it to end
    return worker.stderr.read()[-3000:]
