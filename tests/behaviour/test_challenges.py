"""Which 401s refresh, through every integration, from an API that sends several
WWW-Authenticate lines (a real listener on another port; tokens from the reference server)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from listener import Answer, Listener, Received, json_answer

from .conftest import Env


class ChallengingAPI:
    """Answers the first request that carries a token with 401 and ``lines``, the rest 200."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.listener = Listener(self.answer)
        self.url = self.listener.url + "/api"

    def answer(self, request: Received) -> Answer:
        authorization = request.headers.get("authorization")
        if authorization is not None and len(self.listener.received) == 1:
            challenges = [("WWW-Authenticate", line) for line in self.lines]
            return json_answer({"error": "rejected"}, 401, challenges)
        return json_answer({"authorization": authorization})

    @property
    def sent(self) -> list[str | None]:
        return [request.headers.get("authorization") for request in self.listener.received]


@pytest.fixture
def api(request: pytest.FixtureRequest) -> Iterator[ChallengingAPI]:
    made = ChallengingAPI(request.param)
    yield made
    made.listener.close()


REFRESHING = {
    "dpop-line-then-bearer-line": ['DPoP error="use_dpop_nonce"', 'Bearer error="invalid_token"'],
    "error-inside-a-quoted-realm": [
        'Bearer realm="a, error=insufficient_scope", error="invalid_token"'
    ],
}
NOT_REFRESHING = {
    "scope-error-on-the-second-line": ['Bearer realm="api"', 'Bearer error="insufficient_scope"'],
    "broken-first-line": ['Bearer realm="x, y', 'Bearer error="insufficient_scope"'],
}


@pytest.mark.parametrize("api", REFRESHING.values(), ids=REFRESHING.keys(), indirect=True)
def test_a_bearer_invalid_token_refreshes_and_retries(env: Env, api: ChallengingAPI) -> None:
    """Every line is read and only the Bearer challenge's error counts: this one is ours."""
    status, body = env.driver().get(api.url)
    assert status == 200
    assert env.stats()["refreshes"] == 1
    first, second = api.sent
    assert first is not None
    assert second not in (None, first)
    assert body["authorization"] == second


@pytest.mark.parametrize("api", NOT_REFRESHING.values(), ids=NOT_REFRESHING.keys(), indirect=True)
def test_a_bearer_scope_error_reaches_the_caller(env: Env, api: ChallengingAPI) -> None:
    """insufficient_scope on any line, however the lines around it look: no refresh, no retry."""
    status, _ = env.driver().get(api.url)
    assert status == 401
    assert env.stats()["refreshes"] == 0
    assert len(api.sent) == 1
    assert env.manager.stats.snapshot()["retries"] == 0
