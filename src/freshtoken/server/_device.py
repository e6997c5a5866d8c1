"""The device authorization grant (RFC 8628): device codes, the device page's answer,
polling."""

from __future__ import annotations

import secrets
from typing import Literal

from ._base import StateBase
from ._config import DEVICE_CODE_GRANT, Client
from ._records import (
    _MAX_PENDING,
    _SLOW_DOWN,
    _USER_CODE_ALPHABET,
    DeviceGrant,
    Issued,
    LoginRejected,
    OAuthError,
    _DeviceCode,
    _refresh_binding,
    normalize_user_code,
)


class DeviceMixin(StateBase):
    """The device authorization grant."""

    def device_authorization(self, client: Client, scope: frozenset[str] | None) -> DeviceGrant:
        self._require_grant(client, DEVICE_CODE_GRANT)
        with self._lock:
            config = self._config
            now = self.now()
            if len(self._device_codes) >= _MAX_PENDING:
                for device_code, record in list(self._device_codes.items()):
                    if record.expires_at <= now:
                        self._forget_device_code(device_code)
            if len(self._device_codes) >= _MAX_PENDING:
                raise OAuthError("temporarily_unavailable", "too many device logins in progress")
            device_code = secrets.token_urlsafe(32)
            user_code = self._new_user_code()
            self._device_codes[device_code] = _DeviceCode(
                client.client_id,
                user_code,
                scope,
                now + config.device_code_ttl,
                config.device_interval,
            )
            self._user_codes[normalize_user_code(user_code)] = device_code
            self._stats["device_codes"] += 1
            return DeviceGrant(
                device_code, user_code, config.device_code_ttl, config.device_interval
            )

    def complete_device(
        self, user_code: str, username: str | None, password: str | None, *, approve: bool
    ) -> Literal["approved", "denied"]:
        """The device page's answer. Raises LoginRejected for an unknown or expired code and
        for a wrong password (the page is shown again)."""
        user = self._check_password(username, password) if approve else None
        with self._lock:
            device_code = self._user_codes.get(normalize_user_code(user_code), "")
            record = self._device_codes.get(device_code)
            if record is None or record.status != "pending" or self.now() >= record.expires_at:
                raise LoginRejected("that code is unknown, already used or expired")
            if user is None:
                record.status = "denied"
                self._stats["consents_denied"] += 1
                return "denied"
            try:
                record.scope = self._narrow_login(user, record.requested_scope)
            except OAuthError:
                record.status = "denied"
                raise LoginRejected(
                    "the device asked for scopes this user does not have; it was denied"
                ) from None
            record.status = "approved"
            record.username = user.username
            record.auth_time = self.now()
            self._stats["device_approvals"] += 1
            return "approved"

    def device_code_grant(
        self, client: Client, device_code: str, *, jkt: str | None = None
    ) -> Issued:
        self._require_grant(client, DEVICE_CODE_GRANT)
        with self._lock:
            record = self._device_codes.get(device_code)
            if record is None or record.client_id != client.client_id:
                raise self._invalid_grant("unknown device code")
            now = self.now()
            if now >= record.expires_at:
                self._forget_device_code(device_code)
                raise OAuthError("expired_token", "the device code expired: start again")
            if record.last_poll is not None and now - record.last_poll < record.interval:
                record.interval += _SLOW_DOWN
                record.last_poll = now
                raise OAuthError(
                    "slow_down", f"poll at most every {record.interval:g} seconds from now"
                )
            record.last_poll = now
            if record.status == "pending":
                raise OAuthError("authorization_pending", "the user has not answered yet")
            self._forget_device_code(device_code)
            if record.status == "denied":
                raise OAuthError("access_denied", "the user denied access")
            assert record.username is not None
            family = self._new_family(record.username, client.client_id, record.scope, now)
            family.auth_time = record.auth_time
            family.jkt = _refresh_binding(client, jkt)
            self._stats["logins"] += 1
            return self._issue(family, record.scope, now, with_refresh=True, jkt=jkt)

    def _new_user_code(self) -> str:
        while True:
            raw = "".join(secrets.choice(_USER_CODE_ALPHABET) for _ in range(8))
            if raw not in self._user_codes:
                return f"{raw[:4]}-{raw[4:]}"

    def _forget_device_code(self, device_code: str) -> None:
        record = self._device_codes.pop(device_code, None)
        if record is not None:
            self._user_codes.pop(normalize_user_code(record.user_code), None)
