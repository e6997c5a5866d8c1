"""The device login (RFC 8628), sans I/O: what the user is shown ([`DevicePrompt`][]) and the
requests of one login with what their answers mean ([`DeviceAuthorization`][]). The login
itself (`freshtoken._logins.flows`) drives them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys

import httpx

from .._core.clock import Clock
from .._core.policy import read_token_answer
from .._core.tokens import TokenResponseError, TokenSet
from .._oauth.client_auth import ClientAuth
from .._oauth.discovery import ServerMetadata
from .._oauth.dpop import DPoP, DPoPKey
from .._oauth.http import Flow, Pause
from .._oauth.id_tokens import check_id_token_claims
from ..errors import LoginFailed
from .authorization import default_scope, with_default_lifetime
from .token_endpoint import check_login_transport, require_grant, token_endpoint_of, tokens_from

__all__ = [
    "DEVICE_CODE_GRANT",
    "DeviceAuthorization",
    "DevicePrompt",
    "print_prompt",
]

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
_SLOW_DOWN = 5.0  # RFC 8628 section 3.5
_TRANSIENT_POLL_FAILURES = 3
_LONGEST_INTERVAL = 60.0  # a server's interval beyond this is hostile, not slow
# Below this a server (a test server's 0, or a hostile one) would have the client poll as fast
# as it answers; at most one poll a second is what it gets.
_SHORTEST_INTERVAL = 1.0
# Providers' device codes live 15-30 minutes; a longer life is capped, so that a login polled
# by a server that never answers but "authorization_pending" still ends.
_LONGEST_EXPIRY = 3600.0


@dataclasses.dataclass(frozen=True, slots=True)
class DevicePrompt:
    """What the user must do to approve a device login (RFC 8628 section 3.3)."""

    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: float

    def __str__(self) -> str:
        minutes = max(1, round(self.expires_in / 60))
        if self.verification_uri_complete:
            return (
                f"To sign in, open {self.verification_uri_complete}\n"
                f"and check that it shows the code {self.user_code}"
                f" (or open {self.verification_uri} and enter it)."
                f" The code expires in {minutes} min."
            )
        return (
            f"To sign in, open {self.verification_uri} and enter the code {self.user_code}."
            f" The code expires in {minutes} min."
        )


def print_prompt(prompt: DevicePrompt) -> None:
    """The default ``on_prompt``: the instructions on stderr (stdout may be piped)."""
    print(prompt, file=sys.stderr, flush=True)


class DeviceAuthorization:
    """One device login, sans I/O: the requests to send and what their answers mean.

    ``interval`` is how long to wait before the next poll (it grows by 5 s on each
    ``slow_down``); ``deadline`` is when the device code expires, on the clock given to
    [`prompt_from()`][prompt_from].
    """

    def __init__(
        self,
        metadata: ServerMetadata,
        client: ClientAuth,
        scope: str | None = None,
        *,
        dpop: DPoPKey | None = None,
    ) -> None:
        if metadata.device_authorization_endpoint is None:
            raise LoginFailed(
                "unsupported_flow",
                f"{metadata.issuer} has no device_authorization_endpoint: use a browser login",
            )
        require_grant(metadata, DEVICE_CODE_GRANT, "device code")
        self.metadata = metadata
        self.client = client
        self.scope = default_scope(metadata) if scope is None else scope
        self.interval = 5.0
        self.deadline = math.inf
        self._device_code: str | None = None
        self._failures = 0
        self.dpop = dpop  # polls carry its proofs, and the tokens are bound to it

    def start_request(self) -> httpx.Request:
        assert self.metadata.device_authorization_endpoint is not None
        form = {"scope": self.scope} if self.scope else {}
        return self.client.request(self.metadata.device_authorization_endpoint, form, {})

    def prompt_from(self, response: httpx.Response, *, now: float) -> DevicePrompt:
        """Read the device authorization answer (RFC 8628 section 3.2)."""
        if response.status_code != 200:
            tokens_from(response, sent_at=now, secrets=self.client.secrets())  # raises its error
            raise LoginFailed("invalid_response", f"HTTP {response.status_code}")
        document, problem = read_token_answer(response.content)
        if not isinstance(document, dict):
            raise LoginFailed(
                "invalid_response",
                f"the device authorization {problem or 'is not a JSON object'}",
            )
        if "verification_uri" not in document:
            # Google's spelling (https://developers.google.com/identity/protocols/oauth2/limited-input-device#step-2:-handle-the-authorization-server-response)
            document = {**document, "verification_uri": document.get("verification_url")}
        fields = {}
        for name in ("device_code", "user_code", "verification_uri"):
            value = document.get(name)
            if not isinstance(value, str) or not value:
                raise LoginFailed("invalid_response", f"the device authorization lacks {name}")
            fields[name] = value
        complete = document.get("verification_uri_complete")
        expires_in = min(_number(document.get("expires_in"), "expires_in"), _LONGEST_EXPIRY)
        interval = document.get("interval")
        # A server asking for days between polls is hostile or broken, not slow.
        asked = 5.0 if interval is None else _number(interval, "interval")
        self.interval = min(max(asked, _SHORTEST_INTERVAL), _LONGEST_INTERVAL)
        self.deadline = now + expires_in
        self._device_code = fields["device_code"]
        return DevicePrompt(
            fields["user_code"],
            fields["verification_uri"],
            complete if isinstance(complete, str) and complete else None,
            expires_in,
        )

    def poll_request(self) -> httpx.Request:
        if self._device_code is None:
            raise RuntimeError("read the device authorization first (prompt_from)")
        form = {"grant_type": DEVICE_CODE_GRANT, "device_code": self._device_code}
        return self.client.request(token_endpoint_of(self.metadata), form, {})

    def expired(self, now: float) -> LoginFailed | None:
        if now < self.deadline:
            return None
        return LoginFailed("expired_token", "the code expired before anyone approved it")

    def outcome(self, response: httpx.Response, *, sent_at: float) -> TokenSet | None:
        """The tokens, or ``None`` to poll again after ``interval``; raises LoginFailed.

        The error decides, whatever the status: GitHub answers ``authorization_pending`` and
        ``slow_down`` with 200 (and the new ``interval`` with ``slow_down``)."""
        error = _error_code(response)
        if response.status_code == 200 and error is None:
            tokens = tokens_from(response, sent_at=sent_at, secrets=self._secrets(), dpop=self.dpop)
            tokens = with_default_lifetime(tokens, self.metadata)
            return _checked_id_token(tokens, self.metadata, self.client.client_id, sent_at)
        if error == "authorization_pending":
            self._failures = 0
            return None
        if error == "slow_down":
            self._failures = 0
            self.interval += _SLOW_DOWN
            asked = _interval_of(response)
            if asked is not None and asked > self.interval:
                self.interval = min(asked, _LONGEST_INTERVAL)
            return None
        if error == "access_denied":
            raise LoginFailed(
                "access_denied", "the user denied access", status=response.status_code
            )
        if error == "expired_token":
            raise LoginFailed(
                "expired_token",
                "the code expired before anyone approved it: start again",
                status=response.status_code,
            )
        if response.status_code in (429, *range(500, 600)) and self.transient_failure():
            return None
        tokens_from(response, sent_at=sent_at, secrets=self._secrets())  # raises the error
        raise LoginFailed("invalid_response", f"HTTP {response.status_code}")

    def prompt_flow(self, *, clock: Clock, allow_insecure_http: bool = False) -> Flow[DevicePrompt]:
        """Ask for the codes; returns what to show the user."""
        request = self.start_request()
        check_login_transport(str(request.url), allow_insecure_http=allow_insecure_http)
        sent_at = clock()
        response: httpx.Response = yield request
        return self.prompt_from(response, now=sent_at)

    def poll_flow(self, *, clock: Clock) -> Flow[TokenSet]:
        """Poll until the user answers or the code expires (after
        [`prompt_flow()`][prompt_flow])."""
        while True:
            now = clock()
            if (expired := self.expired(now)) is not None:
                raise expired
            # Never wait past the code's expiry: a poll after it is wasted, the user waits.
            yield Pause(min(self.interval, self.deadline - now))
            sent_at = clock()
            if (expired := self.expired(sent_at)) is not None:
                raise expired
            try:
                if self.dpop is None:
                    response: httpx.Response = yield self.poll_request()
                else:
                    proofs = DPoP(self.dpop).token_request(self.poll_request(), self.dpop, clock)
                    response = yield from proofs
            except LoginFailed as failure:
                if failure.error == "network_error" and self.transient_failure():
                    continue
                raise
            tokens = self.outcome(response, sent_at=sent_at)
            if tokens is not None:
                return tokens

    def transient_failure(self) -> bool:
        """Count a failure that may pass (network, 5xx); True while polling should go on."""
        self._failures += 1
        return self._failures <= _TRANSIENT_POLL_FAILURES

    def _secrets(self) -> tuple[str, ...]:
        return (self._device_code or "", *self.client.secrets())


def _number(value: object, name: str) -> float:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise LoginFailed("invalid_response", f"the device authorization's {name} is no number")
    if value < 0:
        raise LoginFailed("invalid_response", f"the device authorization's {name} is negative")
    return float(value)


def _error_code(response: httpx.Response) -> str | None:
    document = read_token_answer(response.content)[0]
    error = document.get("error") if isinstance(document, dict) else None
    return error if isinstance(error, str) and error else None


def _interval_of(response: httpx.Response) -> float | None:
    document = read_token_answer(response.content)[0]
    value = document.get("interval") if isinstance(document, dict) else None
    try:
        return _number(value, "interval")
    except LoginFailed:
        return None


def _checked_id_token(
    tokens: TokenSet, metadata: ServerMetadata, client_id: str, now: float
) -> TokenSet:
    if tokens.id_token is not None:
        try:
            claims = tokens.id_claims()
        except TokenResponseError as error:
            raise LoginFailed("invalid_id_token", str(error)) from None
        check_id_token_claims(
            claims, issuer=metadata.issuer, client_id=client_id, nonce=None, now=now
        )
    return tokens
