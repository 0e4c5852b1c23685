"""`llm-edge`'s command line: every command has `--help`, the configuration option goes before or after
the command, and a mistake exits non-zero with a message (it used to exit 0 and print nothing)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from llm_edge import cli

COMMANDS = ["up", "ingress", "cache", "router", "provider", "bench", "hash-key", "status"]


def _run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "llm_edge.cli", *args], input=stdin, capture_output=True,
                          text=True, timeout=60, check=False)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main([command, "--help"])

    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: llm-edge {command}") and "--config" in out


def test_the_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["--help"])

    assert done.value.code == 0
    out = capsys.readouterr().out
    assert all(command in out for command in COMMANDS)


@pytest.mark.parametrize("where", ["before", "after"])
def test_hash_key_with_the_config_option_before_or_after_the_command(where: str, tmp_path: Path) -> None:
    config = tmp_path / "edge.yaml"
    config.write_text("providers:\n  mock: {}\n")
    args = ["-c", str(config), "hash-key"] if where == "before" else ["hash-key", "-c", str(config)]

    done = _run(*args, stdin="sk-test-key\n")

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == hashlib.sha256(b"sk-test-key").hexdigest()


@pytest.mark.parametrize("args", [
    [],                                   # no command
    ["serve"],                            # no such command
    ["provider"],                         # a provider needs its name
    ["bench", "--concurrency", "many"],   # not a number
    ["cache", "--no-such-option"],
])
def test_a_bad_invocation_exits_non_zero_with_a_message(args: list[str]) -> None:
    done = _run(*args)

    assert done.returncode == 2
    assert done.stderr.startswith("usage: llm-edge") and "error:" in done.stderr


def test_a_provider_not_in_the_configuration_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "edge.yaml"
    config.write_text("providers:\n  mock: {}\n")

    done = _run("provider", "openai", "--config", str(config))

    assert done.returncode == 2 and "provider 'openai' is not configured" in done.stderr


def test_a_missing_configuration_file_is_refused_before_anything_starts(tmp_path: Path) -> None:
    done = _run("-c", str(tmp_path / "nope.yaml"), "router")

    assert done.returncode == 2 and "configuration file not found" in done.stderr


def test_bench_with_no_target_running_says_so_and_fails() -> None:
    done = _run("bench", "--url", "http://127.0.0.1:9/v1", "--requests", "1", "--warmup", "0")

    assert done.returncode == 1 and "cannot connect" in done.stderr
