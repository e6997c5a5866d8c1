"""Personalities: the reference server answering as a real provider does.

Each personality is data written from the provider's public documentation (cited beside it):
its paths, whether it publishes discovery, how it formats answers and errors, which fields it
leaves out or adds, its lifetimes, rotation and revocation rules. One ASGI middleware applies
it around the reference app, so the grants, rotation, reuse detection, faults and counters
stay the reference server's own, and only the wire changes.

Select one with ``freshtoken serve --as NAME``, ``ServerConfig().as_provider(NAME)`` or the
fixture ``oauth_server_factory(as_=NAME)``.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._config import ServerConfig
from ._state import ServerState

__all__ = ["NAMES", "PERSONALITIES", "Personality", "PersonalityMiddleware", "configure"]

ENTRA_TENANT = "9188040d-6c67-4c5b-b112-36a304b66dad"  # the consumers tenant's id
_DAY = 86400.0
# What a provider's documentation leaves unsaid: refresh tokens live a month, with no idle
# limit (the reference server's own defaults, a day and an hour, are a test's, not a provider's).
_UNSAID: Mapping[str, Any] = {"refresh_ttl": 30 * _DAY, "refresh_idle_ttl": None}
_TOKEN_PATH = "/oauth/token"
_DEVICE_PATH = "/oauth/device_authorization"


@dataclasses.dataclass(frozen=True)
class Personality:
    """How one provider's wire differs from the reference server's (RFC-perfect) one."""

    name: str
    config: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    paths: Mapping[str, str] = dataclasses.field(default_factory=dict)  # theirs -> ours
    discovery: bool = True
    issuer_template: str | None = None  # discovery of these tenants names {tenantid}
    form_unless_json: bool = False  # form-encoded answers unless Accept: application/json
    error_status: int | None = None  # every token endpoint error with this status
    status_of: Mapping[str, int] = dataclasses.field(default_factory=dict)  # by error code
    error_codes: Mapping[str, str] = dataclasses.field(default_factory=dict)  # RFC -> theirs
    error_description: Mapping[str, str] = dataclasses.field(default_factory=dict)
    ok_field: bool = False  # Slack's {"ok": true|false}
    drop_fields: tuple[str, ...] = ()
    add_fields: tuple[str, ...] = ()  # names of computed fields: see _extra_fields
    opaque_prefix: str | None = None  # access tokens are opaque strings (not JWTs)
    verification_url: bool = False  # the device answer says verification_url
    refresh_requires_scope: bool = False
    refresh_race: bool = False  # overlapping refreshes with one token: invalid_request


PERSONALITIES: dict[str, Personality] = {
    # https://developers.google.com/identity/protocols/oauth2/web-server#offline: a refresh
    # answer has no refresh_token (the old one stays); expires_in 3599.
    # https://developers.google.com/identity/protocols/oauth2/limited-input-device#step-2:-handle-the-authorization-server-response:
    # the device answer says verification_url.
    "google": Personality(
        "google",
        config={
            "rotation": False,
            "reuse_detection": False,
            "access_ttl": 3599.0,
            "refresh_idle_ttl": 180 * _DAY,  # unused for six months, it stops working
            "refresh_ttl": 3650 * _DAY,
        },
        verification_url=True,
    ),
    # https://learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow#refresh-the-access-token
    # (scope is required on refresh; AADSTS900144 otherwise),
    # https://learn.microsoft.com/entra/identity-platform/refresh-tokens (new refresh token
    # each time, the old one is not revoked), multi-tenant discovery names {tenantid}
    # (https://learn.microsoft.com/entra/identity-platform/v2-protocols-oidc), ID tokens
    # carry the real tenant in iss and tid.
    "microsoft": Personality(
        "microsoft",
        config={
            "rotation": True,
            "reuse_detection": False,
            "reuse_grace": 90 * 86400.0,  # the old refresh token keeps working
            "issuer_path": f"/{ENTRA_TENANT}/v2.0",
            "oauth_metadata": False,
            "authorization_response_iss": False,
            "access_ttl": 3600.0,
            "refresh_idle_ttl": 90 * 86400.0,
            "refresh_ttl": 90 * 86400.0,
            "id_token_claims": (("tid", ENTRA_TENANT),),
        },
        issuer_template=f"/{ENTRA_TENANT}/v2.0",
        add_fields=("ext_expires_in",),
        refresh_requires_scope=True,
    ),
    # https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/refreshing-user-access-tokens:
    # expires_in 28800, refresh_token_expires_in, "once you use a refresh token, that refresh
    # token and the old user access token will no longer work".
    # https://docs.github.com/en/apps/oauth-apps/maintaining-oauth-apps/troubleshooting-oauth-app-access-token-request-errors:
    # the Accept header chooses the format (form-encoded by default); errors come with 200
    # (bad_refresh_token, incorrect_client_credentials). No discovery for user login.
    # https://docs.github.com/en/apps/oauth-apps/building-oauth-apps/authorizing-oauth-apps#device-flow:
    # authorization_pending and slow_down come as error answers like the others.
    "github": Personality(
        "github",
        config={
            "access_ttl": 28800.0,
            "refresh_ttl": 15897600.0,
            "refresh_idle_ttl": None,
            "revoke_access_on_refresh": True,
        },
        paths={
            "/login/oauth/authorize": "/oauth/authorize",
            "/login/oauth/access_token": _TOKEN_PATH,
            "/login/device/code": _DEVICE_PATH,
        },
        discovery=False,
        form_unless_json=True,
        error_status=200,
        error_codes={
            "invalid_grant": "bad_refresh_token",
            "invalid_client": "incorrect_client_credentials",
        },
        add_fields=("refresh_token_expires_in",),
        opaque_prefix="ghu_",
    ),
    # https://docs.gitlab.com/api/oauth2/: access tokens live 2 hours, answers carry
    # created_at, refresh tokens rotate.
    "gitlab": Personality(
        "gitlab",
        config={"access_ttl": 7200.0},
        add_fields=("created_at",),
    ),
    # https://developer.okta.com/docs/guides/refresh-tokens/main/: a custom authorization
    # server at /oauth2/default; rotation with a grace period (30 s by default).
    "okta": Personality(
        "okta",
        config={
            "issuer_path": "/oauth2/default",
            "access_ttl": 3600.0,
            "reuse_grace": 30.0,
            "refresh_idle_ttl": 7 * _DAY,  # the default policy rule: unused for 7 days
        },
    ),
    # https://auth0.com/docs/secure/tokens/refresh-tokens/refresh-token-rotation: rotation,
    # reuse revokes the family; an unknown refresh token is 403 invalid_grant
    # (https://support.auth0.com/center/s/article/troubleshoot-refresh-token-unknown-or-invalid-before-expiry-403-unknown-or-invalid-refresh-token).
    "auth0": Personality(
        "auth0",
        # https://auth0.com/docs/secure/tokens/refresh-tokens/configure-refresh-token-expiration:
        # idle 15 days and absolute 30 days by default.
        config={"access_ttl": 86400.0, "refresh_idle_ttl": 15 * _DAY},
        status_of={"invalid_grant": 403},
        error_description={"invalid_grant": "Unknown or invalid refresh token."},
    ),
    # https://www.keycloak.org/docs/latest/server_admin/#_timeouts: refresh_expires_in is the
    # SSO session idle timeout (30 min); invalid_grant "Session not active" when it is over.
    "keycloak": Personality(
        "keycloak",
        config={
            "issuer_path": "/realms/demo",
            "access_ttl": 300.0,
            "refresh_idle_ttl": 1800.0,
            "refresh_ttl": 36000.0,
            "rotation": True,
            "reuse_detection": False,
            "reuse_grace": 36000.0,  # "Revoke Refresh Token" is off by default
        },
        error_description={"invalid_grant": "Session not active"},
        add_fields=("refresh_expires_in",),
    ),
    # https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_refresh_token_flow.htm:
    # the answer has no expires_in, issued_at in milliseconds (a string), instance_url, id,
    # signature; no new refresh token unless rotation is on; the access token lives the org's
    # session timeout (2 hours by default) and says so only by a 401.
    "salesforce": Personality(
        "salesforce",
        config={
            "rotation": False,
            "reuse_detection": False,
            "access_ttl": 7200.0,
            "refresh_idle_ttl": None,
        },
        drop_fields=("expires_in", "refresh_in"),
        add_fields=("issued_at", "instance_url", "id", "signature"),
        opaque_prefix="00D!",
    ),
    # https://docs.slack.dev/authentication/using-token-rotation: expires_in 43200, the used
    # refresh token is revoked; https://api.slack.com/methods/oauth.v2.access: every answer
    # is HTTP 200 with "ok", errors {"ok": false, "error": "invalid_refresh_token"}.
    "slack": Personality(
        "slack",
        config={"access_ttl": 43200.0},
        paths={"/oauth/v2/authorize": "/oauth/authorize", "/api/oauth.v2.access": _TOKEN_PATH},
        discovery=False,
        error_status=200,
        error_codes={
            "invalid_grant": "invalid_refresh_token",
            "invalid_client": "bad_client_secret",
        },
        ok_field=True,
        opaque_prefix="xoxe.xoxp-1-",
    ),
    # https://developers.notion.com/reference/create-a-token and .../refresh-a-token: Basic
    # client authentication, workspace fields in the answer, a new refresh token at each
    # refresh; the previous access token stops working.
    "notion": Personality(
        "notion",
        config={"access_ttl": 3600.0, "revoke_access_on_refresh": True},
        paths={"/v1/oauth/authorize": "/oauth/authorize", "/v1/oauth/token": _TOKEN_PATH},
        discovery=False,
        add_fields=("workspace_id", "bot_id"),
        opaque_prefix="ntn_",
    ),
    # https://www.ory.sh/docs/hydra/guides/oauth2-token-refresh: single-use refresh tokens,
    # reuse revokes the chain (https://github.com/ory/hydra/discussions/3652), refreshing
    # revokes the previous access token; overlapping refreshes with one token answer
    # invalid_request "...multiple concurrent requests..." (https://github.com/ory/hydra/issues/3604).
    "hydra": Personality(
        "hydra",
        config={"access_ttl": 3600.0, "revoke_access_on_refresh": True},
        refresh_race=True,
    ),
}
NAMES: tuple[str, ...] = tuple(PERSONALITIES)


def configure(config: ServerConfig, name: str) -> ServerConfig:
    """``config`` answering as ``name``, with that provider's documented settings."""
    personality = PERSONALITIES.get(name)
    if personality is None:
        raise ValueError(f"no personality {name!r}: one of {', '.join(NAMES)}")
    return config.replace(personality=name, **{**_UNSAID, **personality.config})


class PersonalityMiddleware:
    """Applies ``state.config.personality`` to every request and answer."""

    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state
        name = state.config.personality
        self.personality = PERSONALITIES[name] if name else None
        self._opaque: dict[str, str] = {}  # opaque access token -> the JWT behind it
        self._refreshing: set[str] = set()
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        p = self.personality
        if p is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        issuer_path = self.state.config.issuer_path
        if not p.discovery and "/.well-known/" in path:
            await _send(send, 404, b'{"message":"Not Found"}', "application/json")
            return
        if p.issuer_template is not None and path.endswith("/.well-known/openid-configuration"):
            await self._tenant_discovery(scope, receive, send, path)
            return
        path = p.paths.get(path, path)
        scope = {**scope, "path": path, "raw_path": path.encode()}
        if p.opaque_prefix is not None:
            scope = self._with_jwt(scope)
        if path in (issuer_path + _TOKEN_PATH, issuer_path + _DEVICE_PATH):
            await self._token_endpoint(scope, receive, send, device=path.endswith(_DEVICE_PATH))
            return
        await self.app(scope, receive, send)

    # -- requests ------------------------------------------------------------------------

    def _with_jwt(self, scope: Scope) -> Scope:
        headers = []
        for name, value in scope["headers"]:
            sent = value
            if name == b"authorization":
                kind, _, token = value.decode("latin-1").partition(" ")
                jwt = self._opaque.get(token.strip())
                if jwt is not None:
                    sent = f"{kind} {jwt}".encode("latin-1")
            headers.append((name, sent))
        return {**scope, "headers": headers}

    async def _token_endpoint(
        self, scope: Scope, receive: Receive, send: Send, *, device: bool
    ) -> None:
        p = self.personality
        assert p is not None
        body = await _read_all(receive)
        form = dict(parse_qsl(body.decode("latin-1"), keep_blank_values=True))
        accept = dict(scope["headers"]).get(b"accept", b"").decode("latin-1")
        refresh_token = (
            form.get("refresh_token") if form.get("grant_type") == "refresh_token" else None
        )
        if refresh_token is not None and p.refresh_requires_scope and not form.get("scope"):
            self.state.count_token_request("refresh_token")
            self.state.count_token_error("invalid_request")
            await self._answer(
                send,
                400,
                {
                    "error": "invalid_request",
                    "error_description": "AADSTS900144: The request body must contain the "
                    "following parameter: 'scope'.",
                    "error_codes": [900144],
                },
                accept,
            )
            return
        if refresh_token is not None and p.refresh_race:
            with self._lock:
                racing = refresh_token in self._refreshing
                self._refreshing.add(refresh_token)
            if racing:
                self.state.count_token_request("refresh_token")
                self.state.count_token_error("invalid_request")
                await self._answer(
                    send,
                    400,
                    {
                        "error": "invalid_request",
                        "error_description": "Failed to refresh token because of multiple "
                        "concurrent requests using the same token which is not allowed.",
                    },
                    accept,
                )
                return
        try:
            status, headers, answer = await _captured(self.app, scope, body)
        finally:
            if refresh_token is not None and p.refresh_race:
                with self._lock:
                    self._refreshing.discard(refresh_token)
        if status is None:
            return  # the connection was dropped (an injected fault)
        try:
            document = json.loads(answer)
        except ValueError:
            await _send(send, status, answer, headers.get("content-type", "text/plain"))
            return
        if not isinstance(document, dict):
            await _send(send, status, answer, "application/json")
            return
        if device:
            document = self._device(document)
        elif "error" in document:
            status, document = self._error(status, document)
        elif "access_token" in document:
            document = self._tokens(document)
        await self._answer(send, status, document, accept)

    async def _tenant_discovery(
        self, scope: Scope, receive: Receive, send: Send, path: str
    ) -> None:
        p = self.personality
        assert p is not None
        assert p.issuer_template is not None
        tenant_path = path.removesuffix("/.well-known/openid-configuration")
        real = f"{p.issuer_template}/.well-known/openid-configuration"
        if tenant_path == p.issuer_template or tenant_path.count("/") != 2:
            await self.app(scope, receive, send)
            return
        # common, organizations, consumers: the document of the template issuer.
        inner = {**scope, "path": real, "raw_path": real.encode()}
        status, _, answer = await _captured(self.app, inner, b"")
        document = json.loads(answer)
        document["issuer"] = f"{self.state.url}/{{tenantid}}/v2.0"
        await _send(send, status or 500, json.dumps(document).encode(), "application/json")

    # -- answers -------------------------------------------------------------------------

    def _tokens(self, document: dict[str, Any]) -> dict[str, Any]:
        p = self.personality
        assert p is not None
        if p.opaque_prefix is not None:
            opaque = p.opaque_prefix + secrets.token_urlsafe(24)
            with self._lock:
                self._opaque[opaque] = document["access_token"]
            document["access_token"] = opaque
        config = self.state.config
        computed: dict[str, Any] = {
            "ext_expires_in": document.get("expires_in"),
            "refresh_token_expires_in": int(config.refresh_ttl),
            "refresh_expires_in": int(config.refresh_idle_ttl or config.refresh_ttl),
            "created_at": int(self.state.now()),
            "issued_at": str(int(self.state.now() * 1000)),
            "instance_url": self.state.url,
            "id": f"{self.state.url}/id/00D000000000001/005000000000001",
            "signature": secrets.token_urlsafe(32),
            "workspace_id": "workspace-1",
            "bot_id": "bot-1",
        }
        for name in p.add_fields:
            if name.startswith("refresh") and "refresh_token" not in document:
                continue
            document[name] = computed[name]
        for name in p.drop_fields:
            document.pop(name, None)
        if p.ok_field:
            document = {"ok": True, **document}
        return document

    def _error(self, status: int, document: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        p = self.personality
        assert p is not None
        code = document.get("error")
        if isinstance(code, str):
            status = p.status_of.get(code, p.error_status or status)
            if code in p.error_description:
                document["error_description"] = p.error_description[code]
            document["error"] = p.error_codes.get(code, code)
        if p.ok_field:
            document = {"ok": False, "error": document["error"]}
        return status, document

    def _device(self, document: dict[str, Any]) -> dict[str, Any]:
        p = self.personality
        assert p is not None
        if "error" in document:
            return self._error(200, document)[1]
        if p.verification_url and "verification_uri" in document:
            document["verification_url"] = document.pop("verification_uri")
            document.pop("verification_uri_complete", None)
        return document

    async def _answer(self, send: Send, status: int, document: dict[str, Any], accept: str) -> None:
        p = self.personality
        assert p is not None
        if p.form_unless_json and "application/json" not in accept:
            flat = {k: v if isinstance(v, str) else json.dumps(v) for k, v in document.items()}
            body = urlencode(flat).encode("ascii")
            await _send(send, status, body, "application/x-www-form-urlencoded")
            return
        await _send(send, status, json.dumps(document).encode(), "application/json")


async def _read_all(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _captured(
    app: ASGIApp, scope: Scope, body: bytes
) -> tuple[int | None, dict[str, str], bytes]:
    """Run ``app`` on a request with ``body``; its status (None if it sent no answer),
    headers and body."""
    sent = False
    status: int | None = None
    headers: dict[str, str] = {}
    chunks: list[bytes] = []

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            for name, value in message.get("headers", []):
                headers[name.decode("latin-1").lower()] = value.decode("latin-1")
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, headers, b"".join(chunks)


async def _send(send: Send, status: int, body: bytes, content_type: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode("latin-1")),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
