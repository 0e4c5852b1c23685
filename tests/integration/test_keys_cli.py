"""`llm-edge keys` and `llm-edge spend` as an operator runs them (real processes, against a real ingress's
admin API): the secret is printed once and works at once, updates apply, a revoked key is refused, the
admin key comes from the environment or a file and never from a flag, and failures say what went wrong.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.infra import Nats
from tests.integration.test_admin_keys import ask, within_a_second
from tests.stack import Stack, make_config

ADMIN = "sk-admin-cli-0123456789"


@pytest.fixture
async def stack(nats_server: Nats) -> AsyncIterator[Stack]:
    config = make_config(nats_server.url, admin={"key_sha256": hashlib.sha256(ADMIN.encode()).hexdigest()},
                         keys=[{"name": "from-file", "sha256": "0" * 64}])
    stack = await Stack(config).start()
    yield stack
    await stack.close()


async def cli(stack: Stack, *argv: str, admin_key: str | None = ADMIN) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LLM_EDGE_ADMIN_KEY", "LLM_EDGE_CONFIG")}
    env["LLM_EDGE_URL"] = stack.url
    if admin_key is not None:
        env["LLM_EDGE_ADMIN_KEY"] = admin_key
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "llm_edge.cli", *argv, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def json_of(stack: Stack, *argv: str) -> Any:
    code, out, err = await cli(stack, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


async def test_keys_from_the_command_line(stack: Stack) -> None:
    code, out, err = await cli(stack, "keys", "create", "--name", "ci", "--models", "mock", "--rpm", "50")
    assert code == 0, err
    secret = re.search(r"^key: (sk-edge-\S+)$", out, re.M)
    assert secret is not None, out
    assert "cannot show it again" in out
    assert await ask(stack.url, secret[1]) == 200
    assert await ask(stack.url, secret[1], model="mock/other") == 403

    code, out, _ = await cli(stack, "keys", "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["NAME", "SOURCE", "TENANT"]
    assert [line.split()[:2] for line in lines[1:]] == [["from-file", "config"], ["ci", "store"]]
    assert secret[1] not in out

    updated = await json_of(stack, "keys", "update", "ci", "--models", "none", "--budget-usd", "2.5")
    assert (updated["models"], updated["budget_usd"], updated["rpm"]) == (None, 2.5, 50)
    assert (await json_of(stack, "keys", "show", "ci"))["budget_usd"] == 2.5

    rotated = await json_of(stack, "keys", "rotate", "ci")
    assert rotated["key"] != secret[1]
    await within_a_second([stack.url], secret[1], 401)
    assert await ask(stack.url, rotated["key"]) == 200

    code, out, _ = await cli(stack, "keys", "revoke", "ci")
    assert (code, out.strip()) == (0, "revoked: ci")
    await within_a_second([stack.url], rotated["key"], 401)

    code, out, _ = await cli(stack, "spend", "--group-by", "key,model", "--period", "today")
    assert code == 0
    # One answer was paid for; the same question again (after rotation too: same tenant) was a cache hit.
    assert re.search(r"^ci\s+mock\s+1\s", out, re.M), out


async def test_the_command_line_says_what_went_wrong(stack: Stack, tmp_path: Path) -> None:
    code, _, err = await cli(stack, "keys", "list", admin_key=None)
    assert code == 1 and "LLM_EDGE_ADMIN_KEY" in err
    code, _, err = await cli(stack, "keys", "list", admin_key="sk-wrong")
    assert code == 1 and "401 invalid_api_key" in err
    code, _, err = await cli(stack, "keys", "update", "from-file", "--rpm", "5")
    assert code == 1 and "409 key_read_only" in err
    code, _, err = await cli(stack, "keys", "show", "nobody")
    assert code == 1 and "404 key_not_found" in err
    code, _, err = await cli(stack, "keys", "update", "nobody")
    assert code == 1 and "nothing to change" in err
    code, _, err = await cli(stack, "keys", "create", "--rpm", "many")
    assert code == 2 and "--rpm" in err  # argparse's usage error
    key_file = tmp_path / "admin-key"
    key_file.write_text(ADMIN + "\n")
    code, out, err = await cli(stack, "keys", "list", "--admin-key-file", str(key_file), admin_key=None)
    assert code == 0, err
    assert "from-file" in out
