"""A person at a browser, played over HTTP: read a page's form, fill it in, submit it.

Tests and headless scripts use it as ``open_browser`` for a browser login, and to approve a
device login on the verification page. It speaks plain HTTP (httpx), follows no redirect on
its own, and understands exactly the HTML forms the reference server serves.
"""

from __future__ import annotations

import dataclasses
import threading
from html.parser import HTMLParser
from urllib.parse import urljoin

import httpx

__all__ = ["Browser", "BrowserError", "submit_form"]

_TIMEOUT = 10.0


class BrowserError(RuntimeError):
    """A page was not what a person would have expected (no form, an error page...)."""


class _FormParser(HTMLParser):
    """The first form of a page: its action, its fields and its submit buttons."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self.buttons: list[tuple[str, str]] = []
        self._in_form = False
        self._done = False
        self.alert: list[str] = []
        self._in_alert = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "p" and values.get("role") == "alert":
            self._in_alert = True
        if self._done:
            return
        if tag == "form" and not self._in_form:
            self._in_form = True
            self.action = values.get("action", "")
        elif self._in_form and tag == "input" and values.get("name"):
            self.fields[values["name"]] = values.get("value", "")
        elif self._in_form and tag == "button" and values.get("name"):
            self.buttons.append((values["name"], values.get("value", "")))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form" and self._in_form:
            self._in_form, self._done = False, True
        if tag == "p":
            self._in_alert = False

    def handle_data(self, data: str) -> None:
        if self._in_alert:
            self.alert.append(data)


def submit_form(
    page: httpx.Response, values: dict[str, str], button: str
) -> tuple[str, dict[str, str]]:
    """Where the page's form posts to, and what it sends with ``values`` filled in and the
    submit button whose value is ``button`` pressed."""
    parser = _FormParser()
    parser.feed(page.text)
    if parser.action is None:
        alert = " ".join("".join(parser.alert).split())
        raise BrowserError(
            f"HTTP {page.status_code} page without a form: {alert or page.text[:200]}"
        )
    data = {**parser.fields, **values}
    pressed = next(((name, value) for name, value in parser.buttons if value == button), None)
    if pressed is None:
        raise BrowserError(f"the form has no {button!r} button")
    data[pressed[0]] = pressed[1]
    return urljoin(str(page.url), parser.action), data


@dataclasses.dataclass
class Browser:
    """``open_browser`` for [`freshtoken.browser_login()`][freshtoken.browser_login] that signs in
    as ``username`` (or presses Deny), then visits the page the server redirects to, as a browser
    would.

    Blocking: browser logins call ``open_browser`` in a worker thread, and may return before
    it does (the listener answers, then the login goes on). ``visited`` holds the last page
    of each call (the loopback listener's answer) once [`wait()`][wait] says the call finished; a
    page that is not what a person expects raises [`BrowserError`][].
    """

    username: str = "demo"
    password: str = "demo"
    approve: bool = True
    visited: list[httpx.Response] = dataclasses.field(default_factory=list)
    _finished: threading.Event = dataclasses.field(default_factory=threading.Event, repr=False)

    def __call__(self, url: str) -> bool:
        try:
            with httpx.Client(timeout=_TIMEOUT, verify=False) as http:
                location = self.sign_in(http, url)
                self.visited.append(http.get(location))
        finally:
            self._finished.set()
        return True

    def wait(self, timeout: float = _TIMEOUT) -> bool:
        """Whether a call finished (within ``timeout`` seconds)."""
        return self._finished.wait(timeout)

    def sign_in(self, http: httpx.Client, url: str) -> str:
        """The URL the server sends the browser to after the login form (not visited)."""
        page = http.get(url)
        if page.is_redirect:  # an authorization request refused with a redirect
            return page.headers["location"]
        values = {"username": self.username, "password": self.password}
        action, data = submit_form(page, values, "approve" if self.approve else "deny")
        answer = http.post(action, data=data)
        if not answer.is_redirect:
            parser = _FormParser()
            parser.feed(answer.text)
            alert = " ".join("".join(parser.alert).split())
            raise BrowserError(f"the login form answered HTTP {answer.status_code}: {alert}")
        return answer.headers["location"]

    def approve_device(self, verification_uri: str, user_code: str | None = None) -> str:
        """Enter ``user_code`` (if the URI does not carry it) on the device page, sign in and
        approve (or deny); returns the heading of the page the server answers with."""
        with httpx.Client(timeout=_TIMEOUT, verify=False) as http:
            page = http.get(verification_uri)
            values = {"username": self.username, "password": self.password}
            if user_code is not None:
                values["user_code"] = user_code
            action, data = submit_form(page, values, "approve" if self.approve else "deny")
            answer = http.post(action, data=data)
        parser = _FormParser()
        parser.feed(answer.text)
        if answer.status_code != 200:
            alert = " ".join("".join(parser.alert).split())
            raise BrowserError(f"the device page answered HTTP {answer.status_code}: {alert}")
        start = answer.text.find("<h1>") + 4
        return answer.text[start : answer.text.find("</h1>", start)]
