"""Token counts estimated here, for providers that do not count them for us (all but Anthropic).

OpenAI's own BPE encodings count the text (`o200k_base` for the GPT-4o, GPT-4.1, GPT-5 and o-series models,
`cl100k_base` for GPT-4 and GPT-3.5; other providers' models, whose tokenizers are not published, with
`o200k_base` too), plus the per-message overhead of OpenAI's chat format. Tool definitions count as their JSON
text. Images and documents count a fixed `MEDIA_TOKENS` each. Hence an estimate (the README says so): exact
for OpenAI text, close for other models' text, rough for media.

The encodings come from the `bpe-openai` package (GitHub's Rust `bpe` crates), whose wheels ship the BPE data;
`tiktoken` downloads its files at run time, which a gateway without internet access cannot do. Importing it
costs about 3 s and 140 MB (it loads every encoding's table), so it is imported at the first estimate, by the
workers that are asked for one, and the worker estimates in a thread so that its other calls go on meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import msgspec

from shared.messages import ChatRequest, ContentPart, DocumentPart, FilePart, ImagePart, TextPart

# OpenAI's chat format: every message costs 3 tokens around its content (+1 with a name), and the answer is
# primed with 3 more (OpenAI cookbook, "How to count tokens with tiktoken").
PER_MESSAGE = 3
PER_NAME = 1
REPLY_PRIMING = 3
# An image at Anthropic's and OpenAI's usual resized size (about 1,100 x 1,100 px: width x height / 750).
MEDIA_TOKENS = 1_600
_CL100K_MODELS = ("gpt-4-", "gpt-4", "gpt-3.5")
_O200K_FIRST = ("gpt-4o", "gpt-4.1", "gpt-4.5")

_json = msgspec.json.Encoder()


@cache
def _encoding(name: str) -> Any:
    import bpe_openai  # type: ignore[import-untyped]  # see the module docstring; ships no py.typed marker

    return bpe_openai.get_encoding(name)


def encoding_name(model: str) -> str:
    if model.startswith(_CL100K_MODELS) and not model.startswith(_O200K_FIRST):
        return "cl100k_base"
    return "o200k_base"


def estimate(request: ChatRequest, model: str) -> int:
    """The request's input tokens for `model`, estimated (see the module docstring)."""
    encoding = _encoding(encoding_name(model))

    def count(text: str) -> int:
        return len(encoding.encode_ordinary(text)) if text else 0

    total = REPLY_PRIMING
    for message in request.messages:
        total += PER_MESSAGE + count(message.role)
        if isinstance(message.name, str):
            total += PER_NAME + count(message.name)
        total += _content(message.content, count)
        for call in message.tool_calls or ():
            total += count(call.function.name) + count(call.function.arguments)
    for tool in request.tools or ():
        total += count(_json.encode(tool.function).decode())
    return total


def _content(content: str | list[ContentPart] | None, count: Callable[[str], int]) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return count(content)
    total = 0
    for part in content:
        if isinstance(part, TextPart):
            total += count(part.text)
        elif isinstance(part, DocumentPart) and part.media_type == "text/plain" and isinstance(part.data, str):
            total += count(part.data)
        elif isinstance(part, ImagePart | DocumentPart | FilePart):
            total += MEDIA_TOKENS
    return total
