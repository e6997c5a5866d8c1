"""Clients: dynamic registration (RFC 7591, 7592 read) and client authentication
(secrets, private_key_jwt)."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

import jwt

from ._base import StateBase
from ._config import Client
from ._keys import client_key, looks_like_jwt
from ._records import (
    _JWT_BEARER,
    _MAX_ASSERTION_LIFETIME,
    _MAX_PENDING,
    OAuthError,
)
from ._registration import RegistrationRefused, register


class ClientsMixin(StateBase):
    """Client registration (RFC 7591) and client authentication."""

    def register_client(self, body: Mapping[str, Any], client_uri_base: str) -> dict[str, Any]:
        """Dynamic client registration (RFC 7591); raises RegistrationRefused."""
        scopes = frozenset(s for u in self._config.users for s in u.scopes) | frozenset(
            {"openid", "profile", "email", "offline_access"}
        )
        registered = register(body, scopes=scopes, now=self.now(), client_uri_base=client_uri_base)
        with self._lock:
            if len(self._registered) >= _MAX_PENDING:
                raise RegistrationRefused("invalid_client_metadata", "too many registrations")
            client = registered.client
            self._registered[client.client_id] = (client, registered.registration_access_token)
            self._stats["registrations"] += 1
        return registered.answer

    def registered_client(self, client_id: str, access_token: str) -> Client | None:
        """RFC 7592 read: the client whose registration access token this is."""
        with self._lock:
            registered = self._registered.get(client_id)
        if registered is None or not secrets.compare_digest(
            access_token.encode(), registered[1].encode()
        ):
            return None
        return registered[0]

    def authenticate_client(self, client_id: str, secret: str | None) -> Client:
        """client_secret_basic, client_secret_post, or a public client sending no secret."""
        client = self.client(client_id)
        if client is None:
            raise OAuthError("invalid_client", "unknown client", 401)
        if client.public_key is not None:
            raise OAuthError(
                "invalid_client", "this client authenticates with private_key_jwt", 401
            )
        if client.secret is None:
            if secret is not None:
                raise OAuthError("invalid_client", "a public client has no secret", 401)
            return client
        if secret is None:
            raise OAuthError("invalid_client", "client authentication is required", 401)
        if not secrets.compare_digest(secret.encode(), client.secret.encode()):
            raise OAuthError("invalid_client", "wrong client secret", 401)
        return client

    def authenticate_assertion(
        self, client_id: str | None, assertion_type: str, assertion: str, endpoint: str
    ) -> Client:
        """private_key_jwt (RFC 7523 section 2.2): a JWT signed with the client's key, whose
        ``iss`` and ``sub`` are the client, ``aud`` this server (issuer, token endpoint or the
        endpoint called), with an ``exp`` and a ``jti`` never seen before."""
        if assertion_type != _JWT_BEARER:
            raise OAuthError("invalid_client", f"client_assertion_type must be {_JWT_BEARER}", 401)
        if not looks_like_jwt(assertion):
            raise OAuthError("invalid_client", "the client assertion is not a JWT", 401)
        try:
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise OAuthError("invalid_client", "the client assertion is not a JWT", 401) from exc
        subject = unverified.get("sub")
        client = self.client(subject) if isinstance(subject, str) else None
        if client is None or client.public_key is None:
            raise OAuthError("invalid_client", "no client with a public key is the subject", 401)
        if client_id is not None and client_id != client.client_id:
            raise OAuthError("invalid_client", "client_id is not the assertion's subject", 401)
        key, algorithms = client_key(client.public_key)
        audiences = [self.issuer, self.token_endpoint, endpoint]
        try:
            claims = jwt.decode(
                assertion,
                key,
                algorithms=list(algorithms),
                audience=audiences,
                issuer=client.client_id,
                options={
                    "require": ["iss", "sub", "aud", "exp", "jti"],
                    # Time is the server's clock, checked below.
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.PyJWTError as exc:
            raise OAuthError("invalid_client", f"client assertion refused: {exc}", 401) from exc
        exp, jti = claims["exp"], claims["jti"]
        if isinstance(exp, bool) or not isinstance(exp, (int, float)) or not isinstance(jti, str):
            raise OAuthError("invalid_client", "exp must be a number and jti a string", 401)
        with self._lock:
            now = self.now()
            if exp <= now:
                raise OAuthError("invalid_client", "the client assertion expired", 401)
            if exp - now > _MAX_ASSERTION_LIFETIME:
                raise OAuthError("invalid_client", "the client assertion lives too long", 401)
            if len(self._assertion_ids) >= _MAX_PENDING:
                self._assertion_ids = {j: e for j, e in self._assertion_ids.items() if e > now}
            if jti in self._assertion_ids or len(self._assertion_ids) >= _MAX_PENDING:
                raise OAuthError("invalid_client", "the client assertion was replayed", 401)
            self._assertion_ids[jti] = float(exp)
        return client
