"""An MCP server protected by the reference server: the test bed of MCP clients.

[`MCPResourceServer`][] serves the MCP SDK's own ``MCPServer`` (streamable HTTP at ``/mcp``)
on a loopback port of its own, as a resource server apart from its authorization server. Its
tokens are checked against a [`ReferenceServer`][freshtoken.server.ReferenceServer] in the same
process: they must be alive and issued for this server's URL (RFC 8707: a token of another
resource, or of none, is refused), and carry its ``scopes``. The SDK then answers as MCP
servers do: a 401 naming the protected resource metadata (RFC 9728) that it serves at
``/.well-known/oauth-protected-resource/mcp``, a 403 ``insufficient_scope``.

Tools: ``add(a, b)`` and ``whoami()`` (the token's subject); ``tool_calls`` counts the calls
that ran.

Needs the ``mcp`` package (``pip install mcp``: a test dependency, not a runtime one).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from ._runner import base_url, bind_socket, uvicorn_config
from ._state import BearerError

if TYPE_CHECKING:
    from ._runner import ReferenceServer

__all__ = ["MCPResourceServer"]

_START_TIMEOUT = 10.0


class MCPResourceServer:
    """An MCP server on a free loopback port whose tools need ``auth_server``'s tokens."""

    def __init__(
        self,
        auth_server: ReferenceServer,
        *,
        scopes: tuple[str, ...] = ("read",),
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.auth_server = auth_server
        self.scopes = scopes
        self._host = host
        self._port = port
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._mutex = threading.Lock()
        self.tool_calls = 0
        self.url = ""
        """The MCP endpoint once started (``http://127.0.0.1:PORT/mcp``), the resource."""

    def start(self) -> MCPResourceServer:
        import uvicorn
        from mcp.server.auth.provider import AccessToken
        from mcp.server.auth.settings import AuthSettings
        from mcp.server.mcpserver import MCPServer

        sock = bind_socket(self._host, self._port)
        self.url = f"{base_url(sock)}/mcp"
        outer = self

        class Verifier:
            """Checks each token against the reference server: alive, for this resource."""

            async def verify_token(self, token: str) -> AccessToken | None:
                try:
                    principal = outer.auth_server.state.authenticate(
                        token, None, resource=outer.url, strict_resource=True
                    )
                except BearerError:
                    return None
                return AccessToken(
                    token=token,
                    client_id=principal.client_id,
                    scopes=sorted(principal.scope),
                    expires_at=int(principal.expires_at),
                    resource=outer.url,
                    subject=principal.subject,
                )

        mcp = MCPServer(
            "freshtoken reference MCP server",
            log_level="WARNING",
            token_verifier=Verifier(),
            auth=AuthSettings(
                issuer_url=self.auth_server.issuer,  # type: ignore[arg-type]
                resource_server_url=self.url,  # type: ignore[arg-type]
                required_scopes=list(self.scopes),
                validate_token_resource=True,
            ),
        )

        @mcp.tool()
        def add(a: int, b: int) -> int:
            """a + b."""
            outer._count()
            return a + b

        @mcp.tool()
        def whoami() -> str:
            """The subject of the access token the call came with."""
            outer._count()
            from mcp.server.auth.middleware.auth_context import get_access_token

            token = get_access_token()
            return "" if token is None or token.subject is None else token.subject

        app = mcp.streamable_http_app(stateless_http=True, json_response=True)
        config = uvicorn_config(app)
        config.lifespan = "on"  # the SDK's session manager runs in the app's lifespan
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [sock]},
            name=f"freshtoken-mcp-{self.url}",
            daemon=True,
        )
        self._thread.start()
        started = threading.Event()

        def wait() -> None:
            while self._thread is not None and self._thread.is_alive():
                if self._server.started:
                    started.set()
                    return
                started.wait(0.02)

        waiter = threading.Thread(target=wait, daemon=True)
        waiter.start()
        if not started.wait(_START_TIMEOUT):
            self.stop()
            raise RuntimeError(f"the MCP server at {self.url} failed to start")
        return self

    def _count(self) -> None:
        with self._mutex:
            self.tool_calls += 1

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10.0)
        self._server = None
        self._thread = None

    def __enter__(self) -> MCPResourceServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"MCPResourceServer({self.url or 'unbound'}, auth={self.auth_server.issuer})"
