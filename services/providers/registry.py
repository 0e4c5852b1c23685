"""The one place provider adapters are listed: adapter name -> adapter. Their settings structs, which
configuration loading needs without the adapters' code, are listed by `settings.py` under the same names."""

from __future__ import annotations

from typing import Any

from services.providers.anthropic import adapter as anthropic
from services.providers.azure import adapter as azure
from services.providers.base import HttpAdapter, LocalAdapter
from services.providers.bedrock import adapter as bedrock
from services.providers.gemini import adapter as gemini
from services.providers.mock import adapter as mock
from services.providers.openai import adapter as openai
from services.providers.vertex import adapter as vertex

ADAPTERS: dict[str, HttpAdapter[Any] | LocalAdapter[Any]] = {
    "openai": openai.adapter,
    "openai_compatible": openai.openai_compatible,
    "anthropic": anthropic.adapter,
    "azure": azure.adapter,
    "bedrock": bedrock.adapter,
    "gemini": gemini.adapter,
    "mock": mock.adapter,
    "vertex": vertex.adapter,
}
