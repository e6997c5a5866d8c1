"""FileStore on its own: format, permissions, corruption, encryption, profiles, atomicity.

The TokenStore contract (fences, generations, lock exclusivity, async twins) is proven for
every store in test_store_contract.py; this file holds what only FileStore does."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from file_operations import every_operation

from freshtoken import FunctionRefresher, SessionExpired, StoreError, TokenManager, TokenSet
from freshtoken.errors import LockTimeout
from freshtoken.stores import FileStore, GenerationConflict

WORKER = Path(__file__).with_name("store_worker.py")
SECRET_ACCESS = "access-SECRET-a1"
SECRET_REFRESH = "refresh-SECRET-r1"


def tokens(n: int = 1, *, expires_at: float | None = 4_000_000_000.0) -> TokenSet:
    return TokenSet(
        access_token=f"access-SECRET-a{n}",
        refresh_token=f"refresh-SECRET-r{n}",
        expires_at=expires_at,
        obtained_at=None if expires_at is None else expires_at - 300,
        scope="read write",
    )


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "cfg" / "freshtoken" / "tokens.json"


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FRESHTOKEN_ENCRYPTION_KEY", raising=False)
    monkeypatch.delenv("FRESHTOKEN_STORE", raising=False)


# -- the protocol ------------------------------------------------------------------------------


def test_reading_creates_no_file(path: Path) -> None:
    """A store whose file does not exist yet is empty, and reading it creates nothing."""
    store = FileStore(path)
    assert store.load() is None
    assert store.profiles() == {}
    assert store.load_profile() is None
    assert not path.parent.exists()


def test_clear_forgets_tokens_and_keeps_settings(path: Path) -> None:
    """clear() empties the profile's tokens; its meta and client secret stay for a re-login."""
    store = FileStore(path)
    store.save_profile(tokens(1), meta={"token_url": "https://a/t"}, client_secret="cs")
    store.clear()
    assert store.load() is None
    profile = store.load_profile()
    assert profile is not None
    assert profile.tokens is None
    assert profile.meta == {"token_url": "https://a/t"}
    assert profile.client_secret == "cs"
    assert store.save(tokens(2), expected_generation=0).generation > 0


def test_generations_never_repeat_after_remove_and_login(path: Path) -> None:
    """Generations come from a file-wide serial: a slow holder of an old one cannot match."""
    store = FileStore(path)
    old = store.save(tokens(1), expected_generation=0)
    assert store.remove_profile()
    new = store.save(tokens(2), expected_generation=0)
    assert new.generation > old.generation
    with pytest.raises(GenerationConflict):
        store.save(tokens(3), expected_generation=old.generation)


def test_key_is_the_real_path_and_the_profile(tmp_path: Path) -> None:
    """Two stores on one file through a symlink share a key (so one flight); profiles do not."""
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    a = FileStore(real / "t.json")
    b = FileStore(tmp_path / "link" / "t.json")
    c = FileStore(real / "t.json", profile="other")
    assert a.key == b.key
    assert a.key != c.key
    assert a.key == ("file", str(real / "t.json"), "default")


def test_default_path_honours_env_and_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """$FRESHTOKEN_STORE wins, then $XDG_CONFIG_HOME/freshtoken/tokens.json."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert FileStore().path == tmp_path / "xdg" / "freshtoken" / "tokens.json"
    monkeypatch.setenv("FRESHTOKEN_STORE", str(tmp_path / "elsewhere.json"))
    assert FileStore().path == tmp_path / "elsewhere.json"


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden", "x" * 65, "sp ace"])
def test_profile_names_are_checked(path: Path, name: str) -> None:
    """Profile names become lock file names: only a safe alphabet is accepted."""
    with pytest.raises(ValueError, match="invalid profile name"):
        FileStore(path, profile=name)


# -- permissions ------------------------------------------------------------------------------

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")


@posix_only
def test_created_owner_only_in_a_private_directory(path: Path) -> None:
    """The file is 0600 and the directories freshtoken creates are 0700, whatever the umask."""
    old = os.umask(0o022)
    try:
        FileStore(path).save(tokens(), expected_generation=0)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.parent.parent.stat().st_mode) == 0o700
    for lock in path.parent.glob("*.lock"):
        assert stat.S_IMODE(lock.stat().st_mode) & 0o077 == 0


@posix_only
@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o602, 0o644])
def test_refuses_a_file_others_can_read_or_write(path: Path, mode: int) -> None:
    """Group/other access is refused with an error naming the file and the chmod fix."""
    store = FileStore(path)
    store.save(tokens(), expected_generation=0)
    path.chmod(mode)
    with pytest.raises(StoreError) as caught:
        store.load()
    assert str(path) in str(caught.value)
    assert f"chmod 600 {path}" in str(caught.value)
    with pytest.raises(StoreError):
        store.save(tokens(2), expected_generation=None)
    path.chmod(0o600)
    assert store.load() is not None


@posix_only
@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to chown")
def test_refuses_a_file_owned_by_another_user(path: Path) -> None:
    """A token file that belongs to someone else is not trusted."""
    store = FileStore(path)
    store.save(tokens(), expected_generation=0)
    os.chown(path, 4242, -1)
    with pytest.raises(StoreError, match="belongs to another user"):
        store.load()


@posix_only
def test_refuses_a_symlink_swapped_in_for_the_file(path: Path, tmp_path: Path) -> None:
    """The store opens its file without following a symlink put there after it was set up."""
    store = FileStore(path)
    store.save(tokens(), expected_generation=0)
    elsewhere = tmp_path / "elsewhere.json"
    os.replace(path, elsewhere)
    path.symlink_to(elsewhere)
    with pytest.raises(StoreError, match="is a symbolic link") as caught:
        store.load()
    assert str(path) in str(caught.value)


@posix_only
@pytest.mark.parametrize("kind", ["to-another-token-file", "dangling"])
def test_a_token_file_that_is_a_symlink_is_refused(path: Path, tmp_path: Path, kind: str) -> None:
    """tokens.json as a symlink (to another file, or to nothing) is refused by every read and
    write, which never write through the link nor replace it."""
    path.parent.mkdir(parents=True)
    target = tmp_path / "elsewhere.json"
    if kind == "to-another-token-file":
        FileStore(target).save(tokens(1), expected_generation=0)
    path.symlink_to(target)
    before = target.read_bytes() if target.exists() else None
    store = FileStore(path)
    assert store.path == path  # not resolved when constructed
    for attempt in every_operation(store, tokens(2)):
        with pytest.raises(StoreError, match="is a symbolic link") as caught:
            attempt()
        assert str(path) in str(caught.value)
        assert "SECRET" not in str(caught.value)
    assert os.readlink(path) == str(target)
    assert (target.read_bytes() if target.exists() else None) == before
    manager = TokenManager(FunctionRefresher(lambda current: tokens(9)), store)
    with pytest.raises(StoreError, match="is a symbolic link"):
        manager.set_tokens(tokens(3))


# -- damage -----------------------------------------------------------------------------------

VALID = {
    "format": "freshtoken/1",
    "serial": 1,
    "profiles": {
        "default": {
            "generation": 1,
            "updated_at": 1.0,
            "meta": {},
            "summary": None,
            "secrets": {"tokens": tokens().to_dict()},
        }
    },
}


def _with_profile(**changes: object) -> bytes:
    record = {**VALID["profiles"]["default"], **changes}  # type: ignore[index]
    return json.dumps({**VALID, "profiles": {"default": record}}).encode()


DAMAGE = {
    "empty": (b"", "is empty"),
    "whitespace": (b"  \n", "is empty"),
    "truncated": (json.dumps(VALID).encode()[:57], "not valid JSON"),
    "binary": (b"\x00\xffgarbage", "not valid JSON"),
    "json-array": (b"[1, 2]", "not a freshtoken token store"),
    "someone-elses-json": (b'{"tokens": {"a": 1}}', "not a freshtoken token store"),
    "other-format": (b'{"format": "acme/3"}', "not a freshtoken token store"),
    "future-format": (
        json.dumps({**VALID, "format": "freshtoken/2"}).encode(),
        "newer than this freshtoken understands",
    ),
    "bad-serial": (json.dumps({**VALID, "serial": "x"}).encode(), "is corrupt"),
    "bad-generation": (_with_profile(generation=7), "is corrupt"),
    "no-secrets": (_with_profile(secrets=None), "is corrupt"),
    "bad-token-set": (_with_profile(secrets={"tokens": {"access_token": 3}}), "is corrupt"),
    "unknown-token-field": (
        _with_profile(secrets={"tokens": {"access_token": "a", "evil": 1}}),
        "is corrupt",
    ),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_damaged_files_raise_a_clear_error_and_are_never_overwritten(path: Path, kind: str) -> None:
    """Corrupt, truncated, foreign or future files: StoreError naming the file; no write."""
    data, message = DAMAGE[kind]
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    path.chmod(0o600)
    store = FileStore(path)
    for attempt in (
        store.load,
        lambda: store.save(tokens(2), expected_generation=None),
        lambda: store.save_profile(tokens(2), meta={}),
        store.clear,
    ):
        with pytest.raises(StoreError) as caught:
            attempt()
        assert str(path) in str(caught.value)
        assert message in str(caught.value)
        assert "SECRET" not in str(caught.value)
    assert path.read_bytes() == data


def test_a_damaged_file_surfaces_through_the_manager(path: Path) -> None:
    """The manager reports the store's StoreError as is, not a crash deep inside."""
    path.parent.mkdir(parents=True)
    path.write_bytes(b"{not json")
    path.chmod(0o600)
    manager = TokenManager(FunctionRefresher(lambda current: tokens(9)), FileStore(path))
    with pytest.raises(StoreError, match="not valid JSON"):
        manager.get_tokens()


# -- encryption -------------------------------------------------------------------------------

RAW_KEY = base64.urlsafe_b64encode(bytes(range(32))).decode()


@pytest.mark.parametrize(
    "key", [RAW_KEY, bytes(range(32)), "correct horse battery staple"], ids=["b64", "raw", "pass"]
)
def test_encryption_round_trip_hides_every_secret(path: Path, key: str | bytes) -> None:
    """With a key, tokens and client secret are sealed; the same key reads them back."""
    store = FileStore(path, encryption_key=key)
    store.save_profile(tokens(), meta={"client_id": "demo"}, client_secret="client-SECRET")
    raw = path.read_bytes()
    assert b"SECRET" not in raw
    assert b"demo" in raw  # meta stays readable, for `freshtoken status`
    profile = FileStore(path, encryption_key=key).load_profile()
    assert profile is not None
    assert profile.tokens == tokens()
    assert profile.client_secret == "client-SECRET"


def test_encryption_key_from_the_environment(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """$FRESHTOKEN_ENCRYPTION_KEY is used when no key is passed."""
    monkeypatch.setenv("FRESHTOKEN_ENCRYPTION_KEY", "from the environment")
    FileStore(path).save(tokens(), expected_generation=0)
    assert b"SECRET" not in path.read_bytes()
    monkeypatch.delenv("FRESHTOKEN_ENCRYPTION_KEY")
    with pytest.raises(StoreError, match="is encrypted"):
        FileStore(path).load()
    assert FileStore(path, encryption_key="from the environment").load() is not None


@pytest.mark.parametrize("wrong", ["another passphrase", RAW_KEY[::-1], bytes(32)])
@pytest.mark.parametrize("right", [RAW_KEY, "correct horse battery staple"])
def test_wrong_key_is_a_clear_error(path: Path, right: str, wrong: str | bytes) -> None:
    """A wrong key says so, names the file, and leaves the file alone."""
    FileStore(path, encryption_key=right).save(tokens(), expected_generation=0)
    before = path.read_bytes()
    store = FileStore(path, encryption_key=wrong)
    with pytest.raises(StoreError, match="wrong encryption key") as caught:
        store.load()
    assert str(path) in str(caught.value)
    with pytest.raises(StoreError, match="wrong encryption key"):
        store.save(tokens(2), expected_generation=None)
    assert path.read_bytes() == before


def test_a_sealed_record_moved_to_another_profile_does_not_open(path: Path) -> None:
    """The ciphertext is bound to its profile: copying it into another one is detected."""
    FileStore(path, encryption_key=RAW_KEY).save(tokens(), expected_generation=0)
    document = json.loads(path.read_bytes())
    document["profiles"]["evil"] = document["profiles"]["default"]
    path.write_text(json.dumps(document))
    with pytest.raises(StoreError, match="wrong encryption key, or the record was altered"):
        FileStore(path, profile="evil", encryption_key=RAW_KEY).load()


def test_a_keyless_store_never_rewrites_an_encrypted_profile_in_plaintext(path: Path) -> None:
    """Without the key, save_profile, save and clear over an encrypted profile are refused
    with an error that says how to keep or drop the encryption; the file is untouched."""
    FileStore(path, encryption_key=RAW_KEY).save_profile(
        tokens(1), meta={"client_id": "demo"}, client_secret="client-SECRET"
    )
    before = path.read_bytes()
    keyless = FileStore(path)
    with pytest.raises(StoreError, match="is encrypted, and this store has no key") as caught:
        keyless.save_profile(tokens(2), meta={"client_id": "demo"})
    message = str(caught.value)
    assert str(path) in message
    assert "encryption_key=" in message
    assert "$FRESHTOKEN_ENCRYPTION_KEY" in message
    assert "drop_encryption=True" in message
    for attempt in (lambda: keyless.save(tokens(2), expected_generation=None), keyless.clear):
        with pytest.raises(StoreError, match="is encrypted, and this store has no key"):
            attempt()
    assert path.read_bytes() == before
    assert FileStore(path).profiles()["default"].encrypted


def test_dropping_the_encryption_must_be_asked_for(path: Path) -> None:
    """save_profile(..., drop_encryption=True) replaces the encrypted profile with a plain one,
    keeping nothing of the sealed record."""
    FileStore(path, encryption_key=RAW_KEY).save_profile(
        tokens(1), meta={}, client_secret="old-client-SECRET"
    )
    FileStore(path).save_profile(
        tokens(2), meta={"client_id": "demo"}, client_secret="new", drop_encryption=True
    )
    document = json.loads(path.read_bytes())
    assert "sealed" not in document["profiles"]["default"]
    profile = FileStore(path).load_profile()
    assert profile is not None
    assert profile.tokens == tokens(2)
    assert profile.client_secret == "new"
    assert not FileStore(path).profiles()["default"].encrypted


def test_a_plain_profile_is_sealed_on_the_next_save_with_a_key(path: Path) -> None:
    """Turning encryption on migrates a profile at its next save, keeping its client secret."""
    FileStore(path).save_profile(tokens(1), meta={}, client_secret="client-SECRET")
    store = FileStore(path, encryption_key=RAW_KEY)
    loaded = store.load()
    assert loaded is not None
    store.save(tokens(2), expected_generation=loaded.generation)
    assert b"SECRET" not in path.read_bytes()
    profile = store.load_profile()
    assert profile is not None
    assert profile.client_secret == "client-SECRET"


# -- profiles ---------------------------------------------------------------------------------


def test_profiles_coexist_in_one_file(path: Path) -> None:
    """Saving, clearing or removing one profile leaves the others as they were."""
    work = FileStore(path, profile="work")
    home = FileStore(path, profile="home", encryption_key=RAW_KEY)
    work.save_profile(tokens(1), meta={"token_url": "https://work/t"})
    home.save_profile(tokens(2), meta={"token_url": "https://home/t"})
    work_loaded = work.load()
    assert work_loaded is not None
    work.save(tokens(3), expected_generation=work_loaded.generation)
    info = FileStore(path).profiles()
    assert sorted(info) == ["home", "work"]
    assert info["home"].encrypted
    assert not info["work"].encrypted
    assert info["work"].meta == {"token_url": "https://work/t"}
    assert info["work"].scope == "read write"
    home_loaded = home.load()
    assert home_loaded is not None
    assert home_loaded.tokens == tokens(2)
    work.clear()
    assert home.load() is not None
    assert work.remove_profile()
    assert not work.remove_profile()
    assert sorted(FileStore(path).profiles()) == ["home"]


def test_concurrent_saves_to_different_profiles_lose_nothing(path: Path) -> None:
    """The read-modify-write of one profile never drops another's concurrent save."""
    stores = [FileStore(path, profile=f"p{i}") for i in range(8)]

    def hammer(store: FileStore) -> None:
        generation = 0
        for n in range(15):
            generation = store.save(tokens(n), expected_generation=generation).generation

    threads = [threading.Thread(target=hammer, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in stores:
        loaded = store.load()
        assert loaded is not None
        assert loaded.tokens == tokens(14)


# -- atomic writes ----------------------------------------------------------------------------


def test_every_save_replaces_the_file_and_leaves_no_temporary(path: Path) -> None:
    """A save writes a new file and renames it over the old one (a new inode)."""
    store = FileStore(path)
    store.save(tokens(1), expected_generation=0)
    inode = path.stat().st_ino
    store.save(tokens(2), expected_generation=None)
    assert path.stat().st_ino != inode
    assert sorted(p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")) == []


def test_a_failed_write_leaves_the_old_file_whole(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the write fails (disk full, fsync error), the previous document is intact."""
    store = FileStore(path)
    store.save(tokens(1), expected_generation=0)
    before = path.read_bytes()

    def failing_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(StoreError, match="No space left"):
        store.save(tokens(2), expected_generation=None)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_temporaries_of_a_killed_writer_are_removed_by_the_next(path: Path) -> None:
    """A temp file left by a writer killed mid-write disappears at the next save."""
    store = FileStore(path)
    store.save(tokens(1), expected_generation=0)
    leftover = path.parent / f".{path.name}.deadbeef.tmp"
    leftover.write_text("half a token")
    store.save(tokens(2), expected_generation=None)
    assert not leftover.exists()


# -- locks ------------------------------------------------------------------------------------


@pytest.fixture
def lock_holder(path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the store's refresh lock until its stdin closes."""
    FileStore(path).save(tokens(), expected_generation=0)
    holder = subprocess.Popen(
        [sys.executable, str(WORKER), "hold-lock", str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "locked"
    yield holder
    if holder.poll() is None:
        holder.kill()
    holder.wait()


def test_lock_times_out_with_a_clear_error(path: Path, lock_holder: subprocess.Popen[str]) -> None:
    """While another process refreshes, a wait longer than the timeout raises LockTimeout."""
    with (
        pytest.raises(LockTimeout, match=r"timed out after 0\.2 s") as caught,
        FileStore(path).lock(0.2),
    ):
        pass
    assert str(path) in str(caught.value)
    assert FileStore(path).load() is not None  # reading never needs the lock


def test_a_killed_holder_releases_the_lock(path: Path, lock_holder: subprocess.Popen[str]) -> None:
    """kill -9 of the holder frees the lock at once: the OS releases flock locks."""
    lock_holder.kill()
    lock_holder.wait()
    with FileStore(path).lock(5):
        pass


def test_a_lock_released_by_the_holder_is_taken_at_once(
    path: Path, lock_holder: subprocess.Popen[str]
) -> None:
    """A waiter gets the lock as soon as the other process lets go."""
    assert lock_holder.stdin is not None
    lock_holder.stdin.close()
    with FileStore(path).lock(10):
        pass


@pytest.mark.anyio
async def test_async_lock_can_leave_from_another_worker_thread(path: Path) -> None:
    """alock enters and exits in worker threads that may differ: that must not break it."""
    store = FileStore(path)
    for _ in range(20):
        async with store.alock(5):
            await anyio.sleep(0)
    with store.lock(1):
        pass


@pytest.mark.anyio
async def test_async_manager_on_a_file_store_refreshes_once(path: Path) -> None:
    """Many tasks on an expired FileStore token: one refresh, saved, on asyncio and trio."""
    FileStore(path).save(tokens(1, expires_at=1.0), expected_generation=0)
    calls = 0

    async def refresh(current: TokenSet | None) -> TokenSet:
        nonlocal calls
        calls += 1
        await anyio.sleep(0.01)
        return tokens(2)

    manager = TokenManager(FunctionRefresher(refresh), FileStore(path))
    results: list[TokenSet] = []

    async def ask() -> None:
        results.append(await manager.aget_tokens())

    async with anyio.create_task_group() as group:
        for _ in range(20):
            group.start_soon(ask)
    assert calls == 1
    assert results == [tokens(2)] * 20
    stored = FileStore(path).load()
    assert stored is not None
    assert stored.tokens == tokens(2)


# -- lock files -------------------------------------------------------------------------------


def refresh_lock_files(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.glob(f"{path.name}.*.lock"))


def test_lookups_create_no_lock_file(path: Path) -> None:
    """Reading profiles, and managers asking for the tokens of profiles that have none, leave
    no refresh lock file behind."""
    FileStore(path).save_profile(tokens(1), meta={})
    for name in ["a", "b", "c"]:
        store = FileStore(path, profile=name)
        assert store.load() is None
        assert store.load_profile() is None
        assert "default" in store.profiles()
        with pytest.raises(SessionExpired):
            TokenManager(FunctionRefresher(lambda current: tokens(9)), store).get_tokens()
    assert refresh_lock_files(path) == []


def test_a_lock_taken_for_a_profile_that_does_not_exist_leaves_no_lock_file(path: Path) -> None:
    """The lock of a profile the file does not hold (a logout of an unknown profile) removes
    its lock file as it is let go."""
    FileStore(path).save_profile(tokens(1), meta={})
    ghost = FileStore(path, profile="ghost")
    with ghost.lock(1):
        assert ghost.lock_path.exists()
    assert refresh_lock_files(path) == []


def test_removing_a_profile_removes_its_lock_file(path: Path) -> None:
    """remove_profile() deletes the profile's refresh lock file, and no other."""
    work, home = FileStore(path, profile="work"), FileStore(path, profile="home")
    for store in (work, home):
        store.save_profile(tokens(1), meta={})
        with store.lock(1):
            pass
    assert refresh_lock_files(path) == ["tokens.json.home.lock", "tokens.json.work.lock"]
    assert work.remove_profile()
    assert refresh_lock_files(path) == ["tokens.json.home.lock"]
    with home.lock(1):  # the other profile's lock works as before
        pass


def test_a_profile_removed_under_its_own_lock_loses_the_lock_file_when_let_go(path: Path) -> None:
    """freshtoken logout removes the profile while holding its lock: the lock file stays while
    the lock is held, and goes when it is let go."""
    store = FileStore(path)
    store.save_profile(tokens(1), meta={})
    with store.lock(1):
        assert store.remove_profile()
        assert store.lock_path.exists()
    assert not store.lock_path.exists()


def test_a_lock_held_by_another_process_is_removed_by_that_process(
    path: Path, lock_holder: subprocess.Popen[str]
) -> None:
    """remove_profile() while another process holds the lock leaves the lock file to it; it
    removes the file as it lets go."""
    store = FileStore(path)
    assert store.remove_profile()
    assert store.lock_path.exists()
    assert lock_holder.stdin is not None
    lock_holder.stdin.close()
    assert lock_holder.wait(10) == 0
    assert not store.lock_path.exists()


@posix_only
def test_a_taker_that_locked_a_removed_lock_file_starts_again(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the holder removes the lock file between a taker's open and its flock (simulated by
    removing it at that moment), the taker does not keep the lock of the removed file: it
    locks the file that is at the path."""
    import fcntl

    store = FileStore(path)
    real_flock = fcntl.flock
    removed: list[bool] = []

    def flock_just_after_a_removal(fd: int, operation: int) -> None:
        if operation & fcntl.LOCK_EX and not removed:
            os.unlink(store.lock_path)  # what a holder does as it lets go
            removed.append(True)
        real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock_just_after_a_removal)
    with store.lock(5):
        monkeypatch.undo()
        assert removed
        other = os.open(store.lock_path, os.O_RDWR)  # the file now at the path is held
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(other)


# -- no secret leaks --------------------------------------------------------------------------


def test_reprs_and_errors_show_no_secret(path: Path) -> None:
    """Neither the store, a loaded profile nor a conflict message shows a token or key."""
    store = FileStore(path, encryption_key="passphrase-SECRET")
    store.save_profile(tokens(), meta={}, client_secret="client-SECRET")
    profile = store.load_profile()
    texts = [repr(store), repr(profile), repr(store.load()), repr(store.profiles())]
    try:
        store.save(tokens(3), expected_generation=0)
    except GenerationConflict as error:
        texts.append(str(error))
    assert len(texts) == 5
    assert not any("SECRET" in text for text in texts)
