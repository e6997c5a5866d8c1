"""Dynamic client registration (RFC 7591) and resource indicators (RFC 8707) for the reference
server: validation only, no state (``_state`` keeps the clients and grants).

A registration is refused with RFC 7591 section 3.2.2's errors: ``invalid_redirect_uri`` for
a redirect URI that is not https, a loopback ``http`` URI (RFC 8252 section 7.3) or a
private-use scheme (section 7.1), or that has a fragment; ``invalid_client_metadata`` for a
``token_endpoint_auth_method`` other than ``none``, ``client_secret_basic`` and
``client_secret_post``, grant or response types this server does not give a registered client,
or fields of the wrong type. A registered client may use the authorization code and refresh
token grants, with PKCE when it is public.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from ._config import Client, Grant

__all__ = [
    "REGISTRATION_METHODS",
    "Registered",
    "RegistrationRefused",
    "check_resources",
    "register",
]

REGISTRATION_METHODS = ("none", "client_secret_basic", "client_secret_post")
_GRANTS: frozenset[Grant] = frozenset({"authorization_code", "refresh_token"})
_PRIVATE_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*\.[a-z0-9+.-]+")  # reverse DNS: com.example.app
_LOOPBACK = ("127.0.0.1", "::1", "localhost")
_MOST_URIS = 10
_LONGEST_TEXT = 500


class RegistrationRefused(Exception):
    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


@dataclasses.dataclass(frozen=True)
class Registered:
    """A new client and the RFC 7591 section 3.2.1 answer that describes it."""

    client: Client
    answer: dict[str, Any]
    registration_access_token: str


def register(
    body: Mapping[str, Any], *, scopes: frozenset[str], now: float, client_uri_base: str
) -> Registered:
    """Validate the registration request ``body``; raises RegistrationRefused."""
    uris = body.get("redirect_uris")
    if not isinstance(uris, list) or not uris or len(uris) > _MOST_URIS:
        raise RegistrationRefused(
            "invalid_redirect_uri", f"redirect_uris is a list of 1 to {_MOST_URIS} URIs"
        )
    for uri in uris:
        problem = _redirect_problem(uri)
        if problem is not None:
            raise RegistrationRefused("invalid_redirect_uri", problem)
    method = body.get("token_endpoint_auth_method", "client_secret_basic")
    if method not in REGISTRATION_METHODS:
        raise RegistrationRefused(
            "invalid_client_metadata",
            f"token_endpoint_auth_method is one of {', '.join(REGISTRATION_METHODS)}",
        )
    grants = body.get("grant_types", ["authorization_code"])
    if not isinstance(grants, list) or not grants or not set(grants) <= _GRANTS:
        raise RegistrationRefused(
            "invalid_client_metadata", "grant_types may be authorization_code and refresh_token"
        )
    if body.get("response_types", ["code"]) != ["code"]:
        raise RegistrationRefused("invalid_client_metadata", "response_types must be ['code']")
    for name in ("client_name", "scope", "client_uri", "software_id", "software_version"):
        value = body.get(name)
        if value is not None and (not isinstance(value, str) or len(value) > _LONGEST_TEXT):
            raise RegistrationRefused("invalid_client_metadata", f"{name} is a short string")
    asked = body.get("scope")
    granted = scopes if not asked else frozenset(asked.split()) & scopes
    client_id = "reg-" + secrets.token_urlsafe(16)
    secret = None if method == "none" else secrets.token_urlsafe(32)
    client = Client(
        client_id,
        secret,
        frozenset(grants) | {"authorization_code"},
        scopes=granted,
        redirect_uris=tuple(uris),
    )
    access_token = secrets.token_urlsafe(32)
    answer: dict[str, Any] = {
        "client_id": client_id,
        "client_id_issued_at": int(now),
        "redirect_uris": list(uris),
        "token_endpoint_auth_method": method,
        "grant_types": sorted(client.grants),
        "response_types": ["code"],
        "registration_access_token": access_token,
        "registration_client_uri": f"{client_uri_base}/{client_id}",
    }
    if secret is not None:
        answer["client_secret"] = secret
        answer["client_secret_expires_at"] = 0
    for name in ("client_name", "client_uri", "software_id", "software_version"):
        if body.get(name) is not None:
            answer[name] = body[name]
    if granted:
        answer["scope"] = " ".join(sorted(granted))
    return Registered(client, answer, access_token)


def _redirect_problem(uri: object) -> str | None:
    if not isinstance(uri, str) or len(uri) > _LONGEST_TEXT or not uri.isprintable():
        return "a redirect URI is a string of at most 500 characters"
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        return f"{uri!r} is not a URI"
    if parts.fragment or "#" in uri:
        return f"{uri!r} has a fragment (RFC 6749 section 3.1.2)"
    if parts.scheme == "https" and parts.hostname:
        return None
    if parts.scheme == "http":
        if parts.hostname in _LOOPBACK:
            return None
        return f"{uri!r}: plain http is for loopback redirects only (RFC 8252 section 7.3)"
    if _PRIVATE_SCHEME.fullmatch(parts.scheme):
        return None  # RFC 8252 section 7.1
    return f"{uri!r}: use https, a loopback http URI or a private-use scheme"


def check_resources(resources: list[str]) -> str | None:
    """What is wrong with ``resource`` parameters (RFC 8707 section 2), or None."""
    for resource in resources:
        try:
            parts = urlsplit(resource)
        except ValueError:
            return "a resource is not a URI"
        if not parts.scheme or not parts.netloc:
            return "a resource must be an absolute URI"
        if parts.fragment or "#" in resource:
            return "a resource must not have a fragment"
    return None
