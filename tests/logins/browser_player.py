"""A person at a browser, for ``freshtoken login`` tests: run through ``$BROWSER`` with the URL.

It loads the authorize URL, fills in the reference server's login form (or presses Deny),
and follows the redirect to the CLI's loopback listener, all over real HTTP.
"""

from __future__ import annotations

import argparse
import sys

from freshtoken.server import Browser, BrowserError


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--username", default="demo")
    parser.add_argument("--password", default="demo")
    parser.add_argument("--deny", action="store_true")
    parser.add_argument("url")
    args = parser.parse_args()
    try:
        Browser(args.username, args.password, approve=not args.deny)(args.url)
    except BrowserError as error:
        print(f"browser_player: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
