"""argparse value types shared by every `freshtoken` subcommand (the CLI's own and those of
the agent, the BFF and the reference server, which live in their packages): clear errors, no
crash."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = ["port", "seconds", "whole_number"]


def port(text: str) -> int:
    """A TCP port number, 0 (any free port) to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0..65535, not {value}")
    return value


def seconds(*, positive: bool = False, signed: bool = False) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
        if positive and value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, not {text}")
        if not signed and value < 0:
            raise argparse.ArgumentTypeError(f"must be >= 0, not {text}")
        return value

    parse.__name__ = "seconds"  # argparse names the type in its error messages
    return parse


def whole_number(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, not {value}")
        return value

    parse.__name__ = "whole number"
    return parse
