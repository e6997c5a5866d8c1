"""The direct grants: password, client credentials, refresh (rotation, grace, reuse
detection), JWT bearer (RFC 7523) and token exchange (RFC 8693); revocation (RFC 7009)."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Mapping
from typing import Any

import jwt

from ._base import StateBase
from ._config import JWT_BEARER_GRANT, TOKEN_EXCHANGE_GRANT, Client
from ._keys import client_key, looks_like_jwt
from ._records import (
    _CLOCK_LEEWAY,
    _EXCHANGEABLE,
    _MAX_ACTORS,
    _MAX_ASSERTION_LIFETIME,
    _MAX_PENDING,
    _TOKEN_TYPE,
    Issued,
    OAuthError,
    _AccessToken,
    _depth,
    _Family,
    _is_time,
    _refresh_binding,
    _required_field,
    parse_scope,
)


class GrantsMixin(StateBase):
    """The token endpoint's direct grants and revocation."""

    def password_grant(
        self,
        client: Client,
        username: str,
        password: str,
        scope: frozenset[str] | None,
        *,
        jkt: str | None = None,
    ) -> Issued:
        self._require_grant(client, "password")
        user = self._config.user(username)
        if user is None or not secrets.compare_digest(password.encode(), user.password.encode()):
            raise self._invalid_grant("wrong username or password")
        granted = self._narrow_login(user, scope)
        with self._lock:
            now = self.now()
            family = self._new_family(user.username, client.client_id, granted, now)
            family.jkt = _refresh_binding(client, jkt)
            self._stats["logins"] += 1
            return self._issue(family, granted, now, with_refresh=True, jkt=jkt)

    def client_credentials_grant(
        self, client: Client, scope: frozenset[str] | None, *, jkt: str | None = None
    ) -> Issued:
        self._require_grant(client, "client_credentials")
        if client.is_public:
            raise OAuthError("unauthorized_client", "a public client has no credentials")
        granted = self._narrow(client.scopes, scope)
        with self._lock:
            now = self.now()
            family = self._new_family(None, client.client_id, granted, now)
            return self._issue(family, granted, now, with_refresh=False, jkt=jkt)

    def refresh_grant(
        self,
        client: Client,
        refresh_token: str,
        scope: frozenset[str] | None,
        *,
        jkt: str | None = None,
        resource: list[str] | None = None,
    ) -> Issued:
        self._require_grant(client, "refresh_token")
        with self._lock:
            config = self._config
            now = self.now()
            record = self._refresh.get(refresh_token)
            if record is None:
                raise self._invalid_grant("unknown refresh token")
            family = self._families[record.family_id]
            if family.client_id != client.client_id:
                raise self._invalid_grant("the refresh token was issued to another client")
            if family.resource and not resource:
                self._stats["refreshes_without_resource"] += 1
                if config.strict_resource:
                    # As strict servers do: the grant was for a resource, so must its refresh be.
                    self._stats["invalid_target"] += 1
                    raise OAuthError("invalid_target", "this grant needs its resource parameter")
            self._granted_resource(family.resource, resource)
            if family.revoked:
                raise self._invalid_grant("the session was revoked")
            if now >= family.created_at + config.refresh_ttl:
                raise self._invalid_grant("the session expired (refresh_ttl)")
            if family.jkt is not None and jkt != family.jkt:
                raise self._invalid_grant(
                    "the refresh token is bound to a DPoP key: sign with that key"
                )
            if record.retired_at is not None:
                if now - record.retired_at < config.reuse_grace and record.successor:
                    self._stats["refreshes"] += 1
                    self._stats["grace_replays"] += 1
                    successor = record.successor
                    return dataclasses.replace(successor, expires_in=successor.expires_at - now)
                if config.reuse_detection:
                    self._stats["reuse_detections"] += 1
                    self._revoke_family(family)
                    raise self._invalid_grant(
                        "refresh token reuse detected; the session was revoked"
                    )
                raise self._invalid_grant("the refresh token was already used")
            if (
                config.refresh_idle_ttl is not None
                and now >= family.last_active_at + config.refresh_idle_ttl
            ):
                raise self._invalid_grant("the session was idle too long (refresh_idle_ttl)")
            granted = self._narrow(family.scope, scope)
            family.last_active_at = now
            self._stats["refreshes"] += 1
            if config.revoke_access_on_refresh:
                for token in self._access.values():
                    if token.family_id == family.id:
                        token.revoked = True
            if not config.rotation:
                # RFC 6749 section 6: the client keeps its refresh token; none is returned.
                return self._issue(family, granted, now, jkt=jkt)
            issued = self._issue(family, granted, now, with_refresh=True, jkt=jkt)
            record.retired_at = now
            record.successor = issued
            self._stats["rotations"] += 1
            return issued

    def jwt_bearer_grant(
        self,
        client: Client | None,
        assertion: str,
        scope: frozenset[str] | None,
        endpoint: str,
        *,
        jkt: str | None = None,
    ) -> Issued:
        """Trade an assertion signed by a registered client's key for an access token.

        ``iss`` names the client (which must hold the grant and a public key; when the request
        authenticated a client, the same one); ``aud`` this server (issuer, token endpoint or
        the endpoint called); ``exp`` within ten minutes; ``jti`` never seen before from that
        issuer; ``nbf`` and ``iat`` not ahead of the server's clock. ``sub`` is the client
        itself when absent or equal to ``iss``, else a user of this server to act for. The
        scope is the form's, else the assertion's ``scope`` claim (as Google reads it), within
        what the client (or the user) may have. Every refusal is ``invalid_grant`` (RFC 7523
        section 3.1); no refresh token is issued.
        """
        claims, issuer = self._verified_assertion(assertion, endpoint)
        if client is not None and client.client_id != issuer.client_id:
            raise self._invalid_grant("the assertion was issued by another client")
        self._require_grant(issuer, JWT_BEARER_GRANT)
        subject = claims.get("sub", issuer.client_id)
        if scope is None:
            claimed = claims.get("scope")
            if claimed is not None and not isinstance(claimed, str):
                raise self._invalid_grant("the assertion's scope claim is not a string")
            scope = parse_scope(claimed)
        user = None
        if subject != issuer.client_id:
            user = self._config.user(subject) if isinstance(subject, str) else None
            if user is None:
                raise self._invalid_grant("the assertion's sub is no user of this server")
        granted = self._narrow(issuer.scopes if user is None else user.scopes, scope)
        with self._lock:
            now = self.now()
            username = None if user is None else user.username
            family = self._new_family(username, issuer.client_id, granted, now)
            return self._issue(family, granted, now, jkt=jkt)

    def _verified_assertion(self, assertion: str, endpoint: str) -> tuple[dict[str, Any], Client]:
        if not looks_like_jwt(assertion):
            raise self._invalid_grant("the assertion is not a JWT")
        try:
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise self._invalid_grant("the assertion is not a JWT") from None
        issuer_id = unverified.get("iss")
        issuer = self.client(issuer_id) if isinstance(issuer_id, str) else None
        if issuer is None or issuer.public_key is None:
            raise self._invalid_grant("the assertion's iss is no client with a public key")
        key, algorithms = client_key(issuer.public_key)
        try:
            claims: dict[str, Any] = jwt.decode(
                assertion,
                key,
                algorithms=list(algorithms),
                audience=[self.issuer, self.token_endpoint, endpoint],
                issuer=issuer.client_id,
                options={
                    "require": ["iss", "aud", "exp", "jti"],
                    # Time is the server's clock, checked below.
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.PyJWTError as exc:
            raise self._invalid_grant(f"assertion refused: {exc}") from None
        exp, jti = claims["exp"], claims["jti"]
        if not _is_time(exp) or not isinstance(jti, str):
            raise self._invalid_grant("exp must be a number and jti a string")
        for name in ("nbf", "iat"):
            if name in claims and not _is_time(claims[name]):
                raise self._invalid_grant(f"{name} must be a number")
        with self._lock:
            now = self.now()
            if exp <= now:
                raise self._invalid_grant("the assertion expired")
            if exp - now > _MAX_ASSERTION_LIFETIME:
                raise self._invalid_grant("the assertion lives too long (ten minutes at most)")
            if any(claims.get(name, now) > now + _CLOCK_LEEWAY for name in ("nbf", "iat")):
                raise self._invalid_grant("the assertion is not valid yet")
            seen = f"{issuer.client_id} {jti}"
            if len(self._assertion_ids) >= _MAX_PENDING:
                self._assertion_ids = {j: e for j, e in self._assertion_ids.items() if e > now}
            if seen in self._assertion_ids or len(self._assertion_ids) >= _MAX_PENDING:
                raise self._invalid_grant("the assertion was replayed")
            self._assertion_ids[seen] = float(exp)
        return claims, issuer

    def token_exchange_grant(
        self,
        client: Client,
        form: Mapping[str, str],
        audiences: list[str],
        resources: list[str],
        scope: frozenset[str] | None,
        *,
        jkt: str | None = None,
    ) -> Issued:
        """RFC 8693: trade a valid access token of this server (the subject) for a new one
        issued to ``client``, for the same subject, narrowed to ``scope``.

        With an actor token (also one of ours) the new token says who acts: ``act`` holds the
        actor's subject, with the subject token's own ``act`` nested inside (section 4.1), up
        to a chain of eight. ``audience`` may only name this server's audience and
        ``resource`` URLs of this server (else ``invalid_target``); the requested token type
        is an access token (``access_token`` or ``jwt``). An invalid or unsupported subject or
        actor token is ``invalid_request`` (section 2.2.2). Revoking the subject token's
        session revokes what was exchanged for it.
        """
        self._require_grant(client, TOKEN_EXCHANGE_GRANT)
        requested = form.get("requested_token_type", _TOKEN_TYPE + "access_token")
        if requested not in _EXCHANGEABLE:
            raise OAuthError("invalid_request", "this server issues access tokens only")
        for audience in audiences:
            if audience != self._config.audience:
                raise OAuthError("invalid_target", "an audience this server does not serve")
        for resource in resources:
            if not (resource == self.url or resource.startswith(self.url + "/")):
                raise OAuthError("invalid_target", "a resource this server does not serve")
        actor_token, actor_type = form.get("actor_token"), form.get("actor_token_type")
        if (actor_token is None) != (actor_type is None):
            raise OAuthError("invalid_request", "actor_token and actor_token_type go together")
        subject = self._exchangeable(
            _required_field(form, "subject_token"),
            _required_field(form, "subject_token_type"),
            "subject",
        )
        actor = None
        if actor_token is not None and actor_type is not None:
            actor = self._exchangeable(actor_token, actor_type, "actor")
        with self._lock:
            record, source = subject
            granted = self._narrow(record.scope, scope)
            act = source.act
            if actor is not None:
                act = {"sub": actor[0].subject}
                if source.act is not None:
                    act["act"] = source.act
                if _depth(act) > _MAX_ACTORS:
                    raise OAuthError("invalid_request", "the delegation chain is too long")
            now = self.now()
            family = self._new_family(source.username, client.client_id, granted, now)
            family.subject, family.act, family.parent = record.subject, act, source.id
            issued = self._issue(family, granted, now, jkt=jkt)
        return dataclasses.replace(issued, issued_token_type=requested)

    def _exchangeable(self, token: str, kind: str, role: str) -> tuple[_AccessToken, _Family]:
        """A subject or actor token: one of this server's live access tokens."""
        if kind not in _EXCHANGEABLE:
            raise OAuthError("invalid_request", f"unsupported {role}_token_type")
        jti = self.key.verified_jti(token)
        with self._lock:
            record = self._access.get(jti) if jti else None
            family = None if record is None else self._families[record.family_id]
            if record is None or family is None:
                raise OAuthError("invalid_request", f"the {role}_token is not one of ours")
            if record.revoked or not self._alive(family):
                raise OAuthError("invalid_request", f"the {role}_token was revoked")
            if record.seq < self._expired_before_seq or self.now() >= record.expires_at:
                raise OAuthError("invalid_request", f"the {role}_token expired")
            return record, family

    def revoke_token(self, client: Client, token: str) -> None:
        """RFC 7009: unknown tokens and other clients' tokens are silently ignored."""
        jti = self.key.verified_jti(token)
        with self._lock:
            self._stats["revocation_requests"] += 1
            record = self._refresh.get(token)
            if record is not None:
                family = self._families[record.family_id]
                if family.client_id == client.client_id:
                    self._revoke_family(family)
                return
            access = self._access.get(jti) if jti else None
            if access and self._families[access.family_id].client_id == client.client_id:
                access.revoked = True
