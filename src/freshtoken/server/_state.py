"""The server's memory and its decisions: token families, faults and counters, with no I/O.

Rules of the token families:

- A login (password grant) starts a *family*: one session of one user with one client. Every
  access token and refresh token it ever produces belongs to it; revoking the family kills
  them all at once.
- With rotation, a refresh *retires* the refresh token presented and issues its *successor*.
  A retired token presented again within ``reuse_grace`` seconds of its retirement answers
  with its successor (the same strings, expires_in recomputed). Later it is a *reuse*: with
  reuse detection it revokes the family, without it is simply refused.
- An access token is accepted while its family is alive, it was not revoked itself, it was
  issued after the last "expire every access token now", and the server's clock is before
  its expiry. The server's clock is ``clock() + clock_offset``.
- An authorization code is redeemed once. Presenting it again revokes the family its first
  redemption started (RFC 6749 section 4.1.2: the code may have leaked). A code bound to a
  PKCE challenge is redeemed only with the matching verifier; a verifier without a challenge
  is refused too (no downgrade). Public clients must use PKCE.
- A device code (RFC 8628) is pending until the user approves or denies it on the device
  page, or until it expires. A poll sooner than ``interval`` after the previous one answers
  ``slow_down`` and adds 5 seconds to the interval for good.
- Identity scopes (``openid``, ``profile``, ``email``, ``offline_access``) are granted to
  any user who asks at login; they do not narrow the API scopes (asking only for ``openid``
  grants the user's API scopes too). A family whose scope has ``openid`` gets an ``id_token``
  with every token response, the first one carrying the authorization request's ``nonce``.

Every method takes one ``threading.Lock``: the app calls them from uvicorn's event loop
thread, tests call them from their own threads. None of them awaits or does I/O while
holding it.
"""

from __future__ import annotations

from .._core.clock import Clock, system_clock
from ._clients import ClientsMixin
from ._codes import CodesMixin
from ._config import ServerConfig
from ._demo_api import DemoAPIMixin
from ._device import DeviceMixin
from ._faults import FaultsMixin
from ._grants import GrantsMixin
from ._records import (
    AuthorizationRefused,
    BearerError,
    DeviceGrant,
    Issued,
    LoginRejected,
    OAuthError,
    PendingAuthorization,
    Principal,
)

__all__ = [
    "AuthorizationRefused",
    "BearerError",
    "DeviceGrant",
    "Issued",
    "LoginRejected",
    "OAuthError",
    "PendingAuthorization",
    "Principal",
    "ServerState",
]


class ServerState(ClientsMixin, GrantsMixin, CodesMixin, DeviceMixin, DemoAPIMixin, FaultsMixin):
    def __init__(self, config: ServerConfig, *, clock: Clock = system_clock, url: str) -> None:
        super().__init__(config, clock=clock, url=url)
        self.arm(config.faults)

    def __repr__(self) -> str:
        return f"ServerState(issuer={self.issuer!r}, families={len(self._families)})"
