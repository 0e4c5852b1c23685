"""Each adapter's settings struct by adapter name: what configuration loading needs (handed to it by the
CLI), without the adapters' code, so a process that only reads the configuration loads no adapter.
`registry.py` lists the adapters themselves under the same names (a unit test keeps the two in step)."""

from __future__ import annotations

from services.providers.anthropic.settings import AnthropicSettings
from services.providers.azure.settings import AzureSettings
from services.providers.bedrock.settings import BedrockSettings
from services.providers.gemini.settings import GeminiSettings
from services.providers.mock.settings import MockSettings
from services.providers.openai.settings import OpenAICompatibleSettings, OpenAISettings
from services.providers.vertex.settings import VertexSettings
from shared.config import Adapters

SETTINGS: Adapters = {
    cls.tag(): cls
    for cls in (OpenAISettings, OpenAICompatibleSettings, AnthropicSettings, AzureSettings, BedrockSettings,
                GeminiSettings, VertexSettings, MockSettings)
}
