"""The import contracts `make lint` checks (pyproject.toml, [tool.importlinter]) hold today, and each one
fails when a violating import is planted in a copy of the tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` as `make lint` runs it, on the packages under `root` (found first on the path)."""
    env = dict(os.environ, PYTHONPATH=str(root))
    return subprocess.run([str(LINT_IMPORTS), "--no-logo", "--no-cache"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for package in ("shared", "services", "llm_edge"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_make_lint_checks_the_contracts() -> None:
    recipe = (ROOT / "Makefile").read_text().split("\nlint:", 1)[1].split("\n\n", 1)[0]
    assert "lint-imports --no-logo --no-cache" in recipe


def test_the_contracts_hold(tree: Path) -> None:
    result = lint_imports(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "planted", "contract"),
    [
        ("services/cache/planted.py", "import services.router.strategy", "never import each other"),
        ("services/providers/planted.py", "from services.ingress import parse", "never import each other"),
        ("shared/planted.py", "import services.providers.registry", "shared/ imports no service"),
        ("shared/planted.py", "import llm_edge.cli", "shared/ imports no service"),
        ("services/router/planted.py", "import nats", "Only shared.bus imports nats"),
        ("shared/planted.py", "from nats.aio.client import Client", "Only shared.bus imports nats"),
    ],
)
def test_a_planted_violation_breaks_its_contract(tree: Path, module: str, planted: str, contract: str) -> None:
    (tree / module).write_text(f'"""Planted by the test."""\n\n{planted}\n')
    result = lint_imports(tree)
    assert result.returncode == 1, result.stdout + result.stderr
    broken = result.stdout.split("Broken contracts", 1)[1]
    assert contract in broken and module.removesuffix(".py").replace("/", ".") in broken
