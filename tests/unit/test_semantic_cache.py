"""The semantic cache's pure parts: which requests may match, what is embedded, the partition key, and the
numpy index (search, threshold, TTL, LRU bound, dimensions)."""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np
import pytest

from services.cache.semantic_index import OFFLOAD_ELEMENTS, SemanticIndex
from shared.cache import semantic
from shared.config import SemanticCache
from shared.messages import ChatRequest

SETTINGS = SemanticCache(embedding_model="embed", threshold=0.9)
WHOLE = SemanticCache(embedding_model="embed", threshold=0.9, scope="conversation")


def chat(*turns: Any, **params: Any) -> ChatRequest:
    messages = [t if isinstance(t, dict) else {"role": "user", "content": t} for t in turns]
    return msgspec.convert({"model": "m", "messages": messages, **params}, ChatRequest)


def unit(*values: float) -> np.ndarray[Any, np.dtype[np.float32]]:
    return np.array(values, dtype=np.float32)


# --- rules ---------------------------------------------------------------------------------------

def test_last_user_scope_embeds_the_last_user_turn_and_partitions_on_the_rest() -> None:
    system = {"role": "system", "content": "Be brief."}
    a, b = chat(system, "capital of France?"), chat(system, "France's capital?")
    assert semantic.embedded_text(a, "last_user") == "capital of France?"
    assert semantic.partition(a, "acme", SETTINGS) == semantic.partition(b, "acme", SETTINGS)
    other_system = chat({"role": "system", "content": "Be verbose."}, "capital of France?")
    assert semantic.partition(a, "acme", SETTINGS) != semantic.partition(other_system, "acme", SETTINGS)


@pytest.mark.parametrize("change", [
    {"temperature": 0.5}, {"top_p": 0.5}, {"max_tokens": 10}, {"seed": 1}, {"n": 2}, {"stop": "x"},
    {"response_format": {"type": "json_object"}},
    {"tools": [{"type": "function", "function": {"name": "f"}}]},
])
def test_every_parameter_and_the_tool_list_change_the_partition(change: dict[str, Any]) -> None:
    assert semantic.partition(chat("q"), "t", SETTINGS) != semantic.partition(chat("q", **change), "t", SETTINGS)


def test_tenant_model_and_embedding_settings_change_the_partition_but_stream_and_user_do_not() -> None:
    base = semantic.partition(chat("q"), "acme", SETTINGS)
    assert semantic.partition(chat("q"), "globex", SETTINGS) != base
    assert semantic.partition(msgspec.structs.replace(chat("q"), model="m2"), "acme", SETTINGS) != base
    assert semantic.partition(chat("q"), "acme", SemanticCache(embedding_model="other")) != base
    assert semantic.partition(chat("q", stream=True, user="u", metadata={"k": "v"}), "acme", SETTINGS) == base


def test_conversation_scope_embeds_every_turn_and_partitions_on_parameters_only() -> None:
    a = chat({"role": "system", "content": "Be brief."}, "hi")
    assert semantic.embedded_text(a, "conversation") == "system: Be brief.\nuser: hi"
    assert semantic.partition(a, "t", WHOLE) == semantic.partition(chat("other words"), "t", WHOLE)


def test_tool_turns_volatile_tools_and_non_text_parts_are_never_eligible() -> None:
    assert semantic.eligible(chat("q"), SETTINGS)
    call = {"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                                                  "function": {"name": "f", "arguments": "{}"}}]}
    result = {"role": "tool", "tool_call_id": "c", "content": "42"}
    assert not semantic.eligible(chat("q", call, result, "and now?"), SETTINGS)
    clock = [{"type": "function", "function": {"name": "now"}}]
    volatile = SemanticCache(embedding_model="embed", volatile_tools=["now"])
    assert semantic.eligible(chat("q", tools=clock), SETTINGS)
    assert not semantic.eligible(chat("q", tools=clock), volatile)
    image = {"role": "user", "content": [{"type": "text", "text": "what is this"},
                                         {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}
    assert not semantic.eligible(chat(image), SETTINGS)
    assert not semantic.eligible(chat({"role": "user", "content": ""}), SETTINGS)


# --- index ---------------------------------------------------------------------------------------

def rounded(found: tuple[str, float] | None) -> tuple[str, float] | None:
    return None if found is None else (found[0], round(found[1], 5))


def test_the_closest_entry_above_the_threshold_is_found_with_its_cosine() -> None:
    index = SemanticIndex(10)
    index.add("p", "near", unit(1, 0.1, 0), 60, now=0)
    index.add("p", "far", unit(0, 1, 0), 60, now=0)
    found = index.search("p", unit(2, 0, 0), 0.9, now=1)  # not a unit vector: normalised first
    assert found is not None
    assert found[0] == "near"
    assert found[1] == pytest.approx(1 / np.sqrt(1.01), abs=1e-6)
    assert index.search("p", unit(1, 1, 0), 0.9, now=1) is None  # best is 0.77: below
    assert index.search("other", unit(1, 0.1, 0), 0.5, now=1) is None  # another partition


def test_entries_expire_with_their_ttl_and_are_dropped() -> None:
    index = SemanticIndex(10)
    index.add("p", "old", unit(1, 0), 5, now=0)
    index.add("p", "new", unit(0.9, 0.1), 50, now=0)
    assert rounded(index.search("p", unit(1, 0), 0.5, now=10)) == ("new", round(0.9 / np.sqrt(0.82), 5))
    assert len(index) == 1


def test_the_least_recently_used_entry_leaves_first_when_full() -> None:
    index = SemanticIndex(2)
    index.add("p", "a", unit(1, 0), 60, now=0)
    index.add("q", "b", unit(0, 1), 60, now=0)
    assert index.search("p", unit(1, 0), 0.9, now=1) is not None  # `a` is now the most recent
    index.add("p", "c", unit(1, 1), 60, now=1)
    assert len(index) == 2
    assert index.search("q", unit(0, 1), 0.9, now=1) is None  # `b` left
    assert rounded(index.search("p", unit(1, 0), 0.99, now=1)) == ("a", 1.0)


def test_rows_stay_right_after_removals_and_growth() -> None:
    index = SemanticIndex(1000)
    rng = np.random.default_rng(7)
    vectors = {f"k{i}": rng.normal(size=8).astype(np.float32) for i in range(100)}
    for name, vector in vectors.items():
        index.add("p", name, vector, 60, now=0)
    for i in range(0, 100, 3):
        index.remove(f"k{i}")
    for i, (name, vector) in enumerate(vectors.items()):
        found = index.search("p", vector, 0.999, now=0)
        assert (found is None) if i % 3 == 0 else (found is not None and found[0] == name)


def test_a_vector_of_another_dimension_or_zero_is_not_compared() -> None:
    index = SemanticIndex(10)
    assert index.add("p", "a", unit(1, 0), 60, now=0)
    assert not index.add("p", "b", unit(1, 0, 0), 60, now=0)
    assert not index.add("p", "c", unit(0, 0), 60, now=0)
    assert index.search("p", unit(1, 0, 0), 0.1, now=0) is None
    assert index.search("p", unit(0, 0), 0.1, now=0) is None


def test_a_key_filled_again_replaces_its_vector() -> None:
    index = SemanticIndex(10)
    index.add("p", "a", unit(1, 0), 60, now=0)
    index.add("p", "a", unit(0, 1), 60, now=0)
    assert len(index) == 1
    assert index.search("p", unit(1, 0), 0.5, now=0) is None
    assert rounded(index.search("p", unit(0, 1), 0.5, now=0)) == ("a", 1.0)


def test_the_bytes_bound_evicts_the_least_recently_used() -> None:
    index = SemanticIndex(100, max_bytes=3 * 2 * 4)  # three 2-dimension float32 vectors
    for name, vector in {"a": unit(1, 0), "b": unit(0, 1), "c": unit(1, 1), "d": unit(1, -1)}.items():
        index.add("p", name, vector, 60, now=0)
    assert len(index) == 3
    assert index.bytes == 24
    assert index.search("p", unit(1, 0), 0.99, now=0) is None  # `a` left
    index.remove("b")
    assert index.bytes == 16


async def test_a_large_partition_is_searched_off_the_loop_with_the_same_answer() -> None:
    index = SemanticIndex(10_000)
    rng = np.random.default_rng(3)
    dims = 256
    vectors = rng.standard_normal((OFFLOAD_ELEMENTS // dims + 10, dims), dtype=np.float32)
    for i, vector in enumerate(vectors):
        index.add("p", f"k{i}", vector, 60)
    target = vectors[1234] + 0.01 * rng.standard_normal(dims, dtype=np.float32)
    assert rounded(await index.search_async("p", target, 0.99)) == rounded(index.search("p", target, 0.99))
    found = await index.search_async("p", target, 0.99)
    assert found is not None and found[0] == "k1234"
    assert await index.search_async("p", -vectors[1234], 0.5) is None


def test_a_partition_that_shrinks_keeps_its_rows_right() -> None:
    index = SemanticIndex(1000)
    rng = np.random.default_rng(11)
    vectors = {f"k{i}": rng.normal(size=8).astype(np.float32) for i in range(200)}
    for name, vector in vectors.items():
        index.add("p", name, vector, 60, now=0)
    kept = [f"k{i}" for i in range(0, 200, 20)]
    for name in vectors:
        if name not in kept:
            index.remove(name)
    assert len(index) == len(kept)
    assert index.bytes == len(kept) * 8 * 4
    for name in kept:
        found = index.search("p", vectors[name], 0.999, now=0)
        assert found is not None and found[0] == name
    index.add("p", "new", vectors["k1"], 60, now=0)  # a shrunk matrix still takes entries
    assert rounded(index.search("p", vectors["k1"], 0.999, now=0)) == ("new", 1.0)
