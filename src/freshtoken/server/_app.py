"""The HTTP face of ServerState: a Starlette app that parses, asks the state, and answers.

Every answer to bad input is a 4xx with a JSON body; nothing a client sends may cause a 500.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qsl, unquote_plus, urlencode, urlsplit

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._core.clock import Clock, system_clock
from . import _pages
from ._config import (
    DEVICE_CODE_GRANT,
    JWT_BEARER_GRANT,
    TOKEN_EXCHANGE_GRANT,
    Client,
    ServerConfig,
    TokenFault,
)
from ._dpop import DPoPRefused, NonceHeader
from ._personalities import PersonalityMiddleware
from ._records import IDENTITY_SCOPES, format_scope, parse_scope
from ._registration import RegistrationRefused
from ._state import (
    AuthorizationRefused,
    BearerError,
    Issued,
    LoginRejected,
    OAuthError,
    Principal,
    ServerState,
)

__all__ = ["TRANSPORT_KEY", "build_app", "create_app"]

# Where freshtoken's uvicorn protocol leaves the connection's transport in scope["state"], so
# that the drop_connection and drop_after_processing faults can close the socket unanswered.
TRANSPORT_KEY = "freshtoken.transport"

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_PAGE_HEADERS = {
    **_NO_STORE,
    # No scripts, no framing (clickjacking of the login form), and the code in a redirect
    # never leaks as a Referer.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline';"
    " frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]
_ASSERTION_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]
_ASSERTION_ALGORITHMS += ["ES256", "ES384", "ES512", "EdDSA"]
_ID_TOKEN_CLAIMS = ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "azp", "at_hash"]
_ID_TOKEN_CLAIMS += ["preferred_username"]
_FORM = "application/x-www-form-urlencoded"
_MAX_FORM_FIELDS = 64
_TRUNCATED_TOKEN_RESPONSE = b'{"access_token": "eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCJ9.eyJz'
_PROXY_ERROR_PAGE = (
    "<html><head><title>502 Bad Gateway</title></head>"
    "<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>"
)

Handler = Callable[[Request, Principal | None], Awaitable[Response]]


class _JSON(JSONResponse):
    # ASCII output: a lone surrogate echoed back from a client's JSON cannot break encoding.
    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False).encode("ascii")


class _BadRequest(Exception):
    """Input refused before it reaches the state; answered as JSON in the endpoint's style."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.status = status
        self.error = error
        self.description = description


class _DropConnection(Response):
    """Closes the socket without a byte of answer, as a crashed proxy would."""

    def __init__(self) -> None:
        super().__init__()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        transport = scope.get("state", {}).get(TRANSPORT_KEY)
        if transport is None:
            raise RuntimeError(
                "dropping a connection needs the uvicorn protocol of ReferenceServer or `serve`"
            )
        transport.close()
        # Wait for uvicorn to notice: it then neither answers 500 nor logs an error.
        while (await receive())["type"] != "http.disconnect":
            pass


def _page(html: str, status: int = 200) -> Response:
    return HTMLResponse(html, status, _PAGE_HEADERS)


def _see_other(location: str) -> Response:
    # 303: the browser follows a form POST's answer with a GET (RFC 9110 15.4.4).
    return RedirectResponse(location, 303, _PAGE_HEADERS)


def _query(request: Request) -> dict[str, str]:
    """The query's parameters, empty ones omitted; a repeated one is refused (RFC 6749 3.1)."""
    params: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if not value:
            continue
        if name in params:
            raise _BadRequest(400, "invalid_request", f"parameter {name!r} is repeated")
        params[name] = value
    return params


def _error(status: int, error: str, description: str, **headers: str) -> Response:
    if status == 413:
        headers["Connection"] = "close"  # the rest of the body is still on its way; drop it
    return _JSON({"error": error, "error_description": description}, status, headers or None)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _BadRequest(413, "request_too_large", f"bodies are limited to {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _BadRequest(413, "request_too_large", f"bodies are limited to {limit} bytes")
    return bytes(body)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").partition(";")[0].strip().lower()


class _Form(dict[str, str]):
    """A form's fields, each once; ``several`` holds those that may repeat (RFC 8693's
    ``audience`` and ``resource``), every value in order."""

    several: dict[str, list[str]]


_REPEATABLE = frozenset({"audience", "resource"})


def _parse_form(request: Request, body: bytes) -> _Form:
    if _media_type(request) != _FORM:
        raise _BadRequest(400, "invalid_request", f"the body must be {_FORM}")
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=_MAX_FORM_FIELDS,
        )
    except ValueError as exc:  # UnicodeDecodeError is one, and so is too many fields
        raise _BadRequest(400, "invalid_request", "the body is not a UTF-8 form") from exc
    form = _Form()
    form.several = {}
    for name, value in pairs:
        if not value:
            continue  # RFC 6749 section 3.1: "sent without a value ... treated as omitted"
        if name in _REPEATABLE:
            form.several.setdefault(name, []).append(value)
            continue
        if name in form:
            # RFC 6749 section 3.2: parameters "MUST NOT be included more than once".
            raise _BadRequest(400, "invalid_request", f"parameter {name!r} is repeated")
        form[name] = value
    return form


def _parse_json_object(
    request: Request, body: bytes, too_large: _BadRequest | None = None
) -> dict[str, Any]:
    if too_large is not None:
        raise too_large
    media_type = _media_type(request)
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise _BadRequest(415, "unsupported_media_type", "the body must be application/json")
    try:
        value = json.loads(body.decode("utf-8"), parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise _BadRequest(400, "invalid_request", "the body is not UTF-8 JSON") from exc
    if not isinstance(value, dict):
        raise _BadRequest(400, "invalid_request", "the body must be a JSON object")
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _string_field(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise _BadRequest(400, "invalid_request", f"{name!r} must be a non-empty string")
    return value


def _scope_field(data: dict[str, Any]) -> frozenset[str] | None:
    return None if data.get("scope") is None else parse_scope(_string_field(data, "scope"))


def _required(form: dict[str, str], name: str) -> str:
    value = form.get(name)
    if value is None:
        raise _BadRequest(400, "invalid_request", f"missing parameter {name!r}")
    return value


def _seconds(value: float) -> int | float:
    """Whole seconds as an int (what most clients expect); sub-second TTLs stay floats."""
    rounded = round(max(float(value), 0.0), 3)
    return int(rounded) if rounded.is_integer() else rounded


def _scheme_of(request: Request) -> str:
    """The scheme a challenge answers in: DPoP for a request that used it, else Bearer."""
    authorization = request.headers.get("authorization", "")
    return "DPoP" if authorization[:5].lower() == "dpop " else "Bearer"


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class _ServerDate:
    """Stamps every answer with the *server's* clock, so that clients can measure the skew."""

    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state
        self._cached: tuple[int, bytes] = (-1, b"")

    def _date(self) -> bytes:
        second = math.floor(self.state.now())
        if self._cached[0] != second:
            self._cached = (second, email.utils.formatdate(second, usegmt=True).encode())
        return self._cached[1]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_date(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (b"date", self._date())]
            await send(message)

        await self.app(scope, receive, send_with_date)


class _Endpoints:
    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.realm = state.config.realm
        self.max_body = state.config.max_body

    # -- discovery -----------------------------------------------------------------------

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

    # -- token endpoints -----------------------------------------------------------------

    async def _injected_fault(self) -> TokenFault | None:
        """Wait out the injected latency, then take the next queued fault, if any."""
        latency = self.state.latency
        if latency:
            await asyncio.sleep(latency)
        return self.state.take_token_fault()

    async def _injected_failure(self) -> Response | None:
        """A fault's answer to a request that will not be processed."""
        fault = await self._injected_fault()
        return None if fault is None else self._failure(fault)

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

    # -- the browser's side: authorization code and device pages -------------------------

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

    # -- the protected API (RFC 6750) ----------------------------------------------------

    def _challenge(self, error: BearerError, scheme: str = "Bearer") -> Response:
        params = [f"realm={_quoted(self.realm)}"]
        if scheme == "DPoP":  # RFC 9449 section 7.1
            params.append(f"algs={_quoted(' '.join(self.state.config.dpop.algorithms))}")
        if error.error is not None:
            params.append(f"error={_quoted(error.error)}")
            params.append(f"error_description={_quoted(error.description)}")
        if error.scope is not None:
            params.append(f"scope={_quoted(error.scope)}")
        # RFC 9728 section 5.1: where the client learns how to get a token for this API.
        metadata = f"{self.state.url}/.well-known/oauth-protected-resource/api"
        params.append(f"resource_metadata={_quoted(metadata)}")
        headers = {"WWW-Authenticate": f"{scheme} " + ", ".join(params)}
        return _error(error.status, error.error or "unauthorized", error.description, **headers)

    def _dpop_challenge(self, refused: DPoPRefused) -> Response:
        # Counted as dpop_invalid_proofs or dpop_nonce_demands: no token was judged.
        response = self._challenge(BearerError(401, refused.error, refused.description), "DPoP")
        if refused.error == "use_dpop_nonce":
            response.headers["DPoP-Nonce"] = self.state.dpop.current_nonce()
        return response

    def _principal(self, request: Request, scope: str | None, optional: bool) -> Principal | None:
        headers = request.headers.getlist("authorization")
        if not headers and optional:
            return None
        if len(headers) > 1:
            raise BearerError(400, "invalid_request", "repeated Authorization header")
        scheme, _, token = headers[0].strip().partition(" ") if headers else ("", "", "")
        kind = scheme.lower()
        if kind not in ("bearer", "dpop") and optional:
            return None  # the echo reports other credentials (has_authorization) unjudged
        if kind not in ("bearer", "dpop"):
            # RFC 6750 section 3.1: no bearer credentials at all, so no error code.
            self.state.count("unauthorized_401")
            raise BearerError(401, None, "a bearer access token is required")
        token = token.strip()
        proof_jkt = None
        if kind == "dpop":  # RFC 9449 section 7: the proof first, then the token it names
            proofs = request.headers.getlist("dpop")
            method, url = request.method, str(request.url)
            proof_jkt = self.state.dpop.check(proofs, method, url, access_token=token).jkt
        principal = self.state.authenticate(token, scope)
        if not principal.serves(f"{self.state.url}/api"):
            self.state.count("unauthorized_401")
            raise BearerError(401, "invalid_token", "the access token is for another resource")
        if principal.jkt != proof_jkt:
            self.state.count("unauthorized_401")
            if proof_jkt is None:
                raise BearerError(401, "invalid_token", "a DPoP-bound token needs its proof")
            raise BearerError(401, "invalid_token", "the token is not bound to the proof's key")
        return principal

    def protected(
        self, handler: Handler, scope: str | None = None, optional: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                principal = self._principal(request, scope, optional)
                response = await handler(request, principal)
            except DPoPRefused as refused:
                return self._dpop_challenge(refused)
            except BearerError as refused:
                return self._challenge(refused, _scheme_of(request))
            except _BadRequest as problem:
                return _error(problem.status, problem.error, problem.description)
            if principal is not None and response.status_code < 400:
                self.state.count("api_ok")
            return response

        return endpoint

    async def me(self, request: Request, principal: Principal | None) -> Response:
        assert principal is not None
        answer: dict[str, Any] = {
            "sub": principal.subject,
            "username": principal.username,
            "client_id": principal.client_id,
            "scope": format_scope(principal.scope),
            "expires_at": principal.expires_at,
        }
        if principal.act is not None:
            answer["act"] = principal.act
        return _JSON(answer)

    async def list_items(self, request: Request, principal: Principal | None) -> Response:
        return _JSON({"items": self.state.items()})

    async def create_item(self, request: Request, principal: Principal | None) -> Response:
        assert principal is not None
        data = _parse_json_object(request, await _read_body(request, self.max_body))
        return _JSON(self.state.add_item(principal.subject, data), 201)

    async def get_item(self, request: Request, principal: Principal | None) -> Response:
        raw_id = request.path_params["item_id"]
        item = self.state.item(int(raw_id)) if raw_id.isascii() and raw_id.isdigit() else None
        if item is None:
            return _error(404, "not_found", "no such item")
        return _JSON(item)

    async def admin_area(self, request: Request, principal: Principal | None) -> Response:
        assert principal is not None
        return _JSON({"ok": True, "sub": principal.subject})

    async def echo(self, request: Request, principal: Principal | None) -> Response:
        body = await _read_body(request, self.max_body)
        headers: dict[str, str] = {}
        for name, value in request.headers.items():
            if name != "authorization":
                headers[name] = f"{headers[name]}, {value}" if name in headers else value
        return _JSON(
            {
                "method": request.method,
                "path": request.url.path,
                "query": request.url.query,
                "headers": headers,
                "has_authorization": "authorization" in request.headers,
                "body": body.decode("utf-8", errors="replace"),
                "body_length": len(body),
                "sub": principal.subject if principal else None,
            }
        )

    async def redirect(self, request: Request) -> Response:
        targets = request.query_params.getlist("to")
        status = request.query_params.get("status", "302")
        if len(targets) != 1:
            return _error(400, "invalid_request", "give exactly one 'to' URL")
        target = targets[0]
        parts = urlsplit(target) if target.isascii() and target.isprintable() else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            return _error(400, "invalid_request", "'to' must be an absolute http(s) URL")
        if status not in ("301", "302", "303", "307", "308"):
            return _error(400, "invalid_request", "status must be 301, 302, 303, 307 or 308")
        return RedirectResponse(target, int(status))

    # -- administration ------------------------------------------------------------------

    async def stats(self, request: Request) -> Response:
        return _JSON(self.state.stats())

    async def reset_stats(self, request: Request) -> Response:
        self.state.reset_stats()
        return _JSON(self.state.stats())

    async def get_faults(self, request: Request) -> Response:
        return _JSON(self.state.faults())

    async def post_faults(self, request: Request) -> Response:
        """Arm faults. Body: any of ``{"kind", "count", "retry_after"}``, ``"latency"``,
        ``"fail_api"``, ``"expire_access_tokens": true``, ``"revoke_user"``, ``"clear": true``,
        ``"dpop_new_nonce": N`` (the next N proofs are told to use a new nonce),
        ``"rotate_dpop_nonce": true``.
        """
        try:
            data = _parse_json_object(request, await _read_body(request, self.max_body))
            answer = self._apply_faults(data)
        except _BadRequest as problem:
            return _error(problem.status, problem.error, problem.description)
        return _JSON({**answer, "faults": self.state.faults()})

    def _apply_faults(self, data: dict[str, Any]) -> dict[str, Any]:
        known = {"kind", "count", "retry_after", "latency", "fail_api"}
        known |= {"expire_access_tokens", "revoke_user", "clear"}
        known |= {"dpop_new_nonce", "rotate_dpop_nonce"}
        if unknown := set(data) - known:
            raise _BadRequest(400, "invalid_request", f"unknown keys {sorted(unknown)}")

        def number(name: str, kind: type) -> Any:
            value = data.get(name)
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(
                value, (int, float) if kind is float else int
            ):
                raise _BadRequest(400, "invalid_request", f"{name!r} must be a number")
            return value

        answer: dict[str, Any] = {}
        try:
            if data.get("clear") is True:
                self.state.clear_faults()
            if (latency := number("latency", float)) is not None:
                self.state.set_latency(float(latency))
            if (calls := number("fail_api", int)) is not None:
                self.state.fail_api(calls)
            if "kind" in data:
                kind = data["kind"]
                count = number("count", int)
                retry_after = number("retry_after", int)
                if not isinstance(kind, str):
                    raise _BadRequest(400, "invalid_request", "'kind' must be a string")
                TokenFault(kind, 1 if count is None else count, retry_after)  # type: ignore[arg-type]
                self.state.inject(kind, 1 if count is None else count, retry_after=retry_after)  # type: ignore[arg-type]
            if (demands := number("dpop_new_nonce", int)) is not None:
                self.state.dpop.demand_new_nonce(demands)
            if data.get("rotate_dpop_nonce") is True:
                self.state.dpop.rotate_nonce()
            if data.get("expire_access_tokens") is True:
                self.state.expire_access_tokens()
            if (user := data.get("revoke_user")) is not None:
                if not isinstance(user, str):
                    raise _BadRequest(400, "invalid_request", "'revoke_user' must be a string")
                answer["revoked_families"] = self.state.revoke_user(user)
        except ValueError as exc:
            raise _BadRequest(400, "invalid_request", str(exc)) from exc
        return answer


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
