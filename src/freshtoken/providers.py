"""Presets for the providers people use: where they are, and how they depart from the RFCs.

Each function returns a [`Provider`][freshtoken.Provider], accepted wherever an issuer URL or a
[`ServerMetadata`][freshtoken.ServerMetadata] is: [`discover()`][freshtoken.discover],
[`browser_login()`][freshtoken.browser_login], [`device_login()`][freshtoken.device_login],
[`OAuth2Refresher.from_issuer()`][freshtoken.OAuth2Refresher.from_issuer] (and so
``TokenManager.login``), the BFF (``BFF(provider=...)``) and ``freshtoken login --provider``.
A preset is data: the issuer to discover, or the endpoints of a provider without discovery,
and its [`Quirks`][freshtoken.Quirks]. Every preset takes ``base_url=`` to point it elsewhere
(a test server, a sovereign cloud, an enterprise host); [`get()`][get] makes one by name, for
configuration files.

The facts each preset rests on are cited next to it; the test bed
(``freshtoken serve --as NAME``) reproduces each provider's wire behaviour from the same pages.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from ._core.quirks import Quirks
from ._oauth.discovery import ServerMetadata, adiscover, discover
from ._oauth.http import Verify

__all__ = [
    "NAMES",
    "Provider",
    "Quirks",
    "auth0",
    "get",
    "github",
    "gitlab",
    "google",
    "hydra",
    "keycloak",
    "microsoft",
    "notion",
    "okta",
    "salesforce",
    "slack",
]

_DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


@dataclasses.dataclass(frozen=True, slots=True)
class Provider:
    """One provider's settings: ``issuer`` (discovered when ``endpoints`` is empty; else the
    name the fixed ``endpoints`` are given under), its [`Quirks`][freshtoken.Quirks], and the
    preset ``name`` and ``settings`` that [`get()`][freshtoken.providers.get] rebuilds it from
    (a profile or a BFF configuration stores those)."""

    name: str
    issuer: str
    quirks: Quirks = dataclasses.field(default_factory=Quirks)
    endpoints: Mapping[str, str] = dataclasses.field(default_factory=dict)
    auth_methods: tuple[str, ...] = ("client_secret_basic", "client_secret_post")
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def discovery(self) -> bool:
        """Whether the provider publishes metadata (else its endpoints are in the preset)."""
        return not self.endpoints

    def metadata(
        self, *, verify: Verify = True, allow_insecure_http: bool = False
    ) -> ServerMetadata:
        """The provider's metadata (discovered, cached) with its quirks attached."""
        if self.discovery:
            found = discover(self.issuer, verify=verify, allow_insecure_http=allow_insecure_http)
            return self._with_quirks(found)
        return self._fixed(allow_insecure_http)

    async def ametadata(
        self, *, verify: Verify = True, allow_insecure_http: bool = False
    ) -> ServerMetadata:
        """[`metadata()`][metadata] for async code."""
        if self.discovery:
            found = await adiscover(
                self.issuer, verify=verify, allow_insecure_http=allow_insecure_http
            )
            return self._with_quirks(found)
        return self._fixed(allow_insecure_http)

    def _with_quirks(self, metadata: ServerMetadata) -> ServerMetadata:
        return dataclasses.replace(metadata, quirks=self.quirks, provider=self.name)

    def _fixed(self, allow_insecure_http: bool) -> ServerMetadata:
        grants = ["authorization_code", "refresh_token"]
        if "device_authorization_endpoint" in self.endpoints:
            grants.append(_DEVICE_GRANT)
        document = {
            "issuer": self.issuer,
            **self.endpoints,
            "grant_types_supported": grants,
            "token_endpoint_auth_methods_supported": list(self.auth_methods),
            "code_challenge_methods_supported": ["S256"],
        }
        metadata = ServerMetadata.from_document(
            document, issuer=self.issuer, allow_insecure_http=allow_insecure_http
        )
        return self._with_quirks(metadata)

    def __hash__(self) -> int:  # equal providers share name and issuer
        return hash((self.name, self.issuer, self.quirks))

    def replace(self, **changes: Any) -> Provider:
        """The same provider with other fields (``quirks=...``)."""
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:
        return f"Provider({self.name!r}, issuer={self.issuer!r})"


def _base(base_url: str | None, default: str) -> str:
    return (base_url or default).rstrip("/")


def google(*, base_url: str | None = None) -> Provider:
    """Google (OpenID Connect). A refresh token comes only with ``access_type=offline``, again
    only with ``prompt=consent``; a refresh answer carries none (the old one stays valid).
    https://developers.google.com/identity/protocols/oauth2/web-server#offline"""
    return Provider(
        "google",
        _base(base_url, "https://accounts.google.com"),
        Quirks(
            reused_refresh_token="accepted",
            authorization_params={"access_type": "offline", "prompt": "consent"},
        ),
        settings={"base_url": base_url} if base_url else {},
    )


def microsoft(tenant: str = "common", *, base_url: str | None = None) -> Provider:
    """Microsoft Entra ID (v2.0 endpoints). ``tenant`` is ``common``, ``organizations``,
    ``consumers``, a tenant id or domain; ``base_url`` a national cloud
    (``https://login.microsoftonline.us``...). Refreshes carry ``scope``; the refresh token
    rotates but the old one keeps working.
    https://learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow#refresh-the-access-token,
    https://learn.microsoft.com/entra/identity-platform/refresh-tokens"""
    base = _base(base_url, "https://login.microsoftonline.com")
    return Provider(
        "microsoft",
        f"{base}/{tenant}/v2.0",
        Quirks(
            reused_refresh_token="accepted",
            refresh_sends_scope=True,
            offline_scope="offline_access",
        ),
        settings=_settings(tenant=tenant, base_url=base_url),
    )


def github(*, base_url: str | None = None) -> Provider:
    """GitHub (OAuth apps, and GitHub Apps whose user tokens expire). No discovery; answers
    form-encoded unless asked for JSON, errors with status 200; a refresh token is single-use.
    ``base_url`` is a GitHub Enterprise Server host.
    https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/refreshing-user-access-tokens,
    https://docs.github.com/en/apps/oauth-apps/building-oauth-apps/authorizing-oauth-apps"""
    base = _base(base_url, "https://github.com")
    return Provider(
        "github",
        base,
        Quirks(reused_refresh_token="refused"),
        endpoints={
            "authorization_endpoint": f"{base}/login/oauth/authorize",
            "token_endpoint": f"{base}/login/oauth/access_token",
            "device_authorization_endpoint": f"{base}/login/device/code",
        },
        auth_methods=("client_secret_post", "none"),
        settings=_settings(base_url=base_url),
    )


def gitlab(host: str = "gitlab.com", *, base_url: str | None = None) -> Provider:
    """GitLab.com or a self-managed ``host``; refresh tokens rotate.
    https://docs.gitlab.com/api/oauth2/"""
    return Provider(
        "gitlab",
        _base(base_url, f"https://{host}"),
        Quirks(reused_refresh_token="refused"),
        settings=_settings(host=None if host == "gitlab.com" else host, base_url=base_url),
    )


def okta(
    domain: str, *, authorization_server: str | None = None, base_url: str | None = None
) -> Provider:
    """Okta: the org authorization server, or a custom one (``authorization_server="default"``).
    A refresh token needs ``offline_access``.
    https://developer.okta.com/docs/guides/refresh-tokens/main/"""
    base = _base(base_url, f"https://{domain}")
    issuer = base if authorization_server is None else f"{base}/oauth2/{authorization_server}"
    return Provider(
        "okta",
        issuer,
        Quirks(offline_scope="offline_access"),
        settings=_settings(
            domain=domain, authorization_server=authorization_server, base_url=base_url
        ),
    )


def auth0(domain: str, *, audience: str | None = None, base_url: str | None = None) -> Provider:
    """Auth0: ``audience`` is the API the access token is for (without it the token is only
    good for /userinfo); a refresh token needs ``offline_access``. The issuer ends with "/".
    https://auth0.com/docs/secure/tokens/refresh-tokens/get-refresh-tokens"""
    return Provider(
        "auth0",
        _base(base_url, f"https://{domain}") + "/",
        Quirks(
            offline_scope="offline_access",
            authorization_params={} if audience is None else {"audience": audience},
        ),
        settings=_settings(domain=domain, audience=audience, base_url=base_url),
    )


def keycloak(base_url: str, realm: str, *, keep_alive: bool = False) -> Provider:
    """Keycloak (``base_url`` with ``/auth`` for versions before 17). ``keep_alive``
    refreshes before the refresh token's own lifetime (``refresh_expires_in``, the SSO session
    idle timeout) runs out. https://www.keycloak.org/docs/latest/server_admin/#_timeouts"""
    return Provider(
        "keycloak",
        f"{base_url.rstrip('/')}/realms/{realm}",
        Quirks(keep_alive=keep_alive),
        settings=_settings(base_url=base_url, realm=realm, keep_alive=keep_alive or None),
    )


SALESFORCE_SESSION_TIMEOUT = 7200.0
"""Seconds: Salesforce's default session timeout (2 hours), the lifetime of an access token
whose answer says nothing of it."""


def salesforce(
    instance: str = "login",
    *,
    default_lifetime: float = SALESFORCE_SESSION_TIMEOUT,
    base_url: str | None = None,
) -> Provider:
    """Salesforce: ``instance`` is ``login``, ``test`` (sandboxes) or a My Domain host. The
    answer has no ``expires_in``: the access token is taken to live ``default_lifetime``
    seconds (the org's session timeout), and a 401 refreshes it sooner.
    https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_refresh_token_flow.htm"""
    host = instance if "." in instance else f"{instance}.salesforce.com"
    return Provider(
        "salesforce",
        _base(base_url, f"https://{host}"),
        Quirks(reused_refresh_token="accepted", default_lifetime=default_lifetime),
        settings=_settings(
            instance=None if instance == "login" else instance,
            default_lifetime=(
                None if default_lifetime == SALESFORCE_SESSION_TIMEOUT else default_lifetime
            ),
            base_url=base_url,
        ),
    )


def slack(*, base_url: str | None = None) -> Provider:
    """Slack (OAuth v2 with token rotation on): errors come with status 200 and ``ok: false``;
    a refresh token is single-use. https://docs.slack.dev/authentication/using-token-rotation"""
    base = _base(base_url, "https://slack.com")
    return Provider(
        "slack",
        base,
        Quirks(reused_refresh_token="refused"),
        endpoints={
            "authorization_endpoint": f"{base}/oauth/v2/authorize",
            "token_endpoint": f"{base}/api/oauth.v2.access",
        },
        auth_methods=("client_secret_post",),
        settings=_settings(base_url=base_url),
    )


def notion(*, base_url: str | None = None) -> Provider:
    """Notion public integrations: HTTP Basic client authentication; each refresh returns a
    new refresh token. https://developers.notion.com/reference/refresh-a-token"""
    base = _base(base_url, "https://api.notion.com")
    return Provider(
        "notion",
        base,
        Quirks(reused_refresh_token="refused", authorization_params={"owner": "user"}),
        endpoints={
            "authorization_endpoint": f"{base}/v1/oauth/authorize",
            "token_endpoint": f"{base}/v1/oauth/token",
        },
        auth_methods=("client_secret_basic",),
        settings=_settings(base_url=base_url),
    )


def hydra(issuer: str, *, base_url: str | None = None) -> Provider:
    """Ory Hydra or Ory Network at ``issuer``: refresh tokens are single-use and a reuse
    revokes the whole chain; ``offline_access`` asks for one.
    https://www.ory.sh/docs/hydra/guides/oauth2-token-refresh"""
    return Provider(
        "hydra",
        _base(base_url, issuer),
        Quirks(reused_refresh_token="refused", offline_scope="offline_access"),
        settings=_settings(issuer=issuer, base_url=base_url),
    )


def _settings(**values: Any) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not None}


_PRESETS: dict[str, Callable[..., Provider]] = {
    "auth0": auth0,
    "github": github,
    "gitlab": gitlab,
    "google": google,
    "hydra": hydra,
    "keycloak": keycloak,
    "microsoft": microsoft,
    "notion": notion,
    "okta": okta,
    "salesforce": salesforce,
    "slack": slack,
}
NAMES: tuple[str, ...] = tuple(_PRESETS)
"""The names [`get()`][get] knows."""


def get(name: str, **settings: Any) -> Provider:
    """The preset called ``name`` with ``settings`` (its function's arguments):
    ``get("keycloak", base_url=..., realm="demo")``. ValueError names the presets, or says
    which setting is wrong."""
    preset = _PRESETS.get(name.lower())
    if preset is None:
        raise ValueError(f"no provider preset {name[:40]!r}: one of {', '.join(NAMES)}")
    try:
        return preset(**settings)
    except TypeError as error:
        raise ValueError(f"provider {name}: {error}") from None
