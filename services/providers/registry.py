"""The one place provider adapters are listed: adapter name -> adapter."""

from __future__ import annotations

from services.providers import anthropic, azure, bedrock, gemini, mock, openai
from services.providers.base import HttpAdapter, LocalAdapter

ADAPTERS: dict[str, HttpAdapter | LocalAdapter] = {
    "openai": openai.adapter,
    "openai_compatible": openai.openai_compatible,
    "anthropic": anthropic.adapter,
    "azure": azure.adapter,
    "bedrock": bedrock.adapter,
    "gemini": gemini.adapter,
    "mock": mock.adapter,
}

# Model-name conventions for names that no configured route claims: prefix -> provider.
CONVENTIONS: tuple[tuple[str, str], ...] = (
    ("gpt-", "openai"),
    ("chatgpt-", "openai"),
    ("o1", "openai"),
    ("o3", "openai"),
    ("o4", "openai"),
    ("claude-", "anthropic"),
    ("gemini-", "gemini"),
    ("mock", "mock"),
)
