"""Administration routes: counters and fault injection, for tests and the CLI."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ._config import TokenFault
from ._endpoints import EndpointsBase
from ._web import (
    _JSON,
    _BadRequest,
    _error,
    _parse_json_object,
    _read_body,
)


class AdminRoutes(EndpointsBase):
    """Counters and faults."""

    async def stats(self, request: Request) -> Response:
        return _JSON(self.state.stats())

    async def reset_stats(self, request: Request) -> Response:
        self.state.reset_stats()
        return _JSON(self.state.stats())

    async def get_faults(self, request: Request) -> Response:
        return _JSON(self.state.faults())

    async def post_faults(self, request: Request) -> Response:
        """Arm faults. Body: any of ``{"kind", "count", "retry_after"}``, ``"latency"``,
        ``"fail_api"``, ``"expire_access_tokens": true``, ``"revoke_user"``, ``"clear": true``,
        ``"dpop_new_nonce": N`` (the next N proofs are told to use a new nonce),
        ``"rotate_dpop_nonce": true``.
        """
        try:
            data = _parse_json_object(request, await _read_body(request, self.max_body))
            answer = self._apply_faults(data)
        except _BadRequest as problem:
            return _error(problem.status, problem.error, problem.description)
        return _JSON({**answer, "faults": self.state.faults()})

    def _apply_faults(self, data: dict[str, Any]) -> dict[str, Any]:
        known = {"kind", "count", "retry_after", "latency", "fail_api"}
        known |= {"expire_access_tokens", "revoke_user", "clear"}
        known |= {"dpop_new_nonce", "rotate_dpop_nonce"}
        if unknown := set(data) - known:
            raise _BadRequest(400, "invalid_request", f"unknown keys {sorted(unknown)}")

        def number(name: str, kind: type) -> Any:
            value = data.get(name)
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(
                value, (int, float) if kind is float else int
            ):
                raise _BadRequest(400, "invalid_request", f"{name!r} must be a number")
            return value

        answer: dict[str, Any] = {}
        try:
            if data.get("clear") is True:
                self.state.clear_faults()
            if (latency := number("latency", float)) is not None:
                self.state.set_latency(float(latency))
            if (calls := number("fail_api", int)) is not None:
                self.state.fail_api(calls)
            if "kind" in data:
                kind = data["kind"]
                count = number("count", int)
                retry_after = number("retry_after", int)
                if not isinstance(kind, str):
                    raise _BadRequest(400, "invalid_request", "'kind' must be a string")
                TokenFault(kind, 1 if count is None else count, retry_after)  # type: ignore[arg-type]
                self.state.inject(kind, 1 if count is None else count, retry_after=retry_after)  # type: ignore[arg-type]
            if (demands := number("dpop_new_nonce", int)) is not None:
                self.state.dpop.demand_new_nonce(demands)
            if data.get("rotate_dpop_nonce") is True:
                self.state.dpop.rotate_nonce()
            if data.get("expire_access_tokens") is True:
                self.state.expire_access_tokens()
            if (user := data.get("revoke_user")) is not None:
                if not isinstance(user, str):
                    raise _BadRequest(400, "invalid_request", "'revoke_user' must be a string")
                answer["revoked_families"] = self.state.revoke_user(user)
        except ValueError as exc:
            raise _BadRequest(400, "invalid_request", str(exc)) from exc
        return answer
