"""Quirks: how an authorization server departs from RFC 6749, as data.

The core never asks which provider it talks to (DESIGN invariant 16). What every server may
do and costs nothing to handle is handled for everyone: form-encoded answers, errors with
status 200, error codes in a provider's own words, ``verification_url``, ``{tenantid}``
issuers (see ``policy`` and the logins). What cannot be guessed from the wire is a setting
here, that a preset of [`freshtoken.providers`][freshtoken.providers] fills in and that any
issuer can be given by hand:

``reused_refresh_token``
    what the server does with a refresh token presented a second time. ``"refused"``: each
    refresh spends it, and a reuse is refused or revokes the grant (GitHub Apps, Notion, Slack,
    Ory Hydra); an answer that says 2xx but cannot be read then ends the session at once
    (``refresh_token_spent``), since presenting the spent token again would be a replay.
    ``"accepted"``: it stays valid, rotated or not (Google, Microsoft Entra, Salesforce); such
    an answer is retried. ``"unknown"`` (the default): a refresher that has seen the server
    rotate treats it as ``"refused"`` from then on.
``refresh_sends_scope``
    every refresh carries ``scope`` (the configured one, else the one granted at login):
    Microsoft Entra refuses a refresh without it (AADSTS900144). A refresher that gets that
    refusal switches this on by itself and tries once more.
``default_lifetime``
    seconds an access token lives when the answer has no ``expires_in`` and the token is no
    JWT with ``exp`` (Salesforce); without it, such a token is refreshed when an API rejects it.
``keep_alive``
    refresh before the refresh token's own lifetime ends (``refresh_expires_in``, Keycloak;
    ``refresh_token_expires_in``, GitHub Apps), so that a session used now and then does not
    die of idleness between uses. The refresh falls due then and happens at the next call (no
    timer runs per credential): a process that may make no call for longer than the refresh
    token lives calls ``manager.get_tokens()`` on a timer of its own.
``offline_scope``
    the scope that makes the server issue a refresh token (``offline_access``), added to a
    login's scope.
``authorization_params``
    parameters every authorization request carries (Google's ``access_type=offline`` and
    ``prompt=consent``, Auth0's ``audience``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Literal, TypeAlias

__all__ = ["Quirks", "Reuse"]

Reuse: TypeAlias = Literal["unknown", "accepted", "refused"]
_REUSES = ("unknown", "accepted", "refused")


@dataclasses.dataclass(frozen=True, slots=True)
class Quirks:
    """How one authorization server departs from the RFCs (see the module's description)."""

    reused_refresh_token: Reuse = "unknown"
    refresh_sends_scope: bool = False
    default_lifetime: float | None = None
    keep_alive: bool = False
    offline_scope: str | None = None
    authorization_params: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.reused_refresh_token not in _REUSES:
            raise ValueError(f"reused_refresh_token is one of {', '.join(_REUSES)}")
        lifetime = self.default_lifetime
        if lifetime is not None and not (math.isfinite(lifetime) and lifetime > 0):
            raise ValueError("default_lifetime must be a finite number of seconds > 0")
        params = self.authorization_params
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in params.items()):
            raise ValueError("authorization_params maps strings to strings")
        object.__setattr__(self, "authorization_params", dict(params))

    def __hash__(self) -> int:  # a value: usable as a key, though it holds a mapping
        values = (getattr(self, field.name) for field in dataclasses.fields(self))
        return hash(
            tuple(tuple(sorted(v.items())) if isinstance(v, Mapping) else v for v in values)
        )

    def replace(self, **changes: Any) -> Quirks:
        return dataclasses.replace(self, **changes)

    def to_settings(self) -> dict[str, Any]:
        """The quirks that differ from the defaults, JSON-ready (for a stored description)."""
        default = Quirks()
        return {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if getattr(self, field.name) != getattr(default, field.name)
        }

    @classmethod
    def from_settings(cls, settings: object) -> Quirks:
        """Inverse of [`to_settings()`][to_settings]; ValueError for anything else."""
        if not isinstance(settings, Mapping):
            raise ValueError("quirks must be an object")  # noqa: TRY004
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = set(settings) - names
        if unknown:
            raise ValueError(f"unknown quirks: {', '.join(sorted(map(str, unknown)))}")
        try:
            return cls(**dict(settings))
        except TypeError as error:
            raise ValueError(f"quirks: {error}") from None
