"""Whether an optional extra's library is installed (the cloud credential chains: `llm-edge[aws]`,
`[azure]`, `[google]`), asked by the settings at load without importing it."""

from __future__ import annotations

import importlib.util


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a dotted name whose parent package is missing
        return False


def missing(module: str, extra: str, what: str) -> str | None:
    """The load-time problem when `module` is absent: what needs it and how to install it."""
    return None if installed(module) else f"{what}, which needs {module}: pip install 'llm-edge[{extra}]'"
