"""The browser's side: the authorization and device pages, userinfo, and the JSON
login/refresh routes of the demo."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from . import _pages
from ._config import Client
from ._endpoints import EndpointsBase
from ._records import format_scope, parse_scope
from ._state import (
    AuthorizationRefused,
    Issued,
    LoginRejected,
    OAuthError,
    Principal,
)
from ._web import (
    _JSON,
    _NO_STORE,
    _BadRequest,
    _error,
    _page,
    _parse_form,
    _parse_json_object,
    _query,
    _read_body,
    _scope_field,
    _seconds,
    _see_other,
    _string_field,
)


class BrowserRoutes(EndpointsBase):
    """The login and device pages, and the JSON login of the demo."""

    def _path(self, path: str) -> str:
        return self.state.config.issuer_path + path

    def _refused(self, refused: AuthorizationRefused) -> Response:
        if refused.redirect_uri is None:
            # Nowhere trustworthy to send the user: tell them (RFC 6749 section 4.1.2.1).
            return _page(_pages.error_page("Sign-in failed", refused.description), 400)
        params = {"error": refused.error, "error_description": refused.description}
        if refused.state is not None:
            params["state"] = refused.state
        if self.state.config.authorization_response_iss:
            params["iss"] = self.state.issuer
        separator = "&" if "?" in refused.redirect_uri else "?"
        return _see_other(refused.redirect_uri + separator + urlencode(params))

    def _login_form(self, request_id: str, username: str, error: str | None) -> str:
        pending = self.state.pending_authorization(request_id)
        return _pages.login_form(
            action=self._path("/oauth/authorize"),
            request_id=request_id,
            client_id=pending.client_id,
            scope="" if pending.scope is None else format_scope(pending.scope),
            users=self.state.config.users,
            username=username,
            error=error,
        )

    async def authorize(self, request: Request) -> Response:
        """GET: an authorization request (RFC 6749 4.1.1), answered with the login form."""
        try:
            params = _query(request)
        except _BadRequest as problem:
            return _page(_pages.error_page("Sign-in failed", problem.description), 400)
        try:
            pending = self.state.authorization_request(params)
            return _page(self._login_form(pending.id, "demo", None))
        except AuthorizationRefused as refused:
            return self._refused(refused)

    async def authorize_answer(self, request: Request) -> Response:
        """POST: the login form, signed in or denied; redirects to the client."""
        try:
            form = _parse_form(request, await _read_body(request, self.max_body))
        except _BadRequest as problem:
            return _page(_pages.error_page("Sign-in failed", problem.description), problem.status)
        request_id = form.get("request_id", "")
        action = form.get("action")
        if action not in ("approve", "deny"):
            return _page(_pages.error_page("Sign-in failed", "choose Sign in or Deny"), 400)
        try:
            location = self.state.complete_authorization(
                request_id, form.get("username"), form.get("password"), approve=action == "approve"
            )
        except LoginRejected as rejected:
            try:
                html = self._login_form(request_id, form.get("username", ""), str(rejected))
            except AuthorizationRefused as refused:
                return self._refused(refused)
            return _page(html, 401)
        except AuthorizationRefused as refused:
            return self._refused(refused)
        return _see_other(location)

    async def device_authorization(self, request: Request) -> Response:
        """RFC 8628 section 3.1-3.2."""
        basic = "authorization" in request.headers
        try:
            form = _parse_form(request, await _read_body(request, self.max_body))
            client = self._authenticate_client(request, form)
            grant = self.state.device_authorization(client, parse_scope(form.get("scope")))
        except (_BadRequest, OAuthError) as refused:
            return self._oauth_error(refused.status, refused.error, refused.description, basic)
        verification_uri = f"{self.state.issuer}/device"
        return _JSON(
            {
                "device_code": grant.device_code,
                "user_code": grant.user_code,
                "verification_uri": verification_uri,
                "verification_uri_complete": (
                    f"{verification_uri}?{urlencode({'user_code': grant.user_code})}"
                ),
                "expires_in": _seconds(grant.expires_in),
                "interval": _seconds(grant.interval),
            },
            200,
            _NO_STORE,
        )

    def _device_form(self, user_code: str, username: str, error: str | None) -> str:
        return _pages.device_form(
            action=self._path("/device"),
            user_code=user_code,
            users=self.state.config.users,
            username=username,
            error=error,
        )

    async def device_page(self, request: Request) -> Response:
        try:
            user_code = _query(request).get("user_code", "")
        except _BadRequest:
            user_code = ""
        return _page(self._device_form(user_code[:64], "demo", None))

    async def device_answer(self, request: Request) -> Response:
        try:
            form = _parse_form(request, await _read_body(request, self.max_body))
        except _BadRequest as problem:
            return _page(_pages.error_page("Device login failed", problem.description), 400)
        action = form.get("action")
        user_code = form.get("user_code", "")[:64]
        if action not in ("approve", "deny"):
            return _page(self._device_form(user_code, "", "choose Approve or Deny"), 400)
        try:
            outcome = self.state.complete_device(
                user_code, form.get("username"), form.get("password"), approve=action == "approve"
            )
        except LoginRejected as rejected:
            html = self._device_form(user_code, form.get("username", ""), str(rejected))
            return _page(html, 400)
        return _page(_pages.device_done(outcome == "approved"))

    async def userinfo(self, request: Request, principal: Principal | None) -> Response:
        """OpenID Connect Core 5.3, for access tokens with the openid scope."""
        assert principal is not None
        return _JSON({"sub": principal.subject, "preferred_username": principal.username})

    async def _json_grant(
        self, request: Request, grant: str, issue: Callable[[dict[str, Any]], Issued]
    ) -> Response:
        too_large: _BadRequest | None = None
        try:
            body = await _read_body(request, self.max_body)
        except _BadRequest as problem:
            body, too_large = b"", problem
        self.state.count_token_request(grant)
        fault = await self._injected_fault()
        if fault is not None and fault.kind != "drop_after_processing":
            return self._failure(fault)
        try:
            issued = issue(_parse_json_object(request, body, too_large))
        except (_BadRequest, OAuthError) as refused:
            self.state.count_token_error(refused.error)
            error, status = refused.error, refused.status
            if isinstance(refused, OAuthError) and error in ("invalid_grant", "invalid_client"):
                status = 401
                if grant == "password" and error == "invalid_grant":
                    error = "invalid_credentials"
            return self._answer(fault, _error(status, error, refused.description, **_NO_STORE))
        return self._answer(fault, self._token_response(issued, oauth=False))

    def _json_client(self) -> Client:
        client_id = self.state.config.json_client_id
        client = self.state.config.client(client_id)
        if client is None:
            raise OAuthError("invalid_client", f"json_client_id {client_id!r} is not configured")
        return client

    async def login(self, request: Request) -> Response:
        def issue(data: dict[str, Any]) -> Issued:
            username = _string_field(data, "username")
            password = _string_field(data, "password")
            scope = _scope_field(data)
            return self.state.password_grant(self._json_client(), username, password, scope)

        return await self._json_grant(request, "password", issue)

    async def refresh(self, request: Request) -> Response:
        def issue(data: dict[str, Any]) -> Issued:
            refresh_token = _string_field(data, "refresh_token")
            scope = _scope_field(data)
            issued = self.state.refresh_grant(self._json_client(), refresh_token, scope)
            # In-house APIs always answer with a refresh token: without rotation, the same.
            return issued if issued.refresh_token else replace(issued, refresh_token=refresh_token)

        return await self._json_grant(request, "refresh_token", issue)
