"""Faults the tests and the admin endpoints inject: token endpoint failures, latency, API
failures, expiring every access token, revoking a user's sessions."""

from __future__ import annotations

import collections
import itertools
from typing import Any

from ._base import StateBase
from ._config import FaultKind, Faults, TokenFault
from ._records import _MAX_FAULTS


class FaultsMixin(StateBase):
    """Injected failures, latency and forced expiry or revocation."""

    def arm(self, faults: Faults) -> None:
        for fault in faults.token_failures:
            self.inject(fault.kind, fault.count, retry_after=fault.retry_after)
        if faults.latency:
            self.set_latency(faults.latency)
        if faults.fail_api:
            self.fail_api(faults.fail_api)

    def inject(self, kind: FaultKind, count: int = 1, *, retry_after: int | None = None) -> None:
        """Queue ``count`` failures of the next token requests (after any already queued)."""
        fault = TokenFault(kind, 1, retry_after)
        with self._lock:
            if len(self._token_faults) + count > _MAX_FAULTS:
                raise ValueError(f"at most {_MAX_FAULTS} queued faults")
            if count < 1:
                raise ValueError("a fault is served at least once")
            self._token_faults.extend(itertools.repeat(fault, count))

    def take_token_fault(self) -> TokenFault | None:
        with self._lock:
            if not self._token_faults:
                return None
            self._stats["faults_served"] += 1
            return self._token_faults.popleft()

    @property
    def latency(self) -> float:
        with self._lock:
            return self._latency

    def set_latency(self, seconds: float) -> None:
        Faults(latency=seconds)  # validates
        with self._lock:
            self._latency = seconds

    def fail_api(self, calls: int) -> None:
        Faults(fail_api=calls)  # validates
        with self._lock:
            self._fail_api = calls

    def expire_access_tokens(self) -> None:
        with self._lock:
            self._expired_before_seq = next(self._seq)

    def revoke_user(self, username: str) -> int:
        """Revoke every live family of ``username``; returns how many."""
        with self._lock:
            families = [
                f for f in self._families.values() if f.username == username and not f.revoked
            ]
            for family in families:
                self._revoke_family(family)
            return len(families)

    def clear_faults(self) -> None:
        with self._lock:
            self._token_faults.clear()
            self._latency = 0.0
            self._fail_api = 0
        self.dpop.demand_new_nonce(0)

    def faults(self) -> dict[str, Any]:
        with self._lock:
            queued: dict[str, int] = collections.Counter(f.kind for f in self._token_faults)
            return {"latency": self._latency, "token_failures": queued, "fail_api": self._fail_api}
