"""Protected resources: where to log in for a URL (RFC 9728), which resource and scopes to ask
for (RFC 8707, MCP), and what a rejection asks of the client. Sans-I/O, like discovery.

* [`canonical_resource()`][canonical_resource] is the ``resource`` parameter (RFC 8707 section 2)
  for a URL: scheme and host lower-cased, default port, fragment and query dropped, no trailing
  slash (the MCP authorization spec's canonical server URI).
* [`resource_metadata_flow()`][resource_metadata_flow] fetches the resource's metadata (RFC 9728):
  from the ``resource_metadata`` URL of a challenge when there is one, else from the
  path-aware well-known URL (``https://host/.well-known/oauth-protected-resource/path``), then
  the origin's, and last from the challenge of a request to ``url`` without a token. A
  document counts only if its ``resource`` is the URL asked for, or a path
  prefix of it on the same origin (``https://host/mcp`` for ``https://host/mcp/x``), as
  RFC 9728 section 3.3 requires and the MCP SDK accepts; answers over
  ``LARGEST_METADATA`` bytes are refused. Every failure is a
  [`LoginFailed`][freshtoken.LoginFailed] (``resource_metadata_failed``) that says which URLs were
  tried and what each answered.
* [`ResourceChallenge`][] reads a resource server's ``WWW-Authenticate`` (RFC 6750, RFC 9728
  section 5.1): the metadata URL, the scope it wants, the error.
* [`choose_scope()`][choose_scope] and [`step_up_scope()`][step_up_scope]: the challenge's
  scope, else every scope the metadata lists; a step-up asks for the union of what was
  granted and what the ``insufficient_scope`` challenge names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from .._core.challenges import HeaderValues, parse_challenges
from .._core.policy import check_transport, origin_of, read_json
from ..errors import InsecureTransportError, LoginFailed
from .http import Flow

__all__ = [
    "LARGEST_METADATA",
    "ResourceChallenge",
    "ResourceMetadata",
    "canonical_resource",
    "choose_scope",
    "covers",
    "resource_metadata_flow",
    "resource_metadata_urls",
    "step_up_scope",
]

LARGEST_METADATA = 64 * 1024
"""Bytes: metadata documents are a few hundred; more is a broken or hostile server."""

WELL_KNOWN = "/.well-known/oauth-protected-resource"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def canonical_resource(url: str) -> str:
    """The canonical URI of the resource at ``url`` (RFC 8707 section 2, MCP): absolute,
    lower-case scheme and host, no default port, no query, no fragment, no trailing slash.
    Raises ValueError for a URL that is not absolute http(s)."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"not an absolute http(s) URL: {url[:200]!r}")
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    netloc = host if port is None or port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path.rstrip("/"), "", ""))


def covers(resource: str, url: str) -> bool:
    """Whether the resource identifier ``resource`` is ``url`` or a path prefix of it on the
    same origin (both made canonical)."""
    try:
        have, want = canonical_resource(resource), canonical_resource(url)
    except ValueError:
        return False
    return want == have or want.startswith(have + "/")


def resource_metadata_urls(url: str) -> list[str]:
    """The well-known URLs of ``url``'s metadata, in the order they are tried (RFC 9728
    section 3.1: the path-aware one, then the origin's)."""
    canonical = canonical_resource(url)
    parts = urlsplit(canonical)
    origin = f"{parts.scheme}://{parts.netloc}"
    urls = [f"{origin}{WELL_KNOWN}{parts.path}"]
    if parts.path:
        urls.append(f"{origin}{WELL_KNOWN}")
    return urls


@dataclasses.dataclass(frozen=True, slots=True)
class ResourceMetadata:
    """A protected resource's metadata (RFC 9728 section 2), validated. ``raw`` is the whole
    document."""

    resource: str
    authorization_servers: tuple[str, ...]
    scopes_supported: tuple[str, ...] | None = None
    bearer_methods_supported: tuple[str, ...] | None = None
    resource_name: str | None = None
    raw: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_document(
        cls, document: Mapping[str, Any], *, url: str, allow_insecure_http: bool = False
    ) -> ResourceMetadata:
        """Validate a document fetched for the resource at ``url``; raises LoginFailed."""
        resource = document.get("resource")
        if not isinstance(resource, str):
            raise LoginFailed("resource_metadata_failed", "the metadata names no resource")
        if not covers(resource, url):
            raise LoginFailed(
                "resource_mismatch",
                f"the metadata is for resource {_shown(resource)}, not {canonical_resource(url)!r}"
                " (RFC 9728 section 3.3)",
            )
        servers = document.get("authorization_servers")
        if (
            not isinstance(servers, list)
            or not servers
            or not all(isinstance(s, str) for s in servers)
        ):
            raise LoginFailed(
                "resource_metadata_failed",
                f"the metadata of {resource} names no authorization_servers to log in at",
            )
        for server in servers:
            try:
                check_transport(
                    origin_of(server),
                    allow_insecure_http=allow_insecure_http,
                    what="a login",
                )
            except ValueError:
                raise LoginFailed(
                    "resource_metadata_failed",
                    f"the authorization server {_shown(server)} is not an http(s) URL",
                ) from None
            except InsecureTransportError as error:
                raise LoginFailed("resource_metadata_failed", str(error)) from None
        values: dict[str, Any] = {}
        for name in ("scopes_supported", "bearer_methods_supported"):
            items = document.get(name)
            if items is None:
                continue
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise LoginFailed("resource_metadata_failed", f"{name} is not a list of strings")
            values[name] = tuple(items)
        label = document.get("resource_name")
        return cls(
            resource=resource,
            authorization_servers=tuple(servers),
            resource_name=label if isinstance(label, str) else None,
            raw=dict(document),
            **values,
        )

    @property
    def authorization_server(self) -> str:
        """The one to log in at: the first listed (RFC 9728 leaves the choice to the client)."""
        return self.authorization_servers[0]


def resource_metadata_flow(
    url: str, *, metadata_url: str | None = None, allow_insecure_http: bool = False
) -> Flow[ResourceMetadata]:
    """Yields the requests to send; returns the metadata of the resource at ``url``.
    ``metadata_url`` is a challenge's ``resource_metadata``: tried first."""
    try:
        candidates = resource_metadata_urls(url)
    except ValueError:
        raise LoginFailed(
            "resource_metadata_failed", f"the resource {url[:200]!r} is not an http(s) URL"
        ) from None
    if metadata_url is not None:
        try:
            origin_of(metadata_url)
        except ValueError:
            raise LoginFailed(
                "resource_metadata_failed",
                f"the challenge's resource_metadata {_shown(metadata_url)} is not an http(s) URL",
            ) from None
        candidates = [metadata_url, *(u for u in candidates if u != metadata_url)]
    problems: list[str] = []
    mismatch: LoginFailed | None = None
    tried: set[str] = set()
    probed = metadata_url is not None
    while True:
        if not candidates:
            if probed:
                break
            # Nothing at the well-known URLs: the resource's own 401 may name its metadata.
            probed = True
            found = yield from _probe(url, problems)
            if not found or found in tried:
                break
            candidates.append(found)
        candidate = candidates.pop(0)
        tried.add(candidate)
        try:
            check_transport(
                origin_of(candidate),
                allow_insecure_http=allow_insecure_http,
                what="a metadata request",
            )
        except InsecureTransportError as error:
            problems.append(str(error))
            continue
        response = yield httpx.Request("GET", candidate, headers={"Accept": "application/json"})
        where = candidate.split("?", 1)[0]
        if response.status_code != 200:
            problems.append(f"HTTP {response.status_code} from {where}")
            continue
        if len(response.content) > LARGEST_METADATA:
            problems.append(f"{where} answered over {LARGEST_METADATA} bytes")
            continue
        document = read_json(response.content)[0]
        if not isinstance(document, dict):
            problems.append(f"{where} is not a JSON object")
            continue
        try:
            return ResourceMetadata.from_document(
                document, url=url, allow_insecure_http=allow_insecure_http
            )
        except LoginFailed as refused:
            if refused.error == "resource_mismatch":
                mismatch = refused
            problems.append(f"{where}: {refused.description}")
    raise LoginFailed(
        "resource_mismatch" if mismatch is not None else "resource_metadata_failed",
        f"no protected resource metadata for {canonical_resource(url)}: " + "; ".join(problems),
    )


def _probe(url: str, problems: list[str]) -> Flow[str]:
    """The ``resource_metadata`` of the challenge ``url`` answers a request without a token
    with, or "" (no URL: the search ends)."""
    response = yield httpx.Request("GET", url, headers={"Accept": "application/json"})
    found = ResourceChallenge.parse(response.headers.get_list("WWW-Authenticate"))
    if found.resource_metadata is None:
        problems.append(f"{url.split('?', 1)[0]} answered {response.status_code} naming none")
        return ""
    return found.resource_metadata


@dataclasses.dataclass(frozen=True, slots=True)
class ResourceChallenge:
    """What a resource server's Bearer challenge asks (RFC 6750 section 3, RFC 9728 5.1)."""

    error: str | None = None
    scope: str | None = None
    resource_metadata: str | None = None

    @classmethod
    def parse(cls, header: HeaderValues) -> ResourceChallenge:
        """The first Bearer challenge of ``header`` (every line), or an empty one."""
        for challenge in parse_challenges(header):
            if challenge.scheme != "bearer":
                continue
            return cls(
                error=challenge.param("error"),
                scope=_clean_scope(challenge.param("scope")),
                resource_metadata=challenge.param("resource_metadata"),
            )
        return cls()

    @property
    def insufficient_scope(self) -> bool:
        return self.error == "insufficient_scope"


def choose_scope(challenge_scope: str | None, metadata: ResourceMetadata | None) -> str | None:
    """The scope of a first login: the challenge's, else every scope the resource lists, else
    none (the server's default)."""
    if challenge_scope:
        return challenge_scope
    if metadata is not None and metadata.scopes_supported:
        return " ".join(metadata.scopes_supported)
    return None


def step_up_scope(granted: str | None, asked: str | None, challenged: str | None) -> str | None:
    """The scope of a step-up login: what was granted or asked for, with what the
    ``insufficient_scope`` challenge names, in that order, each once. None when the challenge
    adds nothing (a step-up would not help)."""
    have = _words(granted) or _words(asked)
    wanted = _words(challenged)
    added = [scope for scope in wanted if scope not in have]
    if not added:
        return None
    return " ".join([*have, *added])


def _words(scope: str | None) -> list[str]:
    seen: dict[str, None] = {}
    for word in (scope or "").split():
        seen.setdefault(word, None)
    return list(seen)


def _clean_scope(scope: str | None) -> str | None:
    if scope is None:
        return None
    words = [w for w in scope.split() if w.isprintable() and len(w) <= 200]
    return " ".join(words[:64]) or None


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."
