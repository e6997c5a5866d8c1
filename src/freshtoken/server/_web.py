"""What every route shares: reading requests (bodies, forms, JSON), building answers
(JSON, pages, errors, a dropped connection) and the Date header middleware."""

from __future__ import annotations

import email.utils
import json
import math
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._records import parse_scope
from ._state import Principal, ServerState

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
