"""``freshtoken logout``: revoke a profile's tokens at the server (RFC 7009), then remove it;
the profile is kept when the revocation fails, so that the user can retry.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx

from .. import providers
from .._core.policy import check_transport, oauth_error, origin_of
from .._core.tokens import TokenSet
from .._oauth.discovery import discover
from ..errors import LoginFailed
from ..profiles import refresher_of
from ..refreshers import (
    ClientAuth,
)
from ..stores.file import FileStore, Profile
from ._profile_common import HTTP_TIMEOUT, LOCK_TIMEOUT, Failure, profile_store

__all__ = ["logout"]


def logout(args: argparse.Namespace) -> int:
    store = profile_store(args)
    with store.lock(LOCK_TIMEOUT):  # no `token` may rotate what we are about to revoke
        profile = store.load_profile()
        if profile is None:
            raise Failure(f"no profile {store.profile!r} in {store.path}")
        outcome = "no tokens were stored"
        if profile.tokens is not None and args.no_revoke:
            outcome = "tokens deleted here only (--no-revoke)"
        elif profile.tokens is not None:
            outcome = _revoke(store, profile, profile.tokens)
        store.remove_profile()
    print(f"logged out: profile {store.profile!r} removed from {store.path}; {outcome}")
    return 0


def _revoke(store: FileStore, profile: Profile, tokens: TokenSet) -> str:
    """RFC 7009 revocation of the refresh token (or of the access token when there is none)."""
    meta = profile.meta
    token_url = meta.get("token_url")
    client_id = meta.get("client_id")
    if not isinstance(token_url, str) or not isinstance(client_id, str):
        return "the profile names no server: tokens deleted here only"
    insecure = meta.get("allow_insecure_http") is True
    client = _profile_client(store, profile)
    try:
        endpoint = _revocation_endpoint(meta, token_url, insecure)
    except LoginFailed as error:
        raise Failure(
            f"cannot find the revocation endpoint: {error.description or error.error};"
            " the profile was kept: retry, or pass --no-revoke"
        ) from None
    if endpoint is None:
        return "the server advertises no revocation endpoint: tokens deleted here only"
    check_transport(origin_of(endpoint), allow_insecure_http=insecure, what="a token")
    if tokens.refresh_token is not None:
        form = {"token": tokens.refresh_token, "token_type_hint": "refresh_token"}
        what = "refresh token"
    else:
        form = {"token": tokens.access_token, "token_type_hint": "access_token"}
        what = "access token"
    with httpx.Client(timeout=HTTP_TIMEOUT, follow_redirects=False) as http:
        try:
            response = http.send(client.request(endpoint, form, {}))
        except httpx.TransportError as error:
            raise Failure(
                f"cannot reach the revocation endpoint {endpoint} ({type(error).__name__}); "
                "the profile was kept: retry, or pass --no-revoke"
            ) from None
    if response.status_code != 200:
        code, description = oauth_error(response.content, (form["token"], *client.secrets()))
        said = f" {code}" if code else ""
        if description:
            said += f" ({description})"
        raise Failure(
            f"the server refused the revocation: HTTP {response.status_code}{said}; "
            "the profile was kept: retry, or pass --no-revoke"
        )
    return f"{what} revoked at {endpoint}"


def _revocation_endpoint(meta: Mapping[str, Any], token_url: str, insecure: bool) -> str | None:
    """The revocation endpoint from the issuer's metadata, if it advertises one.

    Profiles from ``--token-url`` logins name no issuer: the issuers the token URL can belong
    to (its origin and parent paths) are discovered in turn, and metadata counts only if its
    ``token_endpoint`` is this profile's, so a token never goes to another issuer's endpoint.
    """
    issuer = meta.get("issuer")
    name, settings = meta.get("provider"), meta.get("provider_settings")
    if isinstance(name, str) and isinstance(settings, dict):
        try:
            preset = providers.get(name, **settings)
        except ValueError:
            return None  # a preset this version does not know: no revocation, as without one
        metadata = preset.metadata(allow_insecure_http=insecure)
        return metadata.revocation_endpoint if metadata.token_endpoint == token_url else None
    if isinstance(issuer, str):
        metadata = discover(issuer, allow_insecure_http=insecure)
        return metadata.revocation_endpoint if metadata.token_endpoint == token_url else None
    for candidate in _issuer_candidates(token_url):
        try:
            metadata = discover(candidate, allow_insecure_http=insecure)
        except LoginFailed as error:
            if error.error == "network_error":
                raise
            continue
        if metadata.token_endpoint == token_url:
            return metadata.revocation_endpoint
    return None


def _issuer_candidates(token_url: str) -> list[str]:
    """Issuers that may own ``token_url``: its parent paths, longest first, then its origin."""
    parts = urlsplit(token_url)
    origin = f"{parts.scheme}://{parts.netloc}"
    segments = [segment for segment in parts.path.split("/") if segment][:-1]
    candidates = [origin + "/" + "/".join(segments[:end]) for end in range(len(segments), 0, -1)]
    return [*candidates[:3], origin]


def _profile_client(store: FileStore, profile: Profile) -> ClientAuth:
    return refresher_of(store, profile).client
