"""The embeddings adapters' pure functions against the providers' documented bodies (`tests/fixtures/`), the
ingress's reading of OpenAI's `input`, the per-input cache keys, batch splitting and the mock's vectors."""

from __future__ import annotations

import json
from array import array
from typing import Any

import msgspec
import pytest

from services.ingress import embeddings as edge
from services.providers.azure.adapter import adapter as azure
from services.providers.bedrock.adapter import adapter as bedrock
from services.providers.bedrock.settings import BedrockSettings
from services.providers.embedding import batches, estimated_tokens
from services.providers.gemini.adapter import adapter as gemini
from services.providers.gemini.settings import GeminiSettings
from services.providers.mock import embeddings as mock
from services.providers.openai.adapter import adapter as openai
from services.providers.openai.adapter import openai_compatible
from services.providers.openai.settings import OpenAICompatibleSettings, OpenAISettings
from shared.cache import vectors
from shared.errors import InvalidRequest, ProviderError
from shared.messages import EmbeddingRequest
from tests.unit.adapter_io import fixture

DOC_FLOATS = [0.0023064255, -0.009327292, -0.0028842222]  # the vector OpenAI's example shows


def f32(values: list[float]) -> bytes:
    return array("f", values).tobytes()


def body(data: bytes) -> Any:
    return json.loads(data)


def req(inputs: list[Any], **fields: Any) -> EmbeddingRequest:
    return EmbeddingRequest(model="m", input=inputs, **fields)


# --- OpenAI, Azure, compatible servers ----------------------------------------------------------------------


def test_openais_documented_request_reads_as_one_text() -> None:
    request, encoding = edge.parse(fixture("openai/embeddings_request.json"))
    assert request.input == ["The food was delicious and the waiter..."]
    assert request.model == "text-embedding-ada-002" and encoding == "float"


def test_openai_asks_for_base64_and_sends_what_the_client_set() -> None:
    call = openai.build_embed_request(req(["a", "b"], dimensions=256, user="u-1"), "text-embedding-3-small",
                                      OpenAISettings(api_key="sk-test"))
    assert call.url == "https://api.openai.com/v1/embeddings"
    assert call.headers["Authorization"] == "Bearer sk-test" and "Authorization" in call.secret_headers
    assert body(call.body) == {"model": "text-embedding-3-small", "input": ["a", "b"], "encoding_format": "base64",
                               "dimensions": 256, "user": "u-1"}


def test_a_compatible_server_is_asked_for_floats_with_the_clients_extras() -> None:
    request = req([[1, 2, 3]], extra_json=b'{"truncate_prompt_tokens": 8, "model": "other"}')
    call = openai_compatible.build_embed_request(request, "bge", OpenAICompatibleSettings(base_url="http://h/v1"))
    assert call.url == "http://h/v1/embeddings"
    assert body(call.body) == {"model": "bge", "input": [[1, 2, 3]], "encoding_format": "float",
                               "truncate_prompt_tokens": 8}  # an extra never overrides a modelled field


def test_openais_documented_response() -> None:
    result = openai.parse_embed_response(fixture("openai/embeddings_response.json"), {}, provider="openai",
                                         model="text-embedding-ada-002", inputs=1)
    assert result.vectors == [f32(DOC_FLOATS)]
    assert result.usage.prompt_tokens == 8 and result.usage.total_tokens == 8
    assert result.model == "text-embedding-ada-002"


def test_base64_vectors_and_out_of_order_indexes() -> None:
    import base64

    data = [{"object": "embedding", "index": 1, "embedding": base64.b64encode(f32([1.0, 2.0])).decode()},
            {"object": "embedding", "index": 0, "embedding": [0.5, -0.5]}]
    raw = json.dumps({"object": "list", "data": data, "model": "m", "usage": {"prompt_tokens": 2,
                                                                              "total_tokens": 2}}).encode()
    result = openai.parse_embed_response(raw, {}, provider="openai", model="m", inputs=2)
    assert result.vectors == [f32([0.5, -0.5]), f32([1.0, 2.0])]


@pytest.mark.parametrize("data", [
    [{"index": 0, "embedding": "not base64!"}],
    [{"index": 0, "embedding": "AAA="}],  # two bytes: not whole float32 values
    [{"index": 1, "embedding": [0.1]}],  # no index 0
])
def test_unusable_vectors_are_a_provider_error(data: list[dict[str, Any]]) -> None:
    with pytest.raises(ProviderError):
        openai.parse_embed_response(json.dumps({"data": data}).encode(), {}, provider="openai", model="m", inputs=1)


def test_azure_routes() -> None:
    settings = azure.settings
    classic = azure.build_embed_request(req(["x"]), "prod embed", msgspec.convert(
        {"base_url": "https://r.openai.azure.com/", "api_key": "k"}, settings))
    assert classic.url == ("https://r.openai.azure.com/openai/deployments/prod%20embed/embeddings"
                           "?api-version=2024-10-21")
    assert classic.headers["api-key"] == "k" and "Authorization" not in classic.headers
    v1 = azure.build_embed_request(req(["x"]), "prod", msgspec.convert(
        {"base_url": "https://r.openai.azure.com", "api_key": "k", "api_version": "v1"}, settings))
    assert v1.url == "https://r.openai.azure.com/openai/v1/embeddings"
    assert body(v1.body)["model"] == "prod"


# --- Gemini -------------------------------------------------------------------------------------------------


def test_gemini_one_text_is_embed_content() -> None:
    call = gemini.build_embed_request(req(["hello"], dimensions=768, extra_json=b'{"task_type": "RETRIEVAL_QUERY"}'),
                                      "gemini-embedding-001", GeminiSettings(api_key="g-key"))
    assert call.url == "https://generativelanguage.googleapis.com/v1beta/models/gemini-embedding-001:embedContent"
    assert call.headers["x-goog-api-key"] == "g-key"
    assert body(call.body) == {"content": {"parts": [{"text": "hello"}]}, "taskType": "RETRIEVAL_QUERY",
                               "outputDimensionality": 768}
    result = gemini.parse_embed_response(fixture("gemini/embed_response.json"), {}, provider="gemini",
                                         model="gemini-embedding-001", inputs=1)
    assert result.vectors == [f32(DOC_FLOATS)]


def test_gemini_several_texts_are_one_batch() -> None:
    call = gemini.build_embed_request(req(["a", "b"]), "models/gemini-embedding-001", GeminiSettings(api_key="k"))
    assert call.url.endswith("/v1beta/models/gemini-embedding-001:batchEmbedContents")
    assert body(call.body) == {"requests": [
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "a"}]}},
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "b"}]}}]}
    result = gemini.parse_embed_response(fixture("gemini/batch_embed_response.json"), {}, provider="gemini",
                                         model="gemini-embedding-001", inputs=2)
    assert result.vectors == [f32(DOC_FLOATS), f32([-0.0115685, 0.0203112, 0.0087334])]
    assert gemini.embed_batch_limit("gemini-embedding-001") == 100


def test_token_arrays_are_refused_by_text_only_providers() -> None:
    with pytest.raises(InvalidRequest) as caught:
        gemini.build_embed_request(req([[1, 2]]), "gemini-embedding-001", GeminiSettings(api_key="k"))
    assert caught.value.param == "input[0]"
    with pytest.raises(InvalidRequest):
        bedrock.build_embed_request(req([[1, 2]]), "cohere.embed-english-v3", BEDROCK)


# --- Bedrock ------------------------------------------------------------------------------------------------

BEDROCK = BedrockSettings(api_key="br-key", region="us-east-1")


def test_titan_one_text_a_call_with_dimensions_and_normalize() -> None:
    model = "amazon.titan-embed-text-v2:0"
    assert bedrock.embed_batch_limit(model) == 1
    call = bedrock.build_embed_request(req(["hi"], dimensions=256, extra_json=b'{"normalize": false}'), model, BEDROCK)
    assert call.url == "https://bedrock-runtime.us-east-1.amazonaws.com/model/amazon.titan-embed-text-v2:0/invoke"
    assert call.headers["Authorization"] == "Bearer br-key"
    assert body(call.body) == {"inputText": "hi", "dimensions": 256, "normalize": False}
    result = bedrock.parse_embed_response(fixture("bedrock/titan_embed_response.json"), {}, provider="bedrock",
                                          model=model, inputs=1)
    assert result.vectors == [f32(DOC_FLOATS)] and result.usage.prompt_tokens == 8


def test_cohere_texts_with_a_default_input_type_and_the_token_count_header() -> None:
    model = "cohere.embed-english-v3"
    assert bedrock.embed_batch_limit(model) == 96
    call = bedrock.build_embed_request(req(["hello world", "goodbye world"]), model, BEDROCK)
    assert body(call.body) == {"texts": ["hello world", "goodbye world"], "input_type": "search_document"}
    asked = bedrock.build_embed_request(req(["q"], extra_json=b'{"input_type": "search_query", "truncate": "END"}'),
                                        model, BEDROCK)
    assert body(asked.body) == {"texts": ["q"], "input_type": "search_query", "truncate": "END"}
    result = bedrock.parse_embed_response(fixture("bedrock/cohere_embed_response.json"),
                                          {"X-Amzn-Bedrock-Input-Token-Count": "4"}, provider="bedrock",
                                          model=model, inputs=2)
    assert result.vectors == [f32(DOC_FLOATS), f32([-0.0115685, 0.0203112, 0.0087334])]
    assert result.usage.prompt_tokens == 4
    by_type = bedrock.parse_embed_response(fixture("bedrock/cohere_embed_response_by_type.json"), {},
                                           provider="bedrock", model=model, inputs=1)
    assert by_type.vectors == [f32(DOC_FLOATS)]


def test_a_signed_embeddings_call() -> None:
    settings = BedrockSettings(region="us-west-2", aws_access_key_id="AKIDEXAMPLE",
                               aws_secret_access_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    call = bedrock.build_embed_request(req(["x"]), "amazon.titan-embed-text-v2:0", settings)
    assert call.headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/us-west-2/bedrock/aws4_request" in call.headers["Authorization"]


# --- the ingress's reading of `input` -----------------------------------------------------------------------


@pytest.mark.parametrize(("value", "inputs"), [
    ("one text", ["one text"]),
    (["a", "b"], ["a", "b"]),
    ([1212, 318, 257], [[1212, 318, 257]]),
    ([[1, 2], [3]], [[1, 2], [3]]),
])
def test_input_forms(value: Any, inputs: list[Any]) -> None:
    request, _ = edge.parse(json.dumps({"model": "m", "input": value}).encode())
    assert request.input == inputs


def test_unknown_fields_travel_as_extras() -> None:
    request, encoding = edge.parse(b'{"model": "m", "input": "x", "encoding_format": "base64", "input_type": "q"}')
    assert request.extra_json == b'{"input_type":"q"}' and encoding == "base64"


# --- keys, batches, the mock ------------------------------------------------------------------------------


def test_cache_keys_separate_tenants_models_dimensions_and_input_kinds() -> None:
    base = req(["x"])
    scope = vectors.scope(base, "tenant-a")
    assert scope != vectors.scope(base, "tenant-b")
    assert scope != vectors.scope(msgspec.structs.replace(base, model="other"), "tenant-a")
    assert scope != vectors.scope(msgspec.structs.replace(base, dimensions=4), "tenant-a")
    assert scope == vectors.scope(msgspec.structs.replace(base, user="someone"), "tenant-a")
    assert vectors.key(scope, "12") != vectors.key(scope, [12])
    assert vectors.keys(scope, ["a", "b"]) == [vectors.key(scope, "a"), vectors.key(scope, "b")]


def test_batches_cover_every_input_in_order() -> None:
    assert batches(200, 96) == [range(0, 96), range(96, 192), range(192, 200)]
    assert batches(3, 1) == [range(0, 1), range(1, 2), range(2, 3)]
    assert batches(5, 2048) == [range(0, 5)]


def test_estimated_tokens() -> None:
    assert estimated_tokens(req(["abcdefgh", [1, 2, 3]])) == 2 + 3


def test_pack_round_trip() -> None:
    assert vectors.unpack(vectors.pack([0.5, -0.25, 1.0])) == [0.5, -0.25, 1.0]


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_the_mock_embedding_is_close_for_paraphrases_and_far_otherwise() -> None:
    a = mock.vector("What is the capital of France?")
    assert cosine(a, mock.vector("what's the capital of france")) > 0.8
    assert cosine(a, mock.vector("Tell me the capital city of France please")) > 0.5
    assert cosine(a, mock.vector("How do I bake sourdough bread?")) < 0.3
    assert abs(cosine(a, a) - 1.0) < 1e-9
    assert mock.vector("same") == mock.vector("same") and len(mock.vector("x", 64)) == 64
    assert cosine(mock.vector(""), mock.vector("")) == 1.0  # no words: still a unit vector

