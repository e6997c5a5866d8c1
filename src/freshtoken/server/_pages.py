"""The server's HTML pages: the login form of ``/oauth/authorize`` and the device page.

Plain HTML5 forms that work without JavaScript or CSS files, so that a person, an HTTP client
in a test and a headless browser all drive them the same way. Every value is escaped.
"""

from __future__ import annotations

from collections.abc import Iterable
from html import escape

from ._config import DEMO_USERS, User

__all__ = ["device_done", "device_form", "error_page", "login_form"]

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem}"
    "label{display:block;margin-top:.8rem}input{width:100%;padding:.4rem;box-sizing:border-box}"
    "button{margin:1rem .5rem 0 0;padding:.5rem 1rem}.error{color:#a00}.hint{color:#555}"
)


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)} - freshtoken reference server</title>\n"
        f"<style>{_STYLE}</style>\n</head>\n<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


def _error(message: str | None) -> str:
    return f'<p class="error" role="alert">{escape(message)}</p>\n' if message else ""


def _demo_hint(users: Iterable[User]) -> str:
    if tuple(users) != DEMO_USERS:
        return ""
    pairs = ", ".join(f"{escape(u.username)} / {escape(u.password)}" for u in DEMO_USERS)
    return f'<p class="hint">Demo users: {pairs}.</p>\n'


def _credentials(username: str) -> str:
    return (
        '<label for="username">Username</label>\n'
        f'<input id="username" name="username" value="{escape(username)}"'
        ' autocomplete="username" required>\n'
        '<label for="password">Password</label>\n'
        '<input id="password" name="password" type="password"'
        ' autocomplete="current-password" required>\n'
    )


def _buttons(approve: str) -> str:
    # "Deny" skips the browser's required-field check: denying needs no password.
    return (
        f'<button type="submit" name="action" value="approve">{escape(approve)}</button>\n'
        '<button type="submit" name="action" value="deny" formnovalidate>Deny</button>\n'
    )


def login_form(
    *,
    action: str,
    request_id: str,
    client_id: str,
    scope: str,
    users: Iterable[User],
    username: str = "demo",
    error: str | None = None,
) -> str:
    body = (
        "<h1>Sign in</h1>\n"
        f"<p><strong>{escape(client_id)}</strong> asks for access"
        f"{': ' + escape(scope) if scope else ''}.</p>\n"
        f"{_error(error)}"
        f'<form method="post" action="{escape(action)}">\n'
        f'<input type="hidden" name="request_id" value="{escape(request_id)}">\n'
        f"{_credentials(username)}"
        f"{_buttons('Sign in')}"
        "</form>\n"
        f"{_demo_hint(users)}"
    )
    return _page("Sign in", body)


def device_form(
    *,
    action: str,
    user_code: str,
    users: Iterable[User],
    username: str = "demo",
    error: str | None = None,
) -> str:
    body = (
        "<h1>Connect a device</h1>\n"
        "<p>Enter the code your device shows, sign in, and approve.</p>\n"
        f"{_error(error)}"
        f'<form method="post" action="{escape(action)}">\n'
        '<label for="user_code">Code</label>\n'
        f'<input id="user_code" name="user_code" value="{escape(user_code)}"'
        ' autocomplete="one-time-code" autocapitalize="characters" required>\n'
        f"{_credentials(username)}"
        f"{_buttons('Approve')}"
        "</form>\n"
        f"{_demo_hint(users)}"
    )
    return _page("Connect a device", body)


def device_done(approved: bool) -> str:
    if approved:
        return _page(
            "Device connected",
            "<h1>Device connected</h1>\n<p>You can close this page and return to your device.</p>",
        )
    return _page(
        "Access denied",
        "<h1>Access denied</h1>\n<p>The device was not given access. You can close this page.</p>",
    )


def error_page(title: str, message: str) -> str:
    return _page(title, f"<h1>{escape(title)}</h1>\n{_error(message)}")
