"""``freshtoken serve``: run the reference server in the foreground until Ctrl-C.

Every flag also reads an environment variable, ``FRESHTOKEN_SERVER_<FLAG>`` (``--access-ttl``
is ``FRESHTOKEN_SERVER_ACCESS_TTL``; switches take 1/0, true/false, yes/no, on/off); a flag on
the command line wins. Importing this module needs no extra; running it needs ``server``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from .._arguments import port, seconds
from ..providers import NAMES as provider_names
from ._config import ServerConfig

__all__ = ["configure_parser", "run"]

_ENV_PREFIX = "FRESHTOKEN_SERVER_"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_DEFAULTS = ServerConfig()
# A wildcard address to bind -> the loopback address to name in URLs.
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "[::1]", "[::]": "[::1]"}


def _issuer_path(text: str) -> str:
    try:
        return ServerConfig(issuer_path=text).issuer_path
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _switch(text: str) -> bool:
    if text.strip().lower() in _TRUE:
        return True
    if text.strip().lower() in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected one of 1/0, true/false, yes/no, on/off: {text!r}")


class _Switch(argparse.Action):
    """``--name`` / ``--no-name``; unlike BooleanOptionalAction, a string default (from the
    environment) goes through ``type``, so a bad environment value is an argparse error."""

    def __init__(
        self,
        option_strings: Sequence[str],
        dest: str,
        default: Any = None,
        help: str | None = None,
        **kwargs: Any,
    ) -> None:
        names = list(option_strings)
        names += [f"--no-{o[2:]}" for o in option_strings if o.startswith("--")]
        super().__init__(names, dest, nargs=0, default=default, type=_switch, help=help)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, not (option_string or "").startswith("--no-"))


def _env(name: str, default: Any) -> Any:
    """The environment's raw text if set (argparse then converts it with the flag's type)."""
    return os.environ.get(_ENV_PREFIX + name, default)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``serve`` flags to ``parser`` (the lead's CLI owns the parser itself)."""
    d = _DEFAULTS

    def env_help(text: str, name: str) -> str:
        return f"{text} (default: %(default)s; env {_ENV_PREFIX}{name})"

    parser.add_argument(
        "--host", default=_env("HOST", "127.0.0.1"), help=env_help("address to bind", "HOST")
    )
    parser.add_argument(
        "--port", type=port, default=_env("PORT", 8400), help=env_help("port, 0 for any", "PORT")
    )

    def add(flag: str, kind: Any, text: str) -> None:
        """A flag that sets the `ServerConfig` field of its name, ``_Switch`` or typed."""
        name = flag[2:].replace("-", "_")
        env = name.upper()
        described = env_help(text, env)
        default = _env(env, getattr(d, name))
        if kind is _Switch:
            parser.add_argument(flag, action=_Switch, default=default, help=described)
        else:
            parser.add_argument(flag, type=kind, default=default, help=described)

    add("--access-ttl", seconds(positive=True), "access token lifetime, seconds")
    add("--refresh-ttl", seconds(positive=True), "absolute session lifetime from login, seconds")
    add("--refresh-idle-ttl", seconds(), "session idle timeout, seconds; 0 turns it off")
    add("--rotation", _Switch, "issue a new refresh token on each refresh")
    add("--reuse-detection", _Switch, "a reused rotated refresh token revokes its session")
    add("--reuse-grace", seconds(), "seconds a rotated refresh token is still accepted")
    add(
        "--clock-offset",
        seconds(signed=True),
        "server clock minus real clock, seconds (simulated skew)",
    )
    add("--refresh-in", seconds(), "add a refresh_in hint to token responses, seconds")
    add("--device-interval", seconds(), "polling interval the device flow asks for, seconds")
    add(
        "--issuer-path",
        _issuer_path,
        "a path for the issuer, e.g. /tenant (endpoints move under it)",
    )
    parser.add_argument(
        "--as",
        dest="as_provider",
        choices=provider_names,
        default=_env("AS", None),
        metavar="PROVIDER",
        help=env_help(
            f"answer as a real provider does ({', '.join(provider_names)}): its paths, answer "
            "formats, errors, lifetimes and rotation rules (they override the flags above)",
            "AS",
        ),
    )
    add("--admin", _Switch, "serve /admin/stats and /admin/faults")


def config_from(args: argparse.Namespace) -> ServerConfig:
    config = ServerConfig(
        access_ttl=args.access_ttl,
        refresh_ttl=args.refresh_ttl,
        refresh_idle_ttl=args.refresh_idle_ttl or None,
        rotation=args.rotation,
        reuse_detection=args.reuse_detection,
        reuse_grace=args.reuse_grace,
        clock_offset=args.clock_offset,
        refresh_in=args.refresh_in,
        admin=args.admin,
        device_interval=args.device_interval,
        issuer_path=args.issuer_path,
    )
    name = getattr(args, "as_provider", None)
    return config if name is None else config.as_provider(name)


def _banner(url: str, config: ServerConfig, *, everywhere: str | None = None) -> str:
    path = config.issuer_path
    issuer = url + path
    lines = [f"freshtoken reference server on {url}"]
    if everywhere is not None:
        lines.append(
            f"  listening on all interfaces ({everywhere}); the issuer and every URL below"
            f" name {url}, which works on this machine"
        )
    lines += [
        f"  issuer        {issuer}  (freshtoken login --issuer {issuer} --client-id demo-public)",
        f"  metadata      {url}/.well-known/oauth-authorization-server{path}",
        f"                {issuer}/.well-known/openid-configuration",
        f"  authorize     {issuer}/oauth/authorize  (login form, PKCE, any loopback port)",
        f"  device        {issuer}/oauth/device_authorization",
        f"                {issuer}/device  (the verification page)",
        f"  token         {issuer}/oauth/token",
        f"  revoke        {issuer}/oauth/revoke",
        f"  userinfo      {issuer}/oauth/userinfo",
        f"  jwks          {issuer}/.well-known/jwks.json",
        f"  json login    {url}/auth/login  (refresh: {url}/auth/refresh)",
        f"  api           {url}/api/me, /api/items, /api/admin, /api/echo",
    ]
    if config.admin:
        lines.append(f"  admin         {url}/admin/stats, {url}/admin/faults")
    if config.personality is not None:
        lines.append(
            f"  answering as  {config.personality}  (freshtoken login --provider "
            f"{config.personality} --provider-option base_url={url} --client-id demo ...)"
        )
    lines += [
        "demo credentials",
        "  confidential client  demo / demo-secret",
        "  public client        demo-public",
        "  users                demo / demo, alice / alice (scopes: read write)",
        "                       admin / admin (scopes: read write admin)",
        f"access {config.access_ttl:g}s, session {config.refresh_ttl:g}s"
        f" (idle {config.refresh_idle_ttl or 0:g}s), rotation {'on' if config.rotation else 'off'},"
        f" reuse detection {'on' if config.reuse_detection else 'off'},"
        f" grace {config.reuse_grace:g}s, clock offset {config.clock_offset:+g}s,"
        f" device polling every {config.device_interval:g}s",
        "Ctrl-C stops the server.",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; 0 on a clean stop, 1 if the port cannot be bound."""
    try:
        from .._uvicorn import base_url, bind_socket
        from ._runner import build_uvicorn_server
    except ModuleNotFoundError as exc:
        missing = (exc.name or "?").partition(".")[0]
        print(
            f"freshtoken: serve needs {missing!r}: pip install 'freshtoken[server]'",
            file=sys.stderr,
        )
        return 1

    config = config_from(args)
    try:
        sock = bind_socket(args.host, args.port)
    except OSError as exc:
        print(
            f"freshtoken: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    url = base_url(sock)
    everywhere = None
    if args.host in _WILDCARDS:
        # Nobody can open http://0.0.0.0:8400: name the loopback address, which the clients
        # on this machine reach without --allow-insecure-http.
        everywhere = url.removeprefix("http://")
        url = f"http://{_WILDCARDS[args.host]}:{sock.getsockname()[1]}"
    server = build_uvicorn_server(config, url)
    print(_banner(url, config, everywhere=everywhere), flush=True)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        # uvicorn re-raises the SIGINT it handled once it has shut down cleanly.
        pass
    finally:
        sock.close()
    print("freshtoken serve: stopped", flush=True)
    return 0
