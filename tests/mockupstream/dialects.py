"""Which wire format a request path asks for: exact paths (OpenAI, Anthropic) first, then the providers
whose paths carry the model or deployment (embeddings first, then Azure, Gemini, Bedrock)."""

from __future__ import annotations

from tests.mockupstream import azure, bedrock, embeddings, gemini, responses
from tests.mockupstream.formats import DIALECTS, Dialect

# Azure OpenAI serves the Responses API on its v1 route (the deployment is the body's `model`).
_EXACT = {**DIALECTS, b"/v1/responses": responses.DIALECT, b"/openai/v1/responses": responses.DIALECT}

_PATTERNS = (
    (azure.matches, azure.DIALECT),
    (gemini.matches, gemini.DIALECT),
    (bedrock.matches, bedrock.DIALECT),
)


def dialect_for(path: bytes) -> Dialect | None:
    if (exact := _EXACT.get(path)) is not None:
        return exact
    if (embedding := embeddings.dialect_for(path)) is not None:
        return embedding
    for matches, dialect in _PATTERNS:
        if matches(path):
            return dialect
    return None
