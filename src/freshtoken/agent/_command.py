"""``freshtoken agent [start | status | stop]``.

* ``freshtoken agent``: run the agent in the foreground (``--systemd`` under socket
  activation); it stops on SIGTERM, SIGINT, ``freshtoken agent stop`` or ``--idle-exit``.
* ``start``: run it in the background unless one already serves the socket; returns once it
  accepts connections.
* ``status``: what the running agent serves (exit 3 when none runs, as ``systemctl``).
* ``stop``: stop it and wait until it has exited (refreshes in flight are saved first).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Any

from .._arguments import seconds, whole_number
from ..stores.file import ENV_STORE
from ._paths import ENV_SOCKET, AgentPathError, socket_path
from ._runtime import AgentStartError, agent_status, lock_holder, run_agent, start_in_background
from ._runtime import stop_agent as _stop_agent
from ._server import AgentLimits

__all__ = ["configure_parser", "run"]

ACTIONS = ("run", "start", "status", "stop")
EXIT_NOT_RUNNING = 3


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        nargs="?",
        choices=ACTIONS,
        default="run",
        help="run (the default): in the foreground; start: in the background; status; stop",
    )
    parser.add_argument(
        "--socket",
        metavar="PATH",
        default=None,
        help=f"the agent socket (default: ${ENV_SOCKET}, else "
        "$XDG_RUNTIME_DIR/freshtoken/agent.sock, else /tmp/freshtoken-<uid>/agent.sock)",
    )
    parser.add_argument(
        "--store",
        metavar="PATH",
        default=None,
        help=f"the token file whose profiles it serves (default: ${ENV_STORE} or "
        "~/.config/freshtoken/tokens.json)",
    )
    parser.add_argument(
        "--systemd",
        action="store_true",
        help="serve the socket systemd passes (socket activation, LISTEN_FDS)",
    )
    parser.add_argument(
        "--idle-exit",
        type=seconds(positive=True),
        default=None,
        metavar="SECONDS",
        help="exit after this long without a request (pairs with socket activation)",
    )
    parser.add_argument(
        "--request-timeout",
        type=seconds(positive=True),
        default=AgentLimits.request_timeout,
        metavar="SECONDS",
        help="the longest a request may take to arrive (default: %(default)s)",
    )
    parser.add_argument(
        "--max-connections",
        type=whole_number(1, 65536),
        default=AgentLimits.max_connections,
        metavar="N",
        help="connections served at once (default: %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="status: print JSON")
    parser.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    try:
        path = socket_path(args.socket)
        if args.action == "status":
            return _status(path, as_json=args.json)
        if args.action == "stop":
            return _stop(path)
        options = _run_options(args)
        if args.action == "start":
            return _start(path, store=args.store, options=options)
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s"
        )
        logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per refresh is enough
        return run_agent(
            path,
            store=args.store,
            systemd=args.systemd,
            limits=AgentLimits(
                request_timeout=args.request_timeout, max_connections=args.max_connections
            ),
            idle_exit=args.idle_exit,
            ready_fd=args.ready_fd,
        )
    except (AgentStartError, AgentPathError, ValueError) as error:
        print(f"freshtoken: {' '.join(str(error).split())}", file=sys.stderr)
        return 1


def _run_options(args: argparse.Namespace) -> list[str]:
    """The options a background agent inherits from ``start``."""
    options = [
        "--request-timeout",
        str(args.request_timeout),
        "--max-connections",
        str(args.max_connections),
    ]
    if args.idle_exit is not None:
        options += ["--idle-exit", str(args.idle_exit)]
    return options


def _start(path: Path, *, store: str | None, options: list[str]) -> int:
    pid, started = start_in_background(path, store=store, options=options)
    verb = "started" if started else "already running"
    print(f"freshtoken agent {verb} (pid {pid}) on {path}")
    print(f"export {ENV_SOCKET}={shlex.quote(str(path))}")
    return 0


def _status(path: Path, *, as_json: bool) -> int:
    status = agent_status(path)
    if status is None:
        stale = path.exists() and lock_holder(path) is None
        if as_json:
            print(json.dumps({"running": False, "socket": str(path), "stale_socket": stale}))
        else:
            note = " (a stale socket file is left from an agent that was killed)" if stale else ""
            print(f"no agent is running on {path}{note}")
        return EXIT_NOT_RUNNING
    if as_json:
        print(json.dumps({"running": True, **status}, indent=2))
        return 0
    _print_status(status)
    return 0


def _print_status(status: dict[str, Any]) -> None:
    counters = status.get("counters", {})
    print(f"freshtoken agent {status.get('version')} (pid {status.get('pid')})")
    print(f"  socket: {status.get('socket')}")
    print(f"  store:  {status.get('store')}")
    print(f"  up {status.get('uptime', 0):.0f} s since {status.get('started_at')}")
    print(
        f"  served {counters.get('tokens_served', 0)} tokens over "
        f"{counters.get('connections', 0)} connections; refused "
        f"{counters.get('refused_peers', 0)} other users, {counters.get('timeouts', 0)} slow "
        f"and {counters.get('bad_requests', 0)} malformed requests"
    )
    for profile in status.get("profiles", []):
        expiry = profile.get("expires_at") or "unknown"
        print(
            f"  profile {profile.get('profile')}: token expires {expiry}, scope "
            f"{profile.get('scope') or '-'}, {profile.get('refreshes', 0)} refreshes, "
            f"{profile.get('tokens_served', 0)} served"
        )
    if not status.get("profiles"):
        print("  no profile served yet")


def _stop(path: Path) -> int:
    pid = _stop_agent(path)
    if pid is None:
        print(f"no agent is running on {path}")
    else:
        print(f"freshtoken agent (pid {pid}) stopped")
    return 0
