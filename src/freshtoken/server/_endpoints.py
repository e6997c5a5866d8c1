"""The routes' shared base: the state they answer from and the helpers more than one kind
of route uses (client authentication, DPoP refusals, error answers)."""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Any
from urllib.parse import unquote_plus

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from ._config import Client, TokenFault
from ._records import format_scope
from ._state import Issued, OAuthError, ServerState
from ._web import (
    _JSON,
    _NO_STORE,
    _PROXY_ERROR_PAGE,
    _TRUNCATED_TOKEN_RESPONSE,
    _BadRequest,
    _DropConnection,
    _error,
    _quoted,
    _seconds,
)


class EndpointsBase:
    """The state the routes answer from, and the helpers more than one kind of route uses."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.realm = state.config.realm
        self.max_body = state.config.max_body

    async def _injected_fault(self) -> TokenFault | None:
        """Wait out the injected latency, then take the next queued fault, if any."""
        latency = self.state.latency
        if latency:
            await asyncio.sleep(latency)
        return self.state.take_token_fault()

    @staticmethod
    def _answer(fault: TokenFault | None, response: Response) -> Response:
        """The answer to a processed request: ``response``, or none under a fault that
        processes first (the only kind that lets a request through)."""
        return response if fault is None else _DropConnection()

    @staticmethod
    def _failure(fault: TokenFault) -> Response:
        retry_after = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
        match fault.kind:
            case "status_500":
                return _error(500, "server_error", "injected failure")
            case "status_503":
                return _error(503, "temporarily_unavailable", "injected failure", **retry_after)
            case "status_429":
                retry_after.setdefault("Retry-After", "1")
                return _error(429, "slow_down", "injected failure", **retry_after)
            case "malformed_json":
                return Response(_TRUNCATED_TOKEN_RESPONSE, 200, _NO_STORE, "application/json")
            case "html_502":
                return HTMLResponse(_PROXY_ERROR_PAGE, 502)
            case "drop_connection" | "drop_after_processing":
                # drop_after_processing lands here only when there is nothing to process.
                return _DropConnection()

    def _token_response(self, issued: Issued, *, oauth: bool) -> Response:
        body: dict[str, Any] = {"access_token": issued.access_token}
        if oauth:
            body["token_type"] = "Bearer" if issued.jkt is None else "DPoP"
        body["expires_in"] = _seconds(issued.expires_in)
        if issued.refresh_token is not None:
            body["refresh_token"] = issued.refresh_token
        if issued.id_token is not None:
            body["id_token"] = issued.id_token
        if issued.issued_token_type is not None:
            body["issued_token_type"] = issued.issued_token_type
        if oauth:
            body["scope"] = format_scope(issued.scope)
        refresh_in = self.state.config.refresh_in
        if refresh_in is not None:
            body["refresh_in"] = _seconds(refresh_in)
        return _JSON(body, 200, _NO_STORE)

    def _oauth_error(self, status: int, error: str, description: str, basic: bool) -> Response:
        self.state.count_token_error(error)
        headers = dict(_NO_STORE)
        if error == "invalid_client" and basic:
            headers["WWW-Authenticate"] = f"Basic realm={_quoted(self.realm)}"
        return _error(status, error, description, **headers)

    def _authenticate_client(self, request: Request, form: dict[str, str]) -> Client:
        """HTTP Basic (RFC 6749 section 2.3.1), client_id and client_secret in the form, or
        a private_key_jwt assertion (RFC 7523 section 2.2)."""
        headers = request.headers.getlist("authorization")
        if len(headers) > 1:
            raise _BadRequest(400, "invalid_request", "repeated Authorization header")
        assertion = form.get("client_assertion")
        assertion_type = form.get("client_assertion_type")
        if assertion is not None or assertion_type is not None:
            if headers or "client_secret" in form:
                raise _BadRequest(400, "invalid_request", "more than one client authentication")
            if assertion is None or assertion_type is None:
                raise OAuthError(
                    "invalid_client", "client_assertion needs client_assertion_type", 401
                )
            endpoint = self.state.url + request.url.path
            return self.state.authenticate_assertion(
                form.get("client_id"), assertion_type, assertion, endpoint
            )
        if not headers:
            client_id = form.get("client_id")
            if client_id is None:
                raise OAuthError("invalid_client", "no client authentication", 401)
            return self.state.authenticate_client(client_id, form.get("client_secret"))
        scheme, _, credentials = headers[0].strip().partition(" ")
        if scheme.lower() != "basic":
            raise OAuthError("invalid_client", "only Basic client authentication", 401)
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise OAuthError("invalid_client", "malformed Basic credentials", 401) from exc
        client_id, colon, secret = decoded.partition(":")
        if not colon:
            raise OAuthError("invalid_client", "malformed Basic credentials", 401)
        client_id, secret = unquote_plus(client_id), unquote_plus(secret)
        if "client_secret" in form:
            raise _BadRequest(400, "invalid_request", "more than one client authentication")
        if form.get("client_id", client_id) != client_id:
            raise _BadRequest(400, "invalid_request", "client_id differs from Basic credentials")
        return self.state.authenticate_client(client_id, secret)
