"""The BFF tests' fixtures live in bff_support (shared with the test modules)."""

from .bff_support import clock, deploy, deployment, make_sessions, oauth_server, session_kind

__all__ = ["clock", "deploy", "deployment", "make_sessions", "oauth_server", "session_kind"]
