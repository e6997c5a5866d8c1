"""``JSONRefresher``: in-house refresh endpoints that speak JSON."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import httpx

from .._core.tokens import TokenSet
from .._runtime.connections import DEFAULT_CONCURRENCY
from ..errors import SessionExpired

if TYPE_CHECKING:
    pass

from ._http import _MOST_WRAPPERS, DEFAULT_TIMEOUT, HTTPRefresher


class JSONRefresher(HTTPRefresher):
    """In-house refresh endpoints: ``POST url`` with ``{"refresh_token": ...}``.

    Field names are configurable both ways; ``expires_in`` may also be missing (the JWT's
    ``exp`` is then used).
    """

    def __init__(
        self,
        url: str,
        *,
        request_field: str = "refresh_token",
        access_token_field: str = "access_token",
        refresh_token_field: str = "refresh_token",
        expires_in_field: str = "expires_in",
        extra_body: Mapping[str, Any] | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        verify: bool | str | ssl.SSLContext = True,
        allow_insecure_http: bool = False,
        headers: Mapping[str, str] | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        super().__init__(
            url,
            timeout=timeout,
            verify=verify,
            allow_insecure_http=allow_insecure_http,
            headers=headers,
            concurrency=concurrency,
        )
        self.request_field = request_field
        self.fields = {
            access_token_field: "access_token",
            refresh_token_field: "refresh_token",
            expires_in_field: "expires_in",
        }
        self.extra_body = dict(extra_body or {})

    def build_request(self, current: TokenSet | None) -> httpx.Request:
        if current is None or current.refresh_token is None:
            raise SessionExpired("no_refresh_token", "no refresh token is stored: log in again")
        body = {**self.extra_body, self.request_field: current.refresh_token}
        return httpx.Request(
            "POST", self.url, json=body, headers={"Accept": "application/json", **self.headers}
        )

    def secrets(self) -> tuple[str, ...]:
        # The extra fields may hold an API key; which of them are secret is unknown.
        return tuple(value for value in self.extra_body.values() if isinstance(value, str))

    def translate(self, document: Mapping[str, Any]) -> Mapping[str, Any]:
        # In-house APIs often nest the answer: {"data": {...}} or {"tokens": {...}}, a level
        # or two deep; a hostile answer may nest a thousand, so unwrapping is a bounded loop.
        for _ in range(_MOST_WRAPPERS):
            renamed = {self.fields.get(name, name): value for name, value in document.items()}
            wrapped = (document.get(wrapper) for wrapper in ("data", "tokens", "token"))
            inner = next((value for value in wrapped if isinstance(value, Mapping)), None)
            if "access_token" in renamed or inner is None:
                break
            document = inner
        return renamed
