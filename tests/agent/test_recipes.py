"""The recipes in docs/recipes/ that talk to the agent, run against a live one."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from agent_fixture import RunningAgent
from profile_fixture import LoggedIn
from tools import require

RECIPES = Path(__file__).resolve().parents[2] / "docs" / "recipes"


def code_block(recipe: str, language: str) -> str:
    text = (RECIPES / recipe).read_text()
    match = re.search(rf"```{language}\n(.*?)```", text, re.DOTALL)
    assert match is not None, f"no {language} block in {recipe}"
    return match.group(1)


def test_the_node_recipe_gets_a_token_from_the_agent(
    running_agent: RunningAgent, logged_in: LoggedIn, tmp_path: Path
) -> None:
    """node.md's program, run by node, reads the profile's token, expiry and scope."""
    require("node", "nodejs")
    program = tmp_path / "agent-token.mjs"
    program.write_text(code_block("node.md", "js"))
    result = subprocess.run(
        ["node", str(program), "default"],
        env={**logged_in.env, "FRESHTOKEN_AGENT_SOCKET": str(running_agent.socket_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["profile"] == "default"
    assert answer["scope"] == "read write"
    assert answer["header_ok"] is True


def test_curl_over_the_unix_socket(running_agent: RunningAgent, logged_in: LoggedIn) -> None:
    """curl --unix-socket, as in curl.md, gets the access token."""
    require("curl")
    result = subprocess.run(
        [
            "curl", "-s", "--unix-socket", str(running_agent.socket_path),
            "http://agent/v1/token?profile=default",
        ],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["access_token"] == logged_in.tokens().access_token
