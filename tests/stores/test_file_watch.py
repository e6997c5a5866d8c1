"""FileStore tells managers when another process replaced the file."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from freshtoken import FileStore, FunctionRefresher, TokenManager, TokenSet


def never(current: TokenSet | None) -> TokenSet:
    raise AssertionError("no refresh is due in this test")


def test_a_save_by_another_process_reaches_the_manager_without_a_refresh_or_401(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tokens.json"
    store = FileStore(path, watch_interval=0.02)
    manager = TokenManager(FunctionRefresher(never), store)
    manager.set_tokens(TokenSet("first", refresh_token="r1", expires_at=time.time() + 3600))
    assert manager.get_tokens().access_token == "first"
    # Another process (here: a second store object writing the same file directly, which
    # the manager's cache knows nothing about) logs in again.
    other = FileStore(path, watch_interval=None)
    current = other.load()
    assert current is not None
    other.save(
        TokenSet("second", refresh_token="r2", expires_at=time.time() + 3600),
        expected_generation=current.generation,
    )
    deadline = time.monotonic() + 5
    while manager.get_tokens().access_token != "second":
        assert time.monotonic() < deadline, "the watcher never reported the change"
        time.sleep(0.01)  # polling an observable condition with a deadline
    store.close()


def test_closing_the_store_stops_its_watcher(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "closing-test.json", watch_interval=0.01)
    TokenManager(FunctionRefresher(never), store)
    watchers = [t for t in threading.enumerate() if t.name == "freshtoken-watch-closing-test.json"]
    assert watchers
    store.close()
    for thread in watchers:
        thread.join(5)
        assert not thread.is_alive()


def test_watching_can_be_turned_off(tmp_path: Path) -> None:
    before = {t for t in threading.enumerate() if t.name.startswith("freshtoken-watch")}
    TokenManager(FunctionRefresher(never), FileStore(tmp_path / "t.json", watch_interval=None))
    after = {t for t in threading.enumerate() if t.name.startswith("freshtoken-watch")}
    assert after <= before
