"""The BFF tests' fixtures live in bff_support (shared with the test modules) and
recording_upstream (an API that remembers what reached it)."""

from .bff_support import clock, deploy, deployment, make_sessions, oauth_server, session_kind
from .recording_upstream import upstream

__all__ = [
    "clock",
    "deploy",
    "deployment",
    "make_sessions",
    "oauth_server",
    "session_kind",
    "upstream",
]
