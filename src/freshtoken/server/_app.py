"""The HTTP face of ServerState: a Starlette app that parses, asks the state, and answers.

Every answer to bad input is a 4xx with a JSON body; nothing a client sends may cause a 500.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .._core.clock import Clock, system_clock
from ._admin_routes import AdminRoutes
from ._api_routes import APIRoutes
from ._browser_routes import BrowserRoutes
from ._config import ServerConfig
from ._discovery_routes import DiscoveryRoutes
from ._dpop import NonceHeader
from ._personalities import PersonalityMiddleware
from ._state import ServerState
from ._token_routes import TokenRoutes
from ._web import TRANSPORT_KEY, _error, _ServerDate

__all__ = ["TRANSPORT_KEY", "build_app", "create_app"]


class _Endpoints(DiscoveryRoutes, TokenRoutes, BrowserRoutes, APIRoutes, AdminRoutes):
    """Every route of the app, one base per kind."""


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    names = {404: "not_found", 405: "method_not_allowed"}
    error = names.get(exc.status_code, "invalid_request")
    return _error(exc.status_code, error, str(exc.detail), **(exc.headers or {}))


async def _server_error(request: Request, exc: Exception) -> Response:
    return _error(500, "server_error", "the server failed; this is a bug in freshtoken")


def build_app(state: ServerState) -> Starlette:
    """The app over an existing state (ReferenceServer keeps the state to drive it)."""
    e = _Endpoints(state)
    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    config = state.config
    issuer_path = config.issuer_path
    routes = []
    if config.oauth_metadata:  # RFC 8414 section 3.1: the issuer's path after the suffix
        routes.append(
            Route(
                f"/.well-known/oauth-authorization-server{issuer_path}", e.metadata, methods=["GET"]
            )
        )
    if config.openid_metadata:  # OpenID Connect Discovery 4.1: the suffix after the path
        routes.append(
            Route(f"{issuer_path}/.well-known/openid-configuration", e.metadata, methods=["GET"])
        )
    routes += [
        Route(f"{issuer_path}/.well-known/jwks.json", e.jwks, methods=["GET"]),
        Route(f"{issuer_path}/oauth/authorize", e.authorize, methods=["GET"]),
        Route(f"{issuer_path}/oauth/authorize", e.authorize_answer, methods=["POST"]),
        Route(f"{issuer_path}/oauth/token", e.token, methods=["POST"]),
        Route(f"{issuer_path}/oauth/revoke", e.revoke, methods=["POST"]),
        Route(f"{issuer_path}/oauth/register", e.register, methods=["POST"]),
        Route(f"{issuer_path}/oauth/register/{{client_id}}", e.registration, methods=["GET"]),
        Route("/.well-known/oauth-protected-resource/api", e.resource_metadata, methods=["GET"]),
        Route(
            f"{issuer_path}/oauth/device_authorization", e.device_authorization, methods=["POST"]
        ),
        Route(
            f"{issuer_path}/oauth/userinfo",
            e.protected(e.userinfo, "openid"),
            methods=["GET", "POST"],
        ),
        Route(f"{issuer_path}/device", e.device_page, methods=["GET"]),
        Route(f"{issuer_path}/device", e.device_answer, methods=["POST"]),
        Route("/auth/login", e.login, methods=["POST"]),
        Route("/auth/refresh", e.refresh, methods=["POST"]),
        Route("/api/me", e.protected(e.me), methods=["GET"]),
        Route("/api/items", e.protected(e.list_items, "read"), methods=["GET"]),
        Route("/api/items", e.protected(e.create_item, "write"), methods=["POST"]),
        Route("/api/items/{item_id}", e.protected(e.get_item, "read"), methods=["GET"]),
        Route("/api/admin", e.protected(e.admin_area, "admin"), methods=["GET"]),
        Route("/api/echo", e.protected(e.echo, optional=True), methods=methods),
        Route("/api/redirect", e.redirect, methods=["GET"]),
    ]
    if state.config.admin:
        routes += [
            Route("/admin/stats", e.stats, methods=["GET"]),
            Route("/admin/stats/reset", e.reset_stats, methods=["POST"]),
            Route("/admin/faults", e.get_faults, methods=["GET"]),
            Route("/admin/faults", e.post_faults, methods=["POST"]),
        ]
    app = Starlette(
        routes=routes,
        middleware=[
            # Outermost: a provider's paths and answer formats wrap the reference server's.
            *([Middleware(PersonalityMiddleware, state=state)] if config.personality else []),
            Middleware(_ServerDate, state=state),
            Middleware(NonceHeader, verifier=state.dpop),
        ],
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
    )
    app.state.freshtoken = state
    return app


def create_app(
    config: ServerConfig | None = None,
    *,
    clock: Clock = system_clock,
    issuer: str = "http://testserver",
) -> Starlette:
    """A reference server app; ``issuer`` must be the URL clients reach it at (the issuer
    is that URL plus ``config.issuer_path``)."""
    return build_app(ServerState(config or ServerConfig(), clock=clock, url=issuer))
