"""Who the client is at an authorization server it has never seen: dynamic client registration
(RFC 7591), a client ID metadata document (a URL as ``client_id``, MCP 2025-11-25), or a
client registered beforehand. Sans-I/O: [`registration_flow()`][registration_flow] yields the one
request and reads its answer.

A [`ClientRegistration`][] is what a login and every refresh of its grant need: the client id,
its secret if one was issued, how it authenticates, and the issuer it belongs to. It is stored
beside the tokens (`freshtoken._resource_logins`), so that every process shares one
registration per authorization server. Its repr shows no secret.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from .._core.policy import check_transport, origin_of, read_json
from ..errors import InsecureTransportError, LoginFailed
from .discovery import ServerMetadata
from .http import Flow

__all__ = [
    "LARGEST_REGISTRATION",
    "ClientRegistration",
    "registration_endpoint",
    "registration_flow",
    "registration_request",
    "supports_metadata_documents",
]

LARGEST_REGISTRATION = 64 * 1024
_METHODS = ("none", "client_secret_basic", "client_secret_post")
_KNOWN_ERRORS = {
    "invalid_redirect_uri": "the server refused the redirect URI",
    "invalid_client_metadata": "the server refused the client's metadata",
    "invalid_software_statement": "the server refused the software statement",
    "unapproved_software_statement": "the server does not approve this software",
}


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class ClientRegistration:
    """A client at one authorization server (``issuer``)."""

    issuer: str
    client_id: str
    client_secret: str | None = None
    auth_method: str = "none"
    redirect_uris: tuple[str, ...] = ()
    registration_access_token: str | None = None
    registration_client_uri: str | None = None
    client_secret_expires_at: float | None = None  # None or 0: never (RFC 7591 3.2.1)
    kind: str = "registered"  # "registered" (RFC 7591), "document" (a URL), "given"

    def expired(self, now: float) -> bool:
        """Whether its secret has expired (the client must register again)."""
        expiry = self.client_secret_expires_at
        return bool(expiry) and expiry is not None and now >= expiry

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, secrets included: for stores only."""
        data = dataclasses.asdict(self)
        data["redirect_uris"] = list(self.redirect_uris)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClientRegistration:
        """Inverse of [`to_dict()`][to_dict]; ValueError on anything unexpected."""
        names = {field.name for field in dataclasses.fields(cls)}
        if not isinstance(data, Mapping) or not set(data) <= names:
            raise ValueError("not a stored client registration")
        for name in ("issuer", "client_id"):
            if not isinstance(data.get(name), str) or not data[name]:
                raise ValueError(f"a stored client registration has no {name}")
        fields = dict(data)
        uris = fields.get("redirect_uris", [])
        if not isinstance(uris, list) or not all(isinstance(u, str) for u in uris):
            raise ValueError("a stored client registration's redirect_uris are not strings")
        fields["redirect_uris"] = tuple(uris)
        for name in ("client_secret", "registration_access_token", "registration_client_uri"):
            if fields.get(name) is not None and not isinstance(fields[name], str):
                raise ValueError(f"a stored client registration's {name} is not a string")
        if fields.get("auth_method", "none") not in _METHODS:
            raise ValueError("a stored client registration has an unknown auth_method")
        expiry = fields.get("client_secret_expires_at")
        if expiry is not None and (isinstance(expiry, bool) or not isinstance(expiry, int | float)):
            raise ValueError("a stored client registration's expiry is not a number")
        return cls(**fields)

    def __repr__(self) -> str:
        return (
            f"ClientRegistration(issuer={self.issuer!r}, client_id={self.client_id!r}, "
            f"auth_method={self.auth_method!r}, kind={self.kind!r}, "
            f"has_client_secret={self.client_secret is not None})"
        )


def registration_endpoint(metadata: ServerMetadata, *, allow_insecure_http: bool) -> str | None:
    """The server's ``registration_endpoint`` (RFC 8414 section 2), checked, or None."""
    url = metadata.raw.get("registration_endpoint")
    if url is None:
        return None
    if not isinstance(url, str):
        raise LoginFailed("discovery_failed", "registration_endpoint is not a URL string")
    try:
        check_transport(
            origin_of(url), allow_insecure_http=allow_insecure_http, what="a client registration"
        )
    except ValueError:
        raise LoginFailed(
            "discovery_failed", "registration_endpoint is not an http(s) URL"
        ) from None
    except InsecureTransportError as error:
        raise LoginFailed("discovery_failed", str(error)) from None
    return url


def supports_metadata_documents(metadata: ServerMetadata) -> bool:
    """Whether the server takes a client ID metadata document's URL as ``client_id``."""
    return metadata.raw.get("client_id_metadata_document_supported") is True


def registration_request(
    endpoint: str,
    *,
    client_name: str,
    redirect_uris: Sequence[str],
    scope: str | None = None,
    auth_method: str = "none",
    extra: Mapping[str, Any] | None = None,
) -> httpx.Request:
    """The RFC 7591 section 3.1 request: a native public client (PKCE, loopback redirect)
    with the authorization code and refresh token grants."""
    if auth_method not in _METHODS:
        raise ValueError(f"auth_method is one of {', '.join(_METHODS)}")
    body: dict[str, Any] = {
        "client_name": client_name,
        "redirect_uris": list(redirect_uris),
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": auth_method,
        "application_type": "native",
        **dict(extra or {}),
    }
    if scope:
        body["scope"] = scope
    return httpx.Request(
        "POST",
        endpoint,
        content=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )


def registration_flow(
    metadata: ServerMetadata,
    *,
    client_name: str,
    redirect_uris: Sequence[str],
    scope: str | None = None,
    auth_method: str = "none",
    extra: Mapping[str, Any] | None = None,
    allow_insecure_http: bool = False,
) -> Flow[ClientRegistration]:
    """Register a client at ``metadata.issuer``; raises LoginFailed when the server has no
    registration endpoint or refuses (its RFC 7591 error code, or ``registration_failed``)."""
    endpoint = registration_endpoint(metadata, allow_insecure_http=allow_insecure_http)
    if endpoint is None:
        raise LoginFailed(
            "registration_unsupported",
            f"{metadata.issuer} offers no dynamic client registration: pass client_id= "
            "(a client registered there beforehand, or a client ID metadata document URL)",
        )
    response = yield registration_request(
        endpoint,
        client_name=client_name,
        redirect_uris=redirect_uris,
        scope=scope,
        auth_method=auth_method,
        extra=extra,
    )
    return registration_from(response, issuer=metadata.issuer, asked_method=auth_method)


def registration_from(
    response: httpx.Response, *, issuer: str, asked_method: str
) -> ClientRegistration:
    """Read the answer to a registration request (RFC 7591 sections 3.2.1 and 3.2.2)."""
    status = response.status_code
    if len(response.content) > LARGEST_REGISTRATION:
        raise LoginFailed(
            "registration_failed",
            f"the registration answer is over {LARGEST_REGISTRATION} bytes",
            status=status,
        )
    document = read_json(response.content)[0]
    if not 200 <= status < 300:
        error, description = "registration_failed", f"the registration endpoint answered {status}"
        if isinstance(document, dict) and isinstance(document.get("error"), str):
            error = _printable(document["error"], 60) or error
            said = document.get("error_description")
            description = (
                _printable(said, 200) if isinstance(said, str) else _KNOWN_ERRORS.get(error)
            ) or description
        raise LoginFailed(error, description, status=status)
    if not isinstance(document, dict):
        raise LoginFailed("registration_failed", "the registration answer is no JSON object")
    client_id = document.get("client_id")
    if not isinstance(client_id, str) or not client_id or not client_id.isprintable():
        raise LoginFailed("registration_failed", "the registration answer has no client_id")
    secret = document.get("client_secret")
    if secret is not None and not isinstance(secret, str):
        raise LoginFailed("registration_failed", "client_secret is not a string")
    method = document.get("token_endpoint_auth_method", asked_method)
    if method not in _METHODS:
        raise LoginFailed(
            "registration_failed",
            f"the server registered the client for {_printable(method, 40)!r}",
        )
    if method != "none" and not secret:
        raise LoginFailed(
            "registration_failed", f"the client must use {method} but was given no client_secret"
        )
    expires = document.get("client_secret_expires_at")
    if expires is not None and (isinstance(expires, bool) or not isinstance(expires, int | float)):
        raise LoginFailed("registration_failed", "client_secret_expires_at is not a number")
    uris = document.get("redirect_uris", [])
    access_token = document.get("registration_access_token")
    client_uri = document.get("registration_client_uri")
    return ClientRegistration(
        issuer=issuer,
        client_id=client_id,
        client_secret=secret or None,
        auth_method=method,
        redirect_uris=tuple(u for u in uris if isinstance(u, str))
        if isinstance(uris, list)
        else (),
        registration_access_token=access_token if isinstance(access_token, str) else None,
        registration_client_uri=client_uri if isinstance(client_uri, str) else None,
        client_secret_expires_at=float(expires) if expires else None,
    )


def _printable(value: object, limit: int) -> str:
    text = "".join(c for c in str(value) if c.isprintable())
    return text[:limit]
