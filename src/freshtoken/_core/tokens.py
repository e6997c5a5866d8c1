"""TokenSet: one token endpoint answer, parsed, validated and timed.

Expiry follows the sent-time rule: ``expires_at`` is the moment the token request was *sent*
plus ``expires_in``, because the client's clock and the server's may disagree and the request
may have spent a while in flight. Without ``expires_in`` the JWT ``exp`` claim is read (not
verified: the client is not the token's audience) and corrected for the skew between the
server's ``Date`` header and the client's clock. Without either, expiry is unknown and only a
401 triggers a refresh.

Validation happens once, when a TokenSet is made (from an answer, from a store or by hand):
tokens are RFC 6749 VSCHAR (printable ASCII; no space in an access token, which goes in a
header), times are finite numbers, and nothing in an answer, however hostile, escapes as
anything but [`TokenResponseError`][], whose message quotes no token.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections.abc import Collection, Mapping
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

import jwt

from ..errors import TokenResponseError
from .challenges import is_token

if TYPE_CHECKING:
    from .dpop_key import DPoPKey

__all__ = ["StoredTokens", "TokenResponseError", "TokenSet"]

_ACCESS_TOKEN = re.compile(r"[\x21-\x7e]+")  # RFC 6749 A.12 VSCHAR, less the space
_REFRESH_TOKEN = re.compile(r"[\x20-\x7e]+")  # RFC 6749 A.17 VSCHAR
_LONGEST_LIFETIME = 1e10  # seconds, about 300 years: more is no lifetime a server means
_TIME_FIELDS = ("expires_at", "obtained_at", "refresh_at")
_KEEP_ALIVE_SHARE = 0.8  # of the refresh token's lifetime, spent before keep_alive refreshes


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class TokenSet:
    """An access token and what comes with it. Immutable; its repr shows no secret.

    ``obtained_at`` is when the request that produced it was sent (epoch seconds),
    ``expires_at`` when the access token stops working, and ``refresh_at`` a server's hint of
    when to refresh (``refresh_in``), all on the client's clock. ``id_token`` is the OpenID
    Connect ID token of the login, or of the last refresh that returned one. ``dpop_key`` is
    the DPoP key (RFC 9449) the tokens were requested with and are bound to: stored with them,
    shown nowhere; a ``DPoP`` token always has one.
    """

    access_token: str
    token_type: str = "Bearer"
    refresh_token: str | None = None
    expires_at: float | None = None
    obtained_at: float | None = None
    refresh_at: float | None = None
    scope: str | None = None
    id_token: str | None = None
    dpop_key: DPoPKey | None = None
    authorization: str = dataclasses.field(init=False, repr=False, compare=False)
    """The Authorization header value, made once: every request sends it. RFC 6750 says
    "Bearer" whatever case the server used."""

    def __post_init__(self) -> None:
        _check_token("access_token", self.access_token, _ACCESS_TOKEN)
        if self.refresh_token is not None:
            _check_token("refresh_token", self.refresh_token, _REFRESH_TOKEN)
        if not isinstance(self.token_type, str) or not is_token(self.token_type):
            raise TokenResponseError("token_type must be the name of an HTTP auth scheme")
        if self.scope is not None and not isinstance(self.scope, str):
            raise TokenResponseError("scope must be a space-separated string")
        for name in _TIME_FIELDS:
            value = getattr(self, name)
            if value is not None and _finite(value) is None:
                raise TokenResponseError(f"{name} must be a finite number")
        if self.dpop_key is not None:
            from .dpop_key import DPoPKey

            if not isinstance(self.dpop_key, DPoPKey):
                raise TokenResponseError("dpop_key must be a DPoPKey")
        elif self.token_type.lower() == "dpop":
            raise TokenResponseError("a DPoP token needs the DPoP key it is bound to")
        if self.id_token is not None:
            _check_token("id_token", self.id_token, _ACCESS_TOKEN)
        kind = "Bearer" if self.token_type.lower() == "bearer" else self.token_type
        object.__setattr__(self, "authorization", f"{kind} {self.access_token}")

    @property
    def lifetime(self) -> float | None:
        """Seconds between obtaining the token and its expiry, when both are known."""
        if self.expires_at is None or self.obtained_at is None:
            return None
        return max(0.0, self.expires_at - self.obtained_at)

    def expires_in(self, now: float) -> float | None:
        return None if self.expires_at is None else self.expires_at - now

    def is_expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def id_claims(self) -> dict[str, Any]:
        """The ID token's claims, decoded but *not verified* (``{}`` without an ID token).

        Good for showing who logged in; to trust them, use
        [`freshtoken.verify_id_token()`][freshtoken.verify_id_token]. Raises TokenResponseError if
        it is no JWT.
        """
        if self.id_token is None:
            return {}
        try:
            claims = jwt.decode(self.id_token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise TokenResponseError("the id_token is not a JWT") from None
        if not isinstance(claims, dict):
            raise TokenResponseError("the id_token's claims are not a JSON object")
        return claims

    @classmethod
    def from_response(
        cls,
        data: Mapping[str, Any],
        *,
        sent_at: float | None = None,
        date_header: str | None = None,
        previous: TokenSet | None = None,
        token_types: Collection[str] = ("Bearer",),
        dpop_key: DPoPKey | None = None,
        default_lifetime: float | None = None,
        keep_alive: bool = False,
    ) -> TokenSet:
        """Parse a token endpoint's JSON answer.

        ``sent_at`` is when the request was sent (defaults to now: the answer just arrived);
        ``previous`` supplies the refresh token when the answer carries none (RFC 6749
        section 6: the server may keep the old one valid). ``token_types`` are the types the
        caller can send, compared without case; any other is an error with the code
        ``unsupported_token_type``, so that a ``mac`` token never goes out as a Bearer one.
        ``dpop_key`` is the key the request was signed with: the tokens are bound to it.
        ``default_lifetime`` is the access token's lifetime when neither ``expires_in`` nor a
        JWT ``exp`` gives one (a Salesforce answer's ``issued_at`` is the server's clock in
        milliseconds and says nothing of the lifetime: it is not read). With ``keep_alive``
        the refresh falls due before the refresh token's own lifetime
        (``refresh_expires_in`` or ``refresh_token_expires_in``) is four-fifths spent.
        """
        if not isinstance(data, Mapping):
            raise TokenResponseError("token response is not a JSON object")
        access = data.get("access_token")
        if not isinstance(access, str) or not access:
            raise TokenResponseError("token response has no access_token string")
        token_type = _token_type(data.get("token_type"), token_types)
        refresh = data.get("refresh_token")
        if refresh is not None and (not isinstance(refresh, str) or not refresh):
            raise TokenResponseError("refresh_token must be a non-empty string")
        if refresh is None and previous is not None:
            refresh = previous.refresh_token
        id_token = data.get("id_token")
        if id_token is not None and (not isinstance(id_token, str) or not id_token):
            raise TokenResponseError("id_token must be a non-empty string")
        if id_token is None and previous is not None:
            id_token = previous.id_token  # a refresh without one keeps the login's
        scope = data.get("scope")
        if scope is not None and not isinstance(scope, str):
            raise TokenResponseError("scope must be a space-separated string")
        if scope is None and previous is not None:
            scope = previous.scope  # RFC 6749 section 5.1: omitted means unchanged
        expires_in = _seconds(data, "expires_in")
        refresh_in = _seconds(data, "refresh_in")
        if sent_at is None:
            sent_at = time.time()  # just received: the best estimate left, leeway covers the gap

        expires_at: float | None = None
        if expires_in is not None:
            expires_at = sent_at + expires_in
        else:
            exp = _finite(_jwt_claims(access).get("exp"))
            if exp is not None:
                expires_at = exp - _skew(date_header, sent_at)
        if expires_at is None and default_lifetime is not None:
            expires_at = sent_at + default_lifetime
        refresh_at = None if refresh_in is None else sent_at + refresh_in
        if keep_alive:
            refresh_life = _seconds(data, "refresh_expires_in") or _seconds(
                data, "refresh_token_expires_in"
            )
            if refresh_life:  # 0 is Keycloak's "no limit" (offline tokens)
                due = sent_at + _KEEP_ALIVE_SHARE * refresh_life
                refresh_at = due if refresh_at is None else min(refresh_at, due)
        return cls(
            access_token=access,
            token_type=token_type,
            refresh_token=refresh,
            expires_at=expires_at,
            obtained_at=sent_at,
            refresh_at=refresh_at,
            scope=scope,
            id_token=id_token,
            dpop_key=dpop_key,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, secrets included (the DPoP key as a private JWK): for stores,
        never for logs."""
        data = {name: getattr(self, name) for name in _STORED_FIELDS}
        if self.dpop_key is not None:
            data["dpop_key"] = self.dpop_key.private_jwk()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TokenSet:
        """Inverse of [`to_dict()`][to_dict]; raises TokenResponseError on anything unexpected."""
        if not isinstance(data, Mapping):
            raise TokenResponseError("stored token set is not an object")
        unknown = set(data) - set(_STORED_FIELDS)
        if unknown:
            raise TokenResponseError(f"unknown token set fields: {sorted(unknown)}")
        if "access_token" not in data:
            raise TokenResponseError("stored token set has no access_token")
        fields = dict(data)
        jwk = fields.get("dpop_key")
        if jwk is not None:
            from .dpop_key import DPoPKey

            try:
                fields["dpop_key"] = DPoPKey.from_jwk(jwk)
            except ValueError as error:  # its messages quote nothing of the key
                raise TokenResponseError(f"dpop_key: {error}") from None
        return cls(**fields)  # __post_init__ checks every field

    def __repr__(self) -> str:
        return (
            f"TokenSet(token_type={self.token_type!r}, expires_at={self.expires_at!r}, "
            f"scope={self.scope!r}, has_refresh_token={self.refresh_token is not None}"
            + ("" if self.dpop_key is None else f", dpop_jkt={self.dpop_key.thumbprint!r}")
            + ")"
        )

    __str__ = __repr__


_STORED_FIELDS = tuple(field.name for field in dataclasses.fields(TokenSet) if field.init)


def _check_token(name: str, value: object, allowed: re.Pattern[str]) -> None:
    if not isinstance(value, str) or not value:
        raise TokenResponseError(f"{name} must be a non-empty string")
    if allowed.fullmatch(value) is None:
        # Say what kind of character, never which: the token is a secret.
        bad = next(ch for ch in value if allowed.fullmatch(ch) is None)
        kind = "a space" if bad == " " else "a non-ASCII character"
        if bad < " " or bad == "\x7f":
            kind = "a control character"
        raise TokenResponseError(
            f"{name} holds {kind}: RFC 6749 allows printable ASCII only"
            + (", and no space in an access token" if bad == " " else "")
        )


def _token_type(value: object, accepted: Collection[str]) -> str:
    """The accepted spelling of the answer's ``token_type`` (missing means Bearer)."""
    if value is None:
        value = "Bearer"
    if not isinstance(value, str) or not value:
        raise TokenResponseError("token_type must be a non-empty string")
    spellings = {name.lower(): name for name in accepted}
    if value.lower() not in spellings:
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise TokenResponseError(
            f"the token endpoint issued a {shown!r} token, but freshtoken sends "
            f"{' or '.join(accepted)} tokens only: the server must issue those to this client",
            error="unsupported_token_type",
        )
    return spellings[value.lower()]


def _finite(value: object) -> float | None:
    """``value`` as a finite float, or None (bools, strings, inf, nan, huge integers)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer of hundreds of digits
        return None
    return number if math.isfinite(number) else None


def _seconds(data: Mapping[str, Any], name: str) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, str):  # some servers send "3600"
        try:
            value = float(value)
        except ValueError:
            raise TokenResponseError(f"{name} is not a number") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TokenResponseError(f"{name} is not a number")
    seconds = _finite(value)
    if seconds is None:
        raise TokenResponseError(f"{name} is not a finite number")
    if seconds < 0:
        raise TokenResponseError(f"{name} is negative")
    if seconds > _LONGEST_LIFETIME:
        raise TokenResponseError(f"{name} is implausibly large (more than 300 years)")
    return seconds


def _jwt_claims(token: str) -> dict[str, Any]:
    """The unverified claims of a JWT, or {} for an opaque token."""
    if token.count(".") != 2:
        return {}
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}
    return claims if isinstance(claims, dict) else {}


def _skew(date_header: str | None, local_now: float | None) -> float:
    """Server clock minus client clock, from the response Date header (0 when unknown)."""
    if not date_header or local_now is None:
        return 0.0
    try:
        server_now = parsedate_to_datetime(date_header).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return 0.0
    return server_now - local_now


@dataclasses.dataclass(frozen=True, slots=True)
class StoredTokens:
    """Tokens as a store holds them: with the generation that fences concurrent saves."""

    tokens: TokenSet
    generation: int
