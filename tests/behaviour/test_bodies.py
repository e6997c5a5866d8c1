"""Request bodies across the retry: replayed when they can be, a clear error when not."""

from __future__ import annotations

import json
from urllib.parse import parse_qs

import pytest

import freshtoken

from .conftest import Env


def test_json_body_is_replayed(env: Env) -> None:
    """After a 401 the retry sends the same JSON."""
    payload = {"name": "widget", "tags": ["a", "b"], "count": 3}
    env.server.fail_api(1)
    status, body = env.driver().post(env.url("/api/echo"), json=payload)
    assert status == 200
    assert body["method"] == "POST"
    assert json.loads(body["body"]) == payload
    assert env.stats()["refreshes"] == 1


def test_form_body_is_replayed(env: Env) -> None:
    """After a 401 the retry sends the same form."""
    env.server.fail_api(1)
    status, body = env.driver().post(env.url("/api/echo"), data={"a": "1", "b": "two words"})
    assert status == 200
    assert parse_qs(body["body"]) == {"a": ["1"], "b": ["two words"]}


def test_bytes_body_is_replayed(env: Env) -> None:
    """After a 401 the retry sends the same bytes."""
    payload = bytes(range(256)).hex().encode() * 4
    env.server.fail_api(1)
    status, body = env.driver().post(env.url("/api/echo"), content=payload)
    assert status == 200
    assert body["body"].encode() == payload
    assert body["body_length"] == len(payload)


def test_created_item_is_created_once_on_success(env: Env) -> None:
    """Without a rejection the body is sent exactly once (no hidden retry)."""
    status, body = env.driver().post(env.url("/api/items"), json={"name": "once"})
    assert status == 201
    assert body["name"] == "once"
    assert env.manager.stats.snapshot()["retries"] == 0


@pytest.mark.not_bff(
    "the browser's body is read into the BFF up to replay_limit and replayed; a larger one "
    "gets its 401 back after the refresh (tests/bff/test_streaming.py, test_proxy.py)"
)
def test_one_shot_stream_raises_replay_error_after_refreshing(env: Env) -> None:
    """A rejected one-shot stream is not buffered nor dropped: ReplayError, token refreshed."""
    client = env.driver()
    env.server.fail_api(1)
    with pytest.raises(freshtoken.ReplayError) as caught:
        client.post_stream(env.url("/api/echo?secret-query=1"), [b"part one, ", b"part two"])
    assert "one-shot" in str(caught.value)
    assert "secret-query" not in str(caught.value)
    assert env.stats()["refreshes"] == 1
    status, body = client.post_stream(env.url("/api/echo"), [b"again"])
    assert status == 200
    assert body["body"] == "again"
    assert env.stats()["refreshes"] == 1


def test_one_shot_stream_without_rejection_is_sent(env: Env) -> None:
    """A stream that is accepted goes through untouched."""
    status, body = env.driver().post_stream(env.url("/api/echo"), [b"a", b"b", b"c"])
    assert status == 200
    assert body["body"] == "abc"
