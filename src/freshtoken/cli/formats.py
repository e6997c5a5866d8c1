"""How ``freshtoken token`` prints a token for the program that asked.

* ``plain``: the access token and a newline (``$(freshtoken token)``).
* ``header``: ``Authorization: Bearer ...`` (``curl -H @<(freshtoken token --format header)``).
* ``json``: ``access_token``, ``token_type``, ``expires_at`` (RFC 3339), ``expires_in`` and
  ``scope``.
* ``env``: ``export NAME='value'`` lines that any POSIX shell can ``eval`` or source, whatever
  bytes the token holds.
* ``k8s-exec``: a Kubernetes ``ExecCredential`` (``client.authentication.k8s.io/v1``, or the
  ``v1beta1`` that an older kubectl asks for in ``$KUBERNETES_EXEC_INFO``).

Expiry in ``k8s-exec`` is the moment a refresh falls due, not the token's last second: kubectl
reuses a credential until its ``expirationTimestamp`` and then runs the command again, which
is exactly when freshtoken would refresh. Everything here is a pure function of its inputs.
"""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Mapping
from typing import Any

from .._core.clock import rfc3339
from .._core.policy import read_json
from .._core.tokens import TokenSet

__all__ = [
    "ENV_NAMES",
    "EXEC_CREDENTIAL_VERSIONS",
    "FORMATS",
    "render",
    "rfc3339",
]

FORMATS = ("plain", "header", "json", "env", "k8s-exec")
EXEC_CREDENTIAL_VERSIONS = (
    "client.authentication.k8s.io/v1",
    "client.authentication.k8s.io/v1beta1",
)
# What the ``env`` format exports, in this order.
ENV_NAMES = {
    "access_token": "FRESHTOKEN_ACCESS_TOKEN",
    "token_type": "FRESHTOKEN_TOKEN_TYPE",
    "expires_at": "FRESHTOKEN_EXPIRES_AT",
    "scope": "FRESHTOKEN_SCOPE",
}


def render(
    format_name: str,
    tokens: TokenSet,
    *,
    now: float,
    refresh_due_at: float | None = None,
    exec_info: str | None = None,
) -> str:
    """The text to print for ``tokens`` in ``format_name``, ending with a newline.

    ``refresh_due_at`` is when the token should be replaced (kubectl's cache expiry);
    ``exec_info`` is ``$KUBERNETES_EXEC_INFO`` as kubectl set it, if it did.
    """
    if format_name == "plain":
        return tokens.access_token + "\n"
    if format_name == "header":
        return f"Authorization: {tokens.authorization}\n"
    if format_name == "json":
        return json.dumps(_json_document(tokens, now), indent=2) + "\n"
    if format_name == "env":
        return _env_lines(tokens)
    if format_name == "k8s-exec":
        return json.dumps(_exec_credential(tokens, refresh_due_at, exec_info), indent=2) + "\n"
    raise ValueError(f"unknown token format {format_name!r}: one of {', '.join(FORMATS)}")


def _json_document(tokens: TokenSet, now: float) -> dict[str, Any]:
    expires_at = tokens.expires_at
    return {
        "access_token": tokens.access_token,
        "token_type": tokens.token_type,
        "expires_at": None if expires_at is None else rfc3339(expires_at),
        "expires_in": None if expires_at is None else max(0, math.floor(expires_at - now)),
        "scope": tokens.scope,
    }


def _env_lines(tokens: TokenSet) -> str:
    values = {
        "access_token": tokens.access_token,
        "token_type": tokens.token_type,
        "expires_at": None if tokens.expires_at is None else rfc3339(tokens.expires_at),
        "scope": tokens.scope,
    }
    lines = []
    for field, name in ENV_NAMES.items():
        value = values[field]
        if value is None:
            lines.append(f"unset {name}")  # a stale value from an earlier eval must not linger
        else:
            lines.append(f"export {name}={shlex.quote(value)}")
    return "\n".join(lines) + "\n"


def _exec_credential(
    tokens: TokenSet, refresh_due_at: float | None, exec_info: str | None
) -> dict[str, Any]:
    status: dict[str, Any] = {"token": tokens.access_token}
    expiry = refresh_due_at if refresh_due_at is not None else tokens.expires_at
    if expiry is not None:
        status["expirationTimestamp"] = rfc3339(expiry)
    return {
        "apiVersion": _exec_api_version(exec_info),
        "kind": "ExecCredential",
        "status": status,
    }


def _exec_api_version(exec_info: str | None) -> str:
    """The ExecCredential version kubectl asked for (v1 when it did not say)."""
    if not exec_info:
        return EXEC_CREDENTIAL_VERSIONS[0]
    request, problem = read_json(exec_info.encode("utf-8", "surrogateescape"))
    if problem is not None:
        raise ValueError(f"$KUBERNETES_EXEC_INFO {problem} (kubectl sets it to an ExecCredential)")
    version = request.get("apiVersion") if isinstance(request, Mapping) else None
    if version is None:
        return EXEC_CREDENTIAL_VERSIONS[0]
    if version not in EXEC_CREDENTIAL_VERSIONS:
        raise ValueError(
            f"kubectl asked for ExecCredential {str(version)[:80]!r}; freshtoken speaks "
            f"{' and '.join(EXEC_CREDENTIAL_VERSIONS)}: set apiVersion in the kubeconfig's "
            "exec section to one of them"
        )
    return str(version)
