"""The token endpoint (every grant, injected faults, DPoP proofs) and revocation (RFC 7009)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ._config import (
    DEVICE_CODE_GRANT,
    JWT_BEARER_GRANT,
    TOKEN_EXCHANGE_GRANT,
    Client,
)
from ._dpop import DPoPRefused
from ._endpoints import EndpointsBase
from ._records import parse_scope
from ._state import Issued, OAuthError
from ._web import (
    _NO_STORE,
    _BadRequest,
    _error,
    _Form,
    _parse_form,
    _read_body,
    _required,
)


class TokenRoutes(EndpointsBase):
    """The token and revocation endpoints."""

    async def _injected_failure(self) -> Response | None:
        """A fault's answer to a request that will not be processed."""
        fault = await self._injected_fault()
        return None if fault is None else self._failure(fault)

    def _token_proof(self, request: Request) -> str | None:
        """The key thumbprint of the request's DPoP proof, None without one (RFC 9449 5)."""
        proofs = request.headers.getlist("dpop")
        if not proofs:
            return None
        return self.state.dpop.check(proofs, request.method, str(request.url)).jkt

    def _dpop_refusal(self, refused: DPoPRefused) -> Response:
        self.state.count_token_error(refused.error)
        headers = dict(_NO_STORE)
        if refused.error == "use_dpop_nonce":
            headers["DPoP-Nonce"] = self.state.dpop.current_nonce()
        return _error(400, refused.error, refused.description, **headers)

    def _grant(self, request: Request, form: _Form) -> Issued:
        grant = _required(form, "grant_type")
        if grant == JWT_BEARER_GRANT:
            # RFC 7523 3.1: client authentication is optional; the assertion names the client.
            authenticated = self._client_if_any(request, form)
            scope = parse_scope(form.get("scope"))
            return self.state.jwt_bearer_grant(
                authenticated,
                _required(form, "assertion"),
                scope,
                self.state.url + request.url.path,
                jkt=self._token_proof(request),
            )
        client = self._authenticate_client(request, form)
        scope = parse_scope(form.get("scope"))
        jkt = self._token_proof(request)
        if grant == TOKEN_EXCHANGE_GRANT:
            return self.state.token_exchange_grant(
                client,
                form,
                form.several.get("audience", []),
                form.several.get("resource", []),
                scope,
                jkt=jkt,
            )
        if grant == "password":
            username, password = _required(form, "username"), _required(form, "password")
            return self.state.password_grant(client, username, password, scope, jkt=jkt)
        if grant == "refresh_token":
            refresh_token = _required(form, "refresh_token")
            return self.state.refresh_grant(
                client, refresh_token, scope, jkt=jkt, resource=form.several.get("resource")
            )
        if grant == "client_credentials":
            return self.state.client_credentials_grant(client, scope, jkt=jkt)
        if grant == "authorization_code":
            return self.state.authorization_code_grant(
                client,
                _required(form, "code"),
                form.get("redirect_uri"),
                form.get("code_verifier"),
                jkt=jkt,
                resource=form.several.get("resource"),
            )
        if grant == DEVICE_CODE_GRANT:
            return self.state.device_code_grant(client, _required(form, "device_code"), jkt=jkt)
        raise OAuthError(
            "unsupported_grant_type",
            "authorization_code, refresh_token, device_code, client_credentials, password, "
            "jwt-bearer or token-exchange",
        )

    def _client_if_any(self, request: Request, form: dict[str, str]) -> Client | None:
        """The authenticated client, or None when the request names none at all."""
        credentials = ("client_id", "client_secret", "client_assertion", "client_assertion_type")
        if "authorization" in request.headers or any(name in form for name in credentials):
            return self._authenticate_client(request, form)
        return None

    async def token(self, request: Request) -> Response:
        self.state.token_request_began()
        try:
            return await self._token(request)
        finally:
            self.state.token_request_ended()

    async def _token(self, request: Request) -> Response:
        # The client "attempted to authenticate via the Authorization header" (RFC 6749 5.2).
        basic = "authorization" in request.headers
        try:
            form = _parse_form(request, await _read_body(request, self.max_body))
        except _BadRequest as problem:
            self.state.count_token_request("other")
            failure = await self._injected_failure()
            return failure or self._oauth_error(
                problem.status, problem.error, problem.description, basic
            )
        self.state.count_token_request(form.get("grant_type", "other"))
        fault = await self._injected_fault()
        if fault is not None and fault.kind != "drop_after_processing":
            return self._failure(fault)
        try:
            issued = self._grant(request, form)
        except (_BadRequest, OAuthError) as refused:
            error = self._oauth_error(refused.status, refused.error, refused.description, basic)
            return self._answer(fault, error)
        except DPoPRefused as refused:
            return self._answer(fault, self._dpop_refusal(refused))
        return self._answer(fault, self._token_response(issued, oauth=True))

    async def revoke(self, request: Request) -> Response:
        basic = "authorization" in request.headers
        try:
            form = _parse_form(request, await _read_body(request, self.max_body))
            client = self._authenticate_client(request, form)
            self.state.revoke_token(client, _required(form, "token"))
        except (_BadRequest, OAuthError) as refused:
            return self._oauth_error(refused.status, refused.error, refused.description, basic)
        return Response(b"", 200, _NO_STORE)
