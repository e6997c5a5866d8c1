"""The quirks every provider's client meets, handled by the core for everyone (issue 17, §2).

Each test runs against the test bed's emulation of the provider whose documentation the quirk
comes from, over real TCP; where the quirk is handled without a preset, the test uses a plain
refresher (only the token URL) to prove it.
"""

from __future__ import annotations

import threading
from typing import Any

import httpx
import jwt
import pytest

import freshtoken
import freshtoken.httpx
from freshtoken import MemoryStore, RefreshFailed, SessionExpired, TokenManager, TokenSet
from freshtoken._core.policy import interpret_token_response
from freshtoken._logins import flows  # the free logins, deprecated in the public API
from freshtoken._oauth.id_tokens import _key_for
from freshtoken.refreshers import FunctionRefresher

from .conftest import BedFactory

SECRET: Any = {"client_id": "demo", "client_secret": "demo-secret"}


def manager_for(refresher: Any, clock: Any, **options: Any) -> TokenManager:
    retry = freshtoken.RetryPolicy(attempts=3, initial=0.001, maximum=0.01)
    return TokenManager(refresher, MemoryStore(), clock=clock, retry=retry, **options)


def test_a_refresh_answer_without_a_refresh_token_keeps_the_old_one(bed: BedFactory) -> None:
    """Google answers a refresh with no refresh_token: the one held stays, refresh after refresh."""
    google = bed("google")
    manager = manager_for(google.refresher(), google.server.clock)
    first = google.login()
    manager.set_tokens(first)
    for _ in range(3):
        google.server.advance(3600)
        tokens = manager.get_tokens()
        assert tokens.refresh_token == first.refresh_token
    assert google.server.stats()["refreshes"] == 3


def test_no_expires_in_takes_the_presets_lifetime_and_a_401_still_refreshes(
    bed: BedFactory,
) -> None:
    """Salesforce sends no expires_in and an opaque token: the preset's session timeout gives
    the expiry; a server that ends the session sooner is answered by the 401 path."""
    salesforce = bed("salesforce", access_ttl=600.0)
    refresher = salesforce.refresher()
    tokens = salesforce.login(refresher)
    assert tokens.expires_at == pytest.approx((tokens.obtained_at or 0) + 7200)
    manager = manager_for(refresher, salesforce.server.clock)
    manager.set_tokens(tokens)
    salesforce.server.advance(601)
    with httpx.Client(auth=freshtoken.httpx.TokenAuth(manager)) as client:
        assert client.get(f"{salesforce.server.api_url}/me").status_code == 200
    refreshed = manager.get_tokens()
    assert refreshed.access_token != tokens.access_token
    assert refreshed.refresh_token == tokens.refresh_token  # no rotation: the answer has none
    assert refreshed.expires_at == pytest.approx((refreshed.obtained_at or 0) + 7200)
    assert salesforce.server.stats()["refreshes"] == 1


def test_salesforce_issued_at_in_milliseconds_is_not_an_expiry() -> None:
    """issued_at is the server's clock in ms: read as seconds it would be a date in 57,000 AD."""
    answer = {"access_token": "00D!x", "issued_at": "1765000000000", "instance_url": "https://x"}
    tokens = TokenSet.from_response(answer, sent_at=1000.0, default_lifetime=7200)
    assert tokens.expires_at == 8200.0
    assert TokenSet.from_response(answer, sent_at=1000.0).expires_at is None


def test_a_form_encoded_answer_is_read(bed: BedFactory) -> None:
    """GitHub answers form-encoded unless asked for JSON: such an answer is read, not a
    malformed one whose retry would replay the rotated refresh token."""
    github = bed("github")
    tokens = TokenSet.from_response(github.server.login(), sent_at=github.server.clock())
    plain = freshtoken.OAuth2Refresher(
        github.server.url + "/login/oauth/access_token",
        **SECRET,
        auth_method="client_secret_post",
        headers={"Accept": "*/*"},  # as a client that does not ask for JSON
    )
    new = plain.refresh(tokens, github.server.clock)
    assert new.refresh_token not in (None, tokens.refresh_token)
    assert new.expires_at == pytest.approx((new.obtained_at or 0) + 28800)
    assert github.server.stats()["reuse_detections"] == 0


def test_accept_json_is_always_sent(bed: BedFactory) -> None:
    """freshtoken asks for JSON; GitHub then answers JSON (it decides by the Accept header)."""
    request = freshtoken.OAuth2Refresher("https://github.com/token", **SECRET).build_request(
        TokenSet("a", refresh_token="r")
    )
    assert request.headers["Accept"] == "application/json"


@pytest.mark.parametrize(
    ("provider", "code"), [("github", "invalid_grant"), ("slack", "invalid_grant")]
)
def test_an_error_with_status_200_ends_the_session(
    bed: BedFactory, provider: str, code: str
) -> None:
    """GitHub's bad_refresh_token and Slack's invalid_refresh_token come with HTTP 200: they
    are invalid_grant. The store is cleared, the hook runs once, and the dead refresh token is
    presented once, not again and again."""
    emulation = bed(provider)
    expired: list[BaseException] = []
    manager = manager_for(
        emulation.refresher(), emulation.server.clock, on_session_expired=expired.append
    )
    manager.set_tokens(emulation.login())
    emulation.server.revoke("demo")
    emulation.server.advance(50_000)
    with pytest.raises(SessionExpired) as caught:
        manager.refresh()
    assert (caught.value.error, caught.value.status) == (code, 200)
    for _ in range(2):
        with pytest.raises(SessionExpired):
            manager.refresh()
    assert len(expired) == 1
    assert manager.store.load() is None
    assert emulation.server.stats()["token_requests_by_grant"]["refresh_token"] == 1


def test_incorrect_client_credentials_is_invalid_client(bed: BedFactory) -> None:
    github = bed("github")
    tokens = github.login()
    wrong = freshtoken.OAuth2Refresher.from_issuer(
        github.provider, client_id="demo", client_secret="not-the-secret"
    )
    with pytest.raises(SessionExpired) as caught:
        wrong.refresh(tokens, github.server.clock)
    assert caught.value.error == "invalid_client"
    assert "incorrect_client_credentials" in str(caught.value)


def test_an_unreadable_2xx_on_a_rotating_server_is_never_replayed(bed: BedFactory) -> None:
    """A 2xx answer proves the refresh token was spent (invariant 14): on GitHub, whose
    refresh tokens are single-use, the session ends at once instead of presenting it again."""
    github = bed("github")
    expired: list[BaseException] = []
    manager = manager_for(
        github.refresher(), github.server.clock, on_session_expired=expired.append
    )
    manager.set_tokens(github.login())
    github.server.inject("malformed_json", 3)
    github.server.advance(30_000)
    with pytest.raises(SessionExpired) as caught:
        manager.get_tokens()
    assert caught.value.error == "refresh_token_spent"
    assert github.server.stats()["token_requests_by_grant"]["refresh_token"] == 1
    assert len(expired) == 1


def test_an_unreadable_2xx_is_retried_where_the_refresh_token_stays_valid(
    bed: BedFactory,
) -> None:
    """Google's refresh token is not spent by a refresh: the lost answer is asked for again."""
    google = bed("google")
    manager = manager_for(google.refresher(), google.server.clock)
    manager.set_tokens(google.login())
    google.server.inject("malformed_json", 1)
    google.server.advance(3600)
    assert manager.get_tokens().refresh_token
    assert google.server.stats()["token_requests_by_grant"]["refresh_token"] == 2


def test_a_refresher_that_saw_rotation_treats_an_unreadable_2xx_as_spent(
    oauth_server: Any,
) -> None:
    """Without a preset: once a server has rotated a refresh token, it is known to rotate."""
    refresher = freshtoken.OAuth2Refresher(oauth_server.token_url, **SECRET)
    tokens = TokenSet.from_response(oauth_server.login(), sent_at=oauth_server.clock())
    tokens = refresher.refresh(tokens, oauth_server.clock)  # rotated: now it is known
    oauth_server.inject("malformed_json", 1)
    with pytest.raises(SessionExpired) as caught:
        refresher.refresh(tokens, oauth_server.clock)
    assert caught.value.error == "refresh_token_spent"


def test_a_lost_refresh_race_adopts_the_winners_tokens() -> None:
    """Hydra answers invalid_request "...multiple concurrent requests..." to the loser of a
    race: the store is read again and the winner's tokens used; no second refresh."""
    store = MemoryStore()
    store.save(TokenSet("a0", refresh_token="r0", expires_at=0.0), expected_generation=0)
    calls: list[TokenSet | None] = []

    def lose(current: TokenSet | None) -> TokenSet:
        calls.append(current)
        held = store.load()
        assert held is not None
        winners = TokenSet("a1", refresh_token="r1", expires_at=10**10)
        store.save(winners, expected_generation=held.generation)
        raise RefreshFailed("refresh_conflict", "multiple concurrent requests", status=400)

    manager = TokenManager(FunctionRefresher(lose), store)
    assert manager.get_tokens().access_token == "a1"
    assert len(calls) == 1


def test_hydras_concurrency_refusal_is_a_refresh_conflict() -> None:
    body = (
        b'{"error":"invalid_request","error_description":"Failed to refresh token because of '
        b'multiple concurrent requests using the same token which is not allowed."}'
    )
    with pytest.raises(RefreshFailed) as caught:
        interpret_token_response(400, body)
    assert caught.value.error == "refresh_conflict"


@pytest.mark.parametrize(
    ("error", "code", "outcome"),
    [
        ("invalid_grant", 70008, SessionExpired),
        ("invalid_grant", 50173, SessionExpired),
        ("invalid_grant", 700082, SessionExpired),
        ("invalid_grant", 50076, SessionExpired),
        ("interaction_required", 50079, SessionExpired),
        ("invalid_grant", 50196, RefreshFailed),  # a loop the server broke off: back off
        ("temporarily_unavailable", 50196, RefreshFailed),
    ],
)
def test_entra_aadsts_codes(error: str, code: int, outcome: type[Exception]) -> None:
    """Entra's own codes decide where its RFC code is too coarse."""
    body = (
        f'{{"error":"{error}","error_description":"AADSTS{code}: something happened.",'
        f'"error_codes":[{code}]}}'
    ).encode()
    with pytest.raises(outcome):
        interpret_token_response(400, body)


def test_throttling_is_transient_even_as_invalid_grant() -> None:
    body = b'{"error":"invalid_grant","error_description":"AADSTS50196: request throttled"}'
    with pytest.raises(RefreshFailed):
        interpret_token_response(400, body)


def test_entra_refreshes_carry_scope_with_the_preset(bed: BedFactory) -> None:
    """Entra refuses a refresh without scope (AADSTS900144); the preset always sends it."""
    entra = bed("microsoft")
    manager = manager_for(entra.refresher(), entra.server.clock)
    manager.set_tokens(entra.login())
    entra.server.advance(3600)
    assert manager.get_tokens().refresh_token
    stats = entra.server.stats()
    assert (stats["refreshes"], stats["token_errors"]) == (1, 0)


def test_a_plain_refresher_learns_to_send_scope_from_aadsts900144(bed: BedFactory) -> None:
    """Without the preset (the documented set-up: only the token URL), the first refusal
    teaches the refresher to send the scope granted at login; the session survives."""
    entra = bed("microsoft")
    tokens = entra.login()
    plain = freshtoken.OAuth2Refresher(entra.provider.metadata().token_endpoint or "", **SECRET)
    refreshed = plain.refresh(tokens, entra.server.clock)
    again = plain.refresh(refreshed, entra.server.clock)
    assert again.refresh_token
    stats = entra.server.stats()
    assert (stats["refreshes"], stats["token_errors"]) == (2, 1)


def test_entra_multi_tenant_discovery_and_id_token(bed: BedFactory) -> None:
    """common's discovery names {tenantid}; the ID token names the real tenant (tid), and
    both are accepted as this issuer's."""
    entra = bed("microsoft")
    metadata = freshtoken.discover(entra.provider)
    assert metadata.issuer == f"{entra.server.url}/{{tenantid}}/v2.0"
    tokens = entra.login()
    claims = freshtoken.verify_id_token(
        tokens.id_token or "", issuer=metadata, client_id="demo", clock=entra.server.clock
    )
    assert claims["tid"] in claims["iss"]


def test_a_key_named_only_by_x5t_is_found() -> None:
    """An ID token header with x5t and no kid (AD FS, older Entra tokens)."""
    keys = jwt.PyJWKSet.from_dict(
        {"keys": [{"kty": "oct", "k": "c2VjcmV0", "x5t": "thumb", "kid": "other", "alg": "HS256"}]}
    )
    assert _key_for(keys, "thumb", "HS256") is not None
    assert _key_for(keys, "nothing", "HS256") is None


def test_google_device_flow_reads_verification_url(bed: BedFactory) -> None:
    google = bed("google", device_interval=0)
    _device_login(google)


def test_github_device_flow_polls_through_200_authorization_pending(bed: BedFactory) -> None:
    """GitHub answers the pending polls with HTTP 200 and error=authorization_pending."""
    github = bed("github", device_interval=0)
    _device_login(github, polls_before=3)
    assert github.server.stats()["token_requests_by_grant"]["device_code"] == 4


def _device_login(emulation: Any, polls_before: int = 1) -> None:
    prompts: list[freshtoken.DevicePrompt] = []
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == polls_before + 1:
            emulation.server.browser().approve_device(
                prompts[0].verification_uri, prompts[0].user_code
            )

    tokens = flows.device_login(
        emulation.provider,
        client_id="demo",
        client_secret="demo-secret",
        scope="read",
        on_prompt=prompts.append,
        sleep=sleep,
    )
    assert tokens.access_token
    assert prompts[0].verification_uri.startswith(emulation.server.url)


def test_github_slow_down_takes_the_interval_it_gives() -> None:
    """slow_down with interval: the next poll waits that long (GitHub sends it)."""
    from freshtoken._logins.flows import DeviceAuthorization
    from freshtoken._oauth.discovery import ServerMetadata

    metadata = ServerMetadata(
        "https://github.com",
        token_endpoint="https://github.com/t",
        device_authorization_endpoint="https://github.com/d",
        grant_types_supported=("urn:ietf:params:oauth:grant-type:device_code",),
    )
    device = DeviceAuthorization(metadata, freshtoken.ClientAuth("c"))
    answer = httpx.Response(200, content=b"error=slow_down&interval=15")
    assert device.outcome(answer, sent_at=0.0) is None
    assert device.interval == 15.0


def test_keycloak_keep_alive_refreshes_before_the_session_idles_out(bed: BedFactory) -> None:
    """refresh_expires_in (SSO session idle, 30 min) outlives no idle period: with keep_alive
    the refresh falls due at four fifths of it, while the access token (5 min) has long
    expired; a request then refreshes. Without it, the session idles out: "Session not
    active" is the end of the session."""
    keycloak = bed("keycloak")
    keep = freshtoken.OAuth2Refresher.from_issuer(
        freshtoken.providers.keycloak(keycloak.server.url, "demo", keep_alive=True), **SECRET
    )
    manager = manager_for(keep, keycloak.server.clock)
    tokens = keycloak.login(keep)
    manager.set_tokens(tokens)
    keycloak.server.advance(300)
    refreshed = manager.get_tokens()
    assert refreshed.refresh_at == pytest.approx((refreshed.obtained_at or 0) + 0.8 * 1800)
    keycloak.server.advance(1801)
    with pytest.raises(SessionExpired) as caught:
        manager.get_tokens()
    assert caught.value.description == "Session not active"


def test_keep_alive_sets_the_refresh_before_the_refresh_token_ends() -> None:
    answer = {
        "access_token": "a",
        "expires_in": 300,
        "refresh_token": "r",
        "refresh_expires_in": 1800,
    }
    assert TokenSet.from_response(answer, sent_at=0.0, keep_alive=True).refresh_at == 1440.0
    assert TokenSet.from_response(answer, sent_at=0.0).refresh_at is None
    offline = {**answer, "refresh_expires_in": 0}  # Keycloak's offline tokens: no limit
    assert TokenSet.from_response(offline, sent_at=0.0, keep_alive=True).refresh_at is None


def test_notion_revokes_the_previous_access_token_and_requests_in_flight_retry(
    bed: BedFactory,
) -> None:
    """Notion (and GitHub, Hydra) revoke the previous access token at each refresh: a request
    that went out with it gets 401 and is retried with the new token, without a refresh."""
    notion = bed("notion")
    manager = manager_for(notion.refresher(), notion.server.clock)
    old = notion.login()
    manager.set_tokens(old)
    notion.server.advance(3600)
    new = manager.get_tokens()
    assert manager.handle_rejection(old) == new
    with httpx.Client() as client:
        gone = client.get(
            f"{notion.server.api_url}/me", headers={"Authorization": f"Bearer {old.access_token}"}
        )
    assert gone.status_code == 401
    assert notion.server.stats()["refreshes"] == 1


def test_several_threads_share_one_refresh_on_a_quirky_provider(bed: BedFactory) -> None:
    github = bed("github")
    manager = manager_for(github.refresher(), github.server.clock)
    manager.set_tokens(github.login())
    github.server.advance(30_000)
    start = threading.Barrier(8)
    results: list[str] = []

    def call() -> None:
        start.wait()
        results.append(manager.get_tokens().access_token)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1
    assert github.server.stats()["refreshes"] == 1
