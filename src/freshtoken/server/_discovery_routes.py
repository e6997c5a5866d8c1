"""Discovery routes: authorization server and protected resource metadata (RFC 8414, RFC
9728, OpenID Connect Discovery), the JWKS, dynamic client registration (RFC 7591/7592)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ._config import DEVICE_CODE_GRANT, JWT_BEARER_GRANT, TOKEN_EXCHANGE_GRANT
from ._endpoints import EndpointsBase
from ._records import IDENTITY_SCOPES
from ._registration import RegistrationRefused
from ._web import (
    _ASSERTION_ALGORITHMS,
    _AUTH_METHODS,
    _ID_TOKEN_CLAIMS,
    _JSON,
    _NO_STORE,
    _BadRequest,
    _error,
    _parse_json_object,
    _read_body,
)


class DiscoveryRoutes(EndpointsBase):
    """Metadata, JWKS and client registration."""

    async def metadata(self, request: Request) -> Response:
        """RFC 8414 and OpenID Connect Discovery 1.0: one document at both places."""
        issuer = self.state.issuer
        config = self.state.config
        scopes = {s for u in config.users for s in u.scopes} | IDENTITY_SCOPES
        return _JSON(
            {
                "issuer": issuer,
                "authorization_endpoint": f"{issuer}/oauth/authorize",
                "token_endpoint": f"{issuer}/oauth/token",
                "device_authorization_endpoint": f"{issuer}/oauth/device_authorization",
                "revocation_endpoint": f"{issuer}/oauth/revoke",
                "userinfo_endpoint": f"{issuer}/oauth/userinfo",
                "jwks_uri": f"{issuer}/.well-known/jwks.json",
                "grant_types_supported": [
                    "authorization_code",
                    "refresh_token",
                    DEVICE_CODE_GRANT,
                    "client_credentials",
                    "password",
                    JWT_BEARER_GRANT,
                    TOKEN_EXCHANGE_GRANT,
                ],
                "response_types_supported": ["code"],
                "response_modes_supported": ["query"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": _AUTH_METHODS,
                "token_endpoint_auth_signing_alg_values_supported": _ASSERTION_ALGORITHMS,
                "revocation_endpoint_auth_methods_supported": _AUTH_METHODS,
                "revocation_endpoint_auth_signing_alg_values_supported": _ASSERTION_ALGORITHMS,
                "authorization_response_iss_parameter_supported": (
                    config.authorization_response_iss
                ),
                "scopes_supported": sorted(scopes),
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": [self.state.key.algorithm],
                "claims_supported": _ID_TOKEN_CLAIMS,
                "dpop_signing_alg_values_supported": list(config.dpop.algorithms),
                **(
                    {"registration_endpoint": f"{issuer}/oauth/register"}
                    if config.registration
                    else {}
                ),
            }
        )

    async def register(self, request: Request) -> Response:
        """RFC 7591 dynamic client registration."""
        if not self.state.config.registration:
            return _error(404, "not_found", "dynamic client registration is off")
        try:
            body = await _read_body(request, self.max_body)
            document = _parse_json_object(request, body)
            answer = self.state.register_client(document, f"{self.state.issuer}/oauth/register")
        except _BadRequest as problem:
            return _error(400, "invalid_client_metadata", problem.description)
        except RegistrationRefused as refused:
            return _error(400, refused.error, refused.description)
        return _JSON(answer, status_code=201, headers=dict(_NO_STORE))

    async def registration(self, request: Request) -> Response:
        """RFC 7592 read, with the registration access token."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        client_id = request.path_params["client_id"]
        client = None
        if scheme.lower() == "bearer" and token:
            client = self.state.registered_client(client_id, token.strip())
        if client is None:
            return _error(401, "invalid_token", "a valid registration access token is required")
        return _JSON(
            {"client_id": client.client_id, "redirect_uris": list(client.redirect_uris)},
            headers=dict(_NO_STORE),
        )

    async def resource_metadata(self, request: Request) -> Response:
        """RFC 9728 protected resource metadata of the API under /api."""
        return _JSON(
            {
                "resource": f"{self.state.url}/api",
                "authorization_servers": [self.state.issuer],
                # What every user may have; admin comes by a step-up (insufficient_scope).
                "scopes_supported": ["read", "write"],
                "bearer_methods_supported": ["header"],
                "resource_name": "freshtoken reference API",
            }
        )

    async def jwks(self, request: Request) -> Response:
        return _JSON(self.state.key.jwks())
