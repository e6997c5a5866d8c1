"""The protected demo API (RFC 6750, DPoP): bearer checks, challenges and the item routes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ._dpop import DPoPRefused
from ._endpoints import EndpointsBase
from ._records import format_scope
from ._state import BearerError, Principal
from ._web import (
    _JSON,
    Handler,
    _BadRequest,
    _error,
    _parse_json_object,
    _quoted,
    _read_body,
    _scheme_of,
)


class APIRoutes(EndpointsBase):
    """The protected API."""

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
