"""The protected demo API: who an access token speaks for (RFC 6750, RFC 8707), and the
items it stores."""

from __future__ import annotations

from typing import Any

from ._base import StateBase
from ._records import (
    _MAX_ITEMS,
    BearerError,
    Principal,
    _names,
)


class DemoAPIMixin(StateBase):
    """Bearer checks and the demo items."""

    def authenticate(
        self,
        token: str,
        required_scope: str | None,
        *,
        resource: str | None = None,
        strict_resource: bool = False,
    ) -> Principal:
        """Who ``token`` speaks for. A token issued for resources (RFC 8707) is good only at
        them: ``resource`` is where it is presented; ``strict_resource`` refuses tokens issued
        for no resource at all (an MCP server's audience check)."""
        with self._lock:
            if self._fail_api > 0:
                self._fail_api -= 1
                self._stats["faults_served"] += 1
                raise self._unauthorized("injected failure (fail_api)")
        jti = self.key.verified_jti(token)  # outside the lock: it may verify a signature
        with self._lock:
            record = self._access.get(jti) if jti else None
            if jti is None or record is None:
                raise self._unauthorized("the access token is malformed or not ours")
            family = self._families[record.family_id]
            if record.revoked or not self._alive(family):
                raise self._unauthorized("the access token was revoked")
            if record.seq < self._expired_before_seq or self.now() >= record.expires_at:
                raise self._unauthorized("the access token expired")
            bound = record.resource or strict_resource
            if resource is not None and bound and not _names(record.resource, resource):
                raise self._unauthorized("the access token is for another resource")
            if required_scope is not None and required_scope not in record.scope:
                self._stats["forbidden_403"] += 1
                raise BearerError(
                    403, "insufficient_scope", f"needs scope {required_scope}", required_scope
                )
            return Principal(
                record.subject,
                family.username,
                family.client_id,
                record.scope,
                jti,
                record.expires_at,
                record.jkt,
                family.act,
                record.resource,
            )

    def add_item(self, owner: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            if len(self._items) >= _MAX_ITEMS:
                raise BearerError(400, None, "the demo store is full")
            item_id = next(self._item_ids)
            item = {**body, "id": item_id, "owner": owner}
            self._items[item_id] = item
            return item

    def items(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._items.values())

    def item(self, item_id: int) -> dict[str, Any] | None:
        with self._lock:
            return self._items.get(item_id)
