"""The authorization code flow (RFC 6749 section 4.1, RFC 7636, RFC 9207): requests, the
login form's answer, code redemption."""

from __future__ import annotations

import secrets
from collections.abc import Mapping

from ._base import StateBase
from ._config import Client
from ._pkce import s256 as pkce_challenge  # the server's own, not the client's
from ._records import (
    _MAX_PARAMETER,
    _MAX_PENDING,
    _PENDING_TTL,
    _PKCE_CHALLENGE,
    _PKCE_VERIFIER,
    AuthorizationRefused,
    Issued,
    OAuthError,
    PendingAuthorization,
    _add_query,
    _Code,
    _refresh_binding,
    parse_scope,
    redirect_uri_allowed,
)
from ._registration import check_resources


class CodesMixin(StateBase):
    """Authorization requests, the login form's answer and code redemption."""

    def authorization_request(self, params: Mapping[str, str]) -> PendingAuthorization:
        """Validate an authorization request; the login form then carries the result's id."""
        client_id = params.get("client_id")
        client = self.client(client_id) if client_id else None
        if client is None:
            raise AuthorizationRefused("invalid_request", "unknown or missing client_id")
        redirect_uri = params.get("redirect_uri")
        if redirect_uri is None:
            raise AuthorizationRefused("invalid_request", "redirect_uri is required")
        if not redirect_uri_allowed(client, redirect_uri):
            raise AuthorizationRefused(
                "invalid_request", "redirect_uri is not registered for this client"
            )
        state = params.get("state")
        if state is not None and len(state) > _MAX_PARAMETER:
            state = None  # not echoed: too long to carry around

        def refused(error: str, description: str) -> AuthorizationRefused:
            return AuthorizationRefused(error, description, redirect_uri=redirect_uri, state=state)

        if state is None and "state" in params:
            raise refused("invalid_request", f"state is limited to {_MAX_PARAMETER} characters")
        if params.get("response_type") != "code":
            raise refused("unsupported_response_type", "only response_type=code is supported")
        if "authorization_code" not in client.grants:
            raise refused("unauthorized_client", "this client may not use authorization codes")
        challenge = params.get("code_challenge")
        method = params.get("code_challenge_method")
        if challenge is None:
            if client.is_public:
                raise refused("invalid_request", "public clients must send a PKCE code_challenge")
            if method is not None:
                raise refused("invalid_request", "code_challenge_method without code_challenge")
        elif method != "S256":
            raise refused("invalid_request", "code_challenge_method must be S256")
        elif not _PKCE_CHALLENGE.fullmatch(challenge):
            raise refused("invalid_request", "code_challenge is not a base64url SHA-256")
        nonce = params.get("nonce")
        if nonce is not None and len(nonce) > _MAX_PARAMETER:
            raise refused("invalid_request", f"nonce is limited to {_MAX_PARAMETER} characters")
        if params.get("prompt") == "none":
            # OpenID Connect Core 3.1.2.6: nobody is signed in here without the form.
            raise refused("login_required", "no user is signed in")
        try:
            scope = parse_scope(params.get("scope"))
        except OAuthError as error:
            raise refused(error.error, error.description) from None
        resource = (params["resource"],) if params.get("resource") else ()
        if (problem := check_resources(list(resource))) is not None:
            raise refused("invalid_target", problem)
        with self._lock:
            now = self.now()
            self._prune_pending(now)
            if len(self._pending) >= _MAX_PENDING:
                raise refused("temporarily_unavailable", "too many sign-ins in progress")
            pending = PendingAuthorization(
                secrets.token_urlsafe(24),
                client.client_id,
                redirect_uri,
                scope,
                state,
                nonce,
                challenge,
                now,
                resource,
            )
            self._pending[pending.id] = pending
            return pending

    def pending_authorization(self, request_id: str) -> PendingAuthorization:
        with self._lock:
            pending = self._pending.get(request_id)
            if pending is None or self.now() >= pending.created_at + _PENDING_TTL:
                raise AuthorizationRefused(
                    "invalid_request", "this sign-in page expired: start again from the app"
                )
            return pending

    def complete_authorization(
        self, request_id: str, username: str | None, password: str | None, *, approve: bool
    ) -> str:
        """The login form's answer: the redirect URI with a code, or with the error."""
        pending = self.pending_authorization(request_id)
        user = None
        if approve:
            user = self._check_password(username, password)
        with self._lock:
            if self._pending.pop(request_id, None) is None:
                raise AuthorizationRefused(
                    "invalid_request", "this sign-in was already answered: start again"
                )
            if user is None:
                self._stats["consents_denied"] += 1
                return self._redirect(pending, error="access_denied", error_description="denied")
            try:
                scope = self._narrow_login(user, pending.scope)
            except OAuthError as error:
                return self._redirect(
                    pending, error=error.error, error_description=error.description
                )
            now = self.now()
            if len(self._codes) >= _MAX_PENDING:
                self._codes = {c: r for c, r in self._codes.items() if r.expires_at > now}
            if len(self._codes) >= _MAX_PENDING:
                return self._redirect(pending, error="temporarily_unavailable")
            code = secrets.token_urlsafe(32)
            self._codes[code] = _Code(
                pending.client_id,
                pending.redirect_uri,
                user.username,
                scope,
                pending.code_challenge,
                pending.nonce,
                now,
                now + self._config.code_ttl,
                resource=pending.resource,
            )
            self._stats["authorization_codes"] += 1
            return self._redirect(pending, code=code)

    def authorization_code_grant(
        self,
        client: Client,
        code: str,
        redirect_uri: str | None,
        code_verifier: str | None,
        *,
        jkt: str | None = None,
        resource: list[str] | None = None,
    ) -> Issued:
        self._require_grant(client, "authorization_code")
        with self._lock:
            record = self._codes.get(code)
            if record is None:
                raise self._invalid_grant("unknown authorization code")
            if record.used:
                self._stats["code_replays"] += 1
                family = self._families.get(record.family_id or "")
                if family is not None:
                    self._revoke_family(family)
                raise self._invalid_grant(
                    "the authorization code was already used; its tokens are revoked"
                )
            record.used = True  # whatever follows: a code gets one attempt
            now = self.now()
            if now >= record.expires_at:
                raise self._invalid_grant("the authorization code expired")
            if record.client_id != client.client_id:
                raise self._invalid_grant("the code was issued to another client")
            if redirect_uri != record.redirect_uri:
                raise self._invalid_grant("redirect_uri differs from the authorization request")
            if record.code_challenge is None:
                if code_verifier is not None:
                    raise self._invalid_grant("code_verifier sent, but no code_challenge was")
            elif code_verifier is None or not _PKCE_VERIFIER.fullmatch(code_verifier):
                raise self._invalid_grant("a valid code_verifier is required (PKCE)")
            elif not secrets.compare_digest(pkce_challenge(code_verifier), record.code_challenge):
                raise self._invalid_grant("code_verifier does not match the code_challenge")
            family = self._new_family(record.username, client.client_id, record.scope, now)
            family.resource = self._granted_resource(record.resource, resource)
            family.auth_time = record.auth_time
            family.jkt = _refresh_binding(client, jkt)
            record.family_id = family.id
            self._stats["logins"] += 1
            return self._issue(
                family, record.scope, now, with_refresh=True, nonce=record.nonce, jkt=jkt
            )

    def _redirect(self, pending: PendingAuthorization, **params: str | None) -> str:
        params["state"] = pending.state
        if self._config.authorization_response_iss:
            params["iss"] = self.issuer
        return _add_query(pending.redirect_uri, params)

    def _prune_pending(self, now: float) -> None:
        if len(self._pending) >= _MAX_PENDING:
            self._pending = {
                i: p for i, p in self._pending.items() if now < p.created_at + _PENDING_TTL
            }
