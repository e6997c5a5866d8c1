"""A mistyped flag or command is named, with the one that was meant: every option of every
command, misspelt, gets "unknown option --x, did you mean --y?" (exit 2), before argparse can
blame a required flag or take the misspelt flag's value for something else."""

from __future__ import annotations

import argparse

import pytest
from cli_fixture import CLI

from freshtoken.cli import SUBCOMMANDS, _build_parser


def long_options(command: str) -> list[str]:
    parser = _build_parser(command)
    chooser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sub = chooser.choices[command]
    return [
        option
        for action in sub._actions
        if action.help != argparse.SUPPRESS
        for option in action.option_strings
        if option.startswith("--") and option not in ("--help", "--verbose")
    ]


def misspelt(option: str) -> str:
    """The option with two letters of its name swapped (not a prefix of it, as an
    abbreviation would be): --issuer -> --isseur."""
    name = option[2:]
    middle = len(name) // 2
    return "--" + name[: middle - 1] + name[middle] + name[middle - 1] + name[middle + 1 :]


CASES = [
    (command, option)
    for command in SUBCOMMANDS
    for option in long_options(command)
    if misspelt(option) != option  # a doubled letter swapped with itself
]


@pytest.mark.parametrize(("command", "option"), CASES, ids=[f"{c} {o}" for c, o in CASES])
def test_a_misspelt_flag_is_named_with_the_one_meant(cli: CLI, command: str, option: str) -> None:
    """`freshtoken COMMAND --misspelt`: one line naming it and the flag meant, exit 2."""
    wrong = misspelt(option)
    result = cli(command, wrong, "value")
    assert result.code == 2, result.err
    assert result.err == (
        f"freshtoken: unknown option {wrong}, did you mean {option}?"
        f" (see 'freshtoken {command} --help')\n"
    )


def test_login_isuer(cli: CLI) -> None:
    """The case as reported: the misspelt flag is named, not the required one it stood for."""
    result = cli("login", "--isuer", "http://127.0.0.1:1", "--client-id", "demo")
    assert result.code == 2
    assert result.err == (
        "freshtoken: unknown option --isuer, did you mean --issuer?"
        " (see 'freshtoken login --help')\n"
    )
    written = cli("login", "--isuer=http://127.0.0.1:1", "--client-id", "demo")
    assert written.err == result.err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["token", "--zzz"], "unknown option --zzz (see 'freshtoken token --help')"),
        (["token", "-x"], "unknown option -x (see 'freshtoken token --help')"),
        (["--vrebose", "token"], "unknown option --vrebose, did you mean --verbose?"),
        (["logn"], "unknown command 'logn', did you mean 'login'? (see 'freshtoken --help')"),
        (["dance"], "unknown command 'dance': one of serve, demo, login"),
        # A flag given its value, then a misspelt one: the value is not taken for a flag.
        (["status", "--store", "--json", "--jsn"], "unknown option --jsn, did you mean --json?"),
    ],
)
def test_unknown_options_and_commands(cli: CLI, argv: list[str], message: str) -> None:
    """Without a close match the flag is still named; a mistyped command gets the same."""
    result = cli(*argv)
    assert result.code == 2
    assert result.err.startswith(f"freshtoken: {message}")
    assert result.err.count("\n") == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["exec", "--", "true", "--isuer"],  # the command's own arguments are its business
        ["exec", "true", "--isuer"],
        ["token", "--prof", "default"],  # an abbreviation argparse accepts
        ["-v", "token"],  # an option before the command (the command was not found before)
        ["token", "-vv"],
    ],
)
def test_what_argparse_accepts_is_not_refused(cli: CLI, argv: list[str]) -> None:
    """The check refuses only what argparse would: these parse, and fail for want of a
    profile (exit 1), not as usage errors."""
    result = cli(*argv)
    assert result.code == 1, result.err
    assert "no profile" in result.err
