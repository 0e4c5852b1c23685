"""Gemini models on Vertex AI: the Gemini API's request, answer, stream and error bodies (`gemini/adapter.py`),
at Vertex AI's address, `{endpoint}/v1/projects/{project}/locations/{location}/publishers/google/models/
{model}:generateContent` (and `:streamGenerateContent?alt=sse`), where the endpoint is
`https://{location}-aiplatform.googleapis.com`, or `https://aiplatform.googleapis.com` for the `global`
location (cloud.google.com/vertex-ai/generative-ai/docs/model-reference/inference). Authenticated with an
access token from Google application default credentials (`credentials.py`), added by the worker just
before the call is sent.
"""

from __future__ import annotations

from urllib.parse import quote

from services.providers.base import Authorizer, HttpCall
from services.providers.gemini.adapter import GeminiAdapter
from services.providers.vertex.credentials import GoogleToken
from services.providers.vertex.settings import VertexSettings
from shared.config import ProviderSettings
from shared.errors import InvalidRequest
from shared.messages import EmbeddingRequest


class VertexAdapter(GeminiAdapter):
    name = "vertex"
    settings: type[ProviderSettings] = VertexSettings
    default_base_url = ""  # per location

    def url(self, config: ProviderSettings, model: str, method: str) -> str:
        assert isinstance(config, VertexSettings)  # the worker hands each adapter its own settings
        location = config.location
        host = "aiplatform.googleapis.com" if location == "global" else f"{location}-aiplatform.googleapis.com"
        base_url = (config.base_url or f"https://{host}").rstrip("/")
        resource = f"projects/{quote(config.project or '', safe='')}/locations/{quote(location, safe='')}"
        return f"{base_url}/v1/{resource}/publishers/google/models/{quote(model, safe='')}:{method}"

    def build_embed_request(self, request: EmbeddingRequest, model: str, config: ProviderSettings) -> HttpCall:
        """Vertex AI embeds through `:predict`, not the Gemini API's `embedContent`: not served (yet)."""
        raise InvalidRequest("vertex: embeddings are not served through Vertex AI yet; use the gemini adapter.",
                             param="model", code="embeddings_unsupported")

    def authorizer(self, config: VertexSettings, *, provider: str) -> Authorizer | None:
        return GoogleToken(scopes=list(config.scopes), provider=provider)


adapter = VertexAdapter()
