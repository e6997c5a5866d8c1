"""``freshtoken bff``: run a backend for frontend from a config file, or the demo.

``freshtoken bff --config bff.toml`` (TOML, or JSON for a ``.json`` file):

    issuer = "https://idp.example.com"        # or a preset: provider = "github", or a table
    client_id = "my-spa"                      # [provider] name = "keycloak" base_url = ...
    client_secret_env = "BFF_CLIENT_SECRET"   # or client_secret = "..."
    secret_key_env = "BFF_SECRET_KEY"         # 32 random bytes (base64url) or a passphrase
    previous_keys_env = ["BFF_OLD_KEY"]       # optional: keys secret_key replaced (rotation)
    max_calls_per_session = 32                # optional: one session's calls upstream at once
    scope = "openid offline_access api"       # optional
    static = "dist"                           # optional: serve the SPA's files
    [routes]
    "/api/" = "https://api.example.com/"
    [sessions]                                # optional; memory by default
    kind = "redis"                            # memory | redis
    url = "redis://redis:6379/0"              # or sentinels = ["host:26379"], service = "..."
    cluster = false
    [server]
    host = "127.0.0.1"
    port = 8000
    workers = 2                               # several need Redis sessions

Other keys are [`BFF`][freshtoken.bff.BFF]'s keyword arguments (``prefix``,
``cookie_name``, ``same_site``, ``idle_timeout``, ``absolute_timeout``, ``csrf_header``,
``redirect_uri``, ``post_logout_redirect``, ``allow_insecure_http``...).

``freshtoken bff --demo [--static DIR]`` starts the embedded reference server (client
``bff-demo``, users demo/demo, alice/alice; access tokens live ``--access-ttl`` seconds) and a
BFF in front of it with sessions in memory, serving a built-in page at ``/`` (or the files of
``--static DIR``).

Either way the address is bound before anything else starts: a port in use is one line and
exit status 1.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

from .._arguments import port, seconds, whole_number
from ..errors import AuthError
from ._serving import listen, serve_in_foreground

__all__ = [
    "ConfigError",
    "app_from_environment",
    "build",
    "configure_parser",
    "demo_page",
    "load_config",
    "run",
    "static_files",
]

CONFIG_ENV = "FRESHTOKEN_BFF_CONFIG"
_SECTIONS = ("routes", "sessions", "server")
_SECRETS = ("client_secret", "secret_key")


class ConfigError(ValueError):
    """A config file that cannot run: the message says which key and why."""


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="the BFF's config file (TOML or JSON)")
    parser.add_argument(
        "--demo",
        action="store_true",
        help="run against an embedded reference server, with a page to sign in on at /",
    )
    parser.add_argument("--static", type=Path, help="serve the SPA's built files from DIR")
    parser.add_argument("--host", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=port, help="listen port (default 8000; 0: any free one)")
    parser.add_argument(
        "--workers", type=whole_number(1, 1024), help="uvicorn worker processes (default 1)"
    )
    parser.add_argument(
        "--access-ttl",
        type=seconds(positive=True),
        default=20.0,
        help="demo: access token lifetime (seconds)",
    )


def load_config(path: Path) -> dict[str, Any]:
    """Read and check a config file; secrets named by ``*_env`` keys are read here."""
    try:
        text = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror}") from None
    language = "JSON" if path.suffix == ".json" else "TOML"
    try:
        document = json.loads(text) if language == "JSON" else _toml(text)
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise ConfigError(f"{path} is not valid {language}: {error}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: the top level must be a table of settings")
    for name in _SECRETS:
        variable = document.pop(f"{name}_env", None)
        if variable is not None:
            value = os.environ.get(str(variable))
            if not value:
                raise ConfigError(f"{path}: {name}_env names ${variable}, which is not set")
            document[name] = value
    _previous_keys(document, path)
    for required in ("client_id", "secret_key"):
        if not document.get(required):
            raise ConfigError(f"{path}: {required} is required")
    if not {"issuer", "provider", "token_url"} & document.keys():
        raise ConfigError(f"{path}: issuer is required (or a provider preset)")
    provider = document.get("provider")
    if provider is not None:
        document["provider"] = _provider(provider, path)
    for section in _SECTIONS:
        if not isinstance(document.get(section, {}), dict):
            raise ConfigError(f"{path}: [{section}] must be a table")
    return document


def _provider(value: object, path: Path) -> Any:
    """``provider = "github"``, or a table: ``name`` and the preset's settings."""
    from .. import providers

    settings = dict(value) if isinstance(value, dict) else {"name": value}
    name = settings.pop("name", None)
    if not isinstance(name, str):
        raise ConfigError(f"{path}: provider is a preset's name, or a table with a name")
    try:
        return providers.get(name, **settings)
    except ValueError as error:
        raise ConfigError(f"{path}: {error}") from None


def _previous_keys(document: dict[str, Any], path: Path) -> None:
    """``previous_keys`` (a list of keys) and ``previous_keys_env`` (a list of variables, each
    holding one key) become one ``previous_keys`` list."""
    keys = document.get("previous_keys", [])
    names = document.pop("previous_keys_env", [])
    for setting, value in (("previous_keys", keys), ("previous_keys_env", names)):
        if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
            raise ConfigError(f"{path}: {setting} must be a list of non-empty strings")
    for variable in names:
        value = os.environ.get(variable)
        if not value:
            raise ConfigError(f"{path}: previous_keys_env names ${variable}, which is not set")
        keys.append(value)
    if keys:
        document["previous_keys"] = keys


def _toml(text: bytes) -> Any:
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib.loads(text.decode("utf-8"))
    try:  # Python 3.10: tomllib's ancestor, if installed
        parser = importlib.import_module("tomli")
    except ModuleNotFoundError:
        raise ConfigError("TOML needs Python 3.11+ or tomli (pip install tomli); or JSON") from None
    return parser.loads(text.decode("utf-8"))


def build(config: dict[str, Any], *, workers: int = 1) -> Any:
    """The ASGI app a config describes: the BFF, wrapping the static files if any."""
    from . import BFF, MemorySessionStore, RedisSessionStore

    settings = {key: value for key, value in config.items() if key not in (*_SECTIONS, "static")}
    sessions_config = dict(config.get("sessions", {}))
    kind = sessions_config.pop("kind", "memory")
    if kind == "memory":
        if workers > 1:
            raise ConfigError(
                'sessions in memory are per process: with several workers, use kind = "redis"'
            )
        sessions: Any = MemorySessionStore(**sessions_config)
    elif kind == "redis":
        sentinels = sessions_config.pop("sentinels", None)
        if sentinels is not None:
            service = sessions_config.pop("service", None)
            if not service:
                raise ConfigError("[sessions] sentinels need a service name")
            addresses = [_address(entry) for entry in sentinels]
            sessions = RedisSessionStore.from_sentinel(addresses, service, **sessions_config)
        else:
            url = sessions_config.pop("url", None)
            if not url:
                raise ConfigError('[sessions] kind = "redis" needs a url (or sentinels)')
            sessions = RedisSessionStore.from_url(url, **sessions_config)
    else:
        raise ConfigError(f"[sessions] kind is memory or redis, not {kind!r}")
    static = config.get("static")
    app = None if static is None else static_files(Path(static))
    try:
        return BFF(routes=config.get("routes", {}), sessions=sessions, app=app, **settings)
    except TypeError as error:
        raise ConfigError(f"unknown or misspelt setting: {error}") from None


def static_files(directory: Path) -> Any:
    """An ASGI app serving a built SPA (``index.html`` at ``/``; 404 for what is missing)."""
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.staticfiles import StaticFiles

    if not directory.is_dir():
        raise ConfigError(f"static: {directory} is not a directory")
    return Starlette(routes=[Mount("/", StaticFiles(directory=str(directory), html=True))])


def _address(entry: object) -> tuple[str, int]:
    host, _, port = str(entry).rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"a sentinel is host:port, not {entry!r}")
    return host, int(port)


def app_from_environment() -> Any:
    """The app of ``$FRESHTOKEN_BFF_CONFIG``: what each uvicorn worker process builds."""
    path = Path(os.environ[CONFIG_ENV])
    config = load_config(path)
    return build(config, workers=int(os.environ.get("FRESHTOKEN_BFF_WORKERS", "1")))


def run(args: argparse.Namespace) -> int:
    if args.demo:
        return _run_demo(args)
    if args.config is None:
        print("freshtoken bff: give --config FILE (or --demo)", file=sys.stderr)
        return 2
    try:
        config = load_config(args.config)
        server = config.get("server", {})
        if args.static is not None:
            config["static"] = str(args.static)
        workers = args.workers or int(server.get("workers", 1))
        host = args.host or server.get("host", "127.0.0.1")
        port = args.port if args.port is not None else int(server.get("port", 8000))
        app = build(config, workers=workers)  # check everything before forking workers
    except (ConfigError, ValueError, AuthError) as error:
        print(f"freshtoken bff: {error}", file=sys.stderr)
        return 2
    sock = _listen(host, port)
    if sock is None:
        return 1
    if workers == 1:
        return 0 if serve_in_foreground(app, sock) else 1
    # uvicorn's workers bind the address themselves: free it for them (it was free a moment
    # ago; should another program take it meanwhile, uvicorn says so).
    sock.close()
    import uvicorn

    os.environ[CONFIG_ENV] = str(args.config.resolve())
    os.environ["FRESHTOKEN_BFF_WORKERS"] = str(workers)
    uvicorn.run(
        "freshtoken.bff._command:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        server_header=False,  # a proxied answer carries the API's (see serve_in_foreground)
        date_header=False,
    )
    return 0


def _listen(host: str, port: int) -> socket.socket | None:
    """The BFF's listening socket; None, after one line on stderr, if it cannot be had (a port
    in use, an address not of this machine): said before any banner or server starts."""
    try:
        return listen(host, port)
    except OSError as error:
        print(
            f"freshtoken bff: cannot listen on {host}:{port}: {error.strerror or error}"
            " (pass --port, or stop what uses it)",
            file=sys.stderr,
        )
        return None


def demo_page() -> Path:
    """The built-in page ``freshtoken bff --demo`` serves at ``/``: sign in, call the API through
    the BFF, log out. Plain HTML and JavaScript shipped in the package, so the demo has a page
    after ``pip install``, with no Node.js and no build step."""
    return Path(__file__).resolve().parent / "demo_page"


def _run_demo(args: argparse.Namespace) -> int:
    from .._core.clock import system_clock
    from ..server import ReferenceServer
    from ._demo import bff_server_config, demo_bff

    try:
        app = static_files(demo_page() if args.static is None else args.static)
    except ConfigError as error:
        print(f"freshtoken bff: {error}", file=sys.stderr)
        return 2
    host = args.host or "127.0.0.1"
    sock = _listen(host, 8000 if args.port is None else args.port)
    if sock is None:
        return 1
    server = ReferenceServer(bff_server_config(access_ttl=args.access_ttl), clock=system_clock)
    try:
        server.start()
        bff = demo_bff(server.url, app=app, leeway=min(5.0, args.access_ttl / 4))
        page = "the built-in demo page" if args.static is None else f"files from {args.static}"
        print(
            f"freshtoken bff demo: open http://localhost:{sock.getsockname()[1]}/ and sign in as"
            f" demo/demo ({page})\n"
            f"  reference server {server.url} (access tokens live {args.access_ttl:g} s; "
            f"stats at {server.url}/admin/stats)\n"
            "Ctrl-C stops it.",
            flush=True,
        )
        started = serve_in_foreground(bff, sock, log_level="warning")
    finally:
        sock.close()
        server.stop()
    return 0 if started else 1
