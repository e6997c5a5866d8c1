"""Profiles: named credentials in a [`FileStore`][freshtoken.FileStore], made working again.

A profile holds tokens and, beside them, the refresher they were obtained with, described
([`RefresherSettings`][]: the token endpoint, the client and its authentication, the scope,
the issuer; the client secret or private key with the tokens). ``freshtoken login`` writes
one; so does a [`TokenManager`][freshtoken.TokenManager] over a FileStore whose refresher can
describe itself. This module turns a profile back into a refresher and a manager:

    from freshtoken import FileStore, RefreshPolicy
    from freshtoken.profiles import open_manager

    manager = open_manager(FileStore(profile="work"), policy=RefreshPolicy(leeway=60))

The store only keeps the book (which profiles there are, what each holds); making a manager
out of a profile is here, above both the stores and the engine, so that neither reaches the
other. The command line and the token agent use these functions too.
"""

from __future__ import annotations

from typing import Any

from ._engine.manager import TokenManager
from .errors import StoreError
from .refreshers import ClientCredentials, OAuth2Refresher, RefresherSettings
from .stores.file import SETTING_NAMES, FileStore, Profile

__all__ = [
    "RefresherSettings",
    "close_refresher",
    "open_manager",
    "refresher_of",
    "settings_of",
]


def settings_of(profile: Profile) -> RefresherSettings:
    """The refresher ``profile`` was saved with, described (``.rebuild()`` makes it)."""
    return RefresherSettings(
        {name: value for name, value in profile.meta.items() if name in SETTING_NAMES | {"grant"}},
        client_secret=profile.client_secret,
        private_key=profile.private_key,
    )


def refresher_of(store: FileStore, profile: Profile) -> OAuth2Refresher | ClientCredentials:
    """The refresher ``profile`` (loaded from ``store``) was saved with, a key file read anew.

    Raises [`StoreError`][freshtoken.StoreError] when its settings do not describe one.
    """
    try:
        return settings_of(profile).rebuild()
    except ValueError as error:
        raise StoreError(
            f"profile {store.profile!r} in {store.path} cannot be refreshed: {error}; "
            "run `freshtoken login` again"
        ) from None


def open_manager(store: FileStore, **options: Any) -> TokenManager:
    """A [`TokenManager`][freshtoken.TokenManager] over ``store``'s profile, with the refresher
    it was saved with (by ``freshtoken login``, or from Python by a manager whose refresher
    describes itself). ``options`` go to the manager (``policy=``, ``on_refresh=``...); tokens
    bound to a DPoP key get ``dpop=`` that key's algorithm, which signs with it.

    Raises [`StoreError`][freshtoken.StoreError] if the profile does not exist or names no
    refresher.
    """
    profile = store.load_profile()
    if profile is None:
        raise StoreError(
            f"{store.path} has no profile {store.profile!r}: log in with `freshtoken login`"
            " (or save tokens from Python through a manager over this store)"
        )
    try:
        refresher = settings_of(profile).rebuild()
    except ValueError as error:
        raise StoreError(
            f"token store {store.path}, profile {store.profile!r} cannot be refreshed: {error}."
            " It was saved without its refresher's settings (by a refresher that cannot describe"
            " itself, or by an older freshtoken): log in again with `freshtoken login`, or save"
            " it from Python through a manager with an OAuth2Refresher"
        ) from None
    if profile.tokens is not None and profile.tokens.dpop_key is not None:
        # Tokens bound to a DPoP key are refreshed with it: the key is stored with them.
        options.setdefault("dpop", profile.tokens.dpop_key.algorithm)
    return TokenManager(refresher, store, **options)


def close_refresher(refresher: object) -> None:
    """Close ``refresher``'s connections, if it has any (a rebuilt one owns its client)."""
    close = getattr(refresher, "close", None)
    if close is not None:
        close()
