"""A Messages client's thinking settings as the reasoning control of a translated provider: Anthropic's
`thinking` budget or `output_config.effort` -> an OpenAI-style effort ("low", "medium", "high"). Providers
without such a control ignore thinking (see the README)."""

from __future__ import annotations

from msgspec import UnsetType

from shared.messages import AnthropicParams, ChatRequest, Thinking

# Budget ceilings for each effort, after Gemini's published mapping of OpenAI efforts to thinking budgets
# (low 1K, medium 8K, high 24K tokens): a budget maps to the least effort whose budget covers it.
_BUDGET_EFFORTS = ((1024, "low"), (8192, "medium"))
_EFFORTS = {"low": "low", "medium": "medium", "high": "high", "max": "high", "xhigh": "high"}


def thinking_of(request: ChatRequest) -> Thinking | None:
    params = request.anthropic
    if isinstance(params, AnthropicParams) and isinstance(params.thinking, Thinking):
        return params.thinking
    return None


def effort_of(thinking: Thinking | None) -> str | None:
    """The effort a thinking setting asks for; None when it asks for none (disabled) or leaves it to the
    provider (adaptive without an effort)."""
    if thinking is None or thinking.type == "disabled":
        return None
    if isinstance(thinking.effort, str):
        return _EFFORTS.get(thinking.effort)
    if thinking.type == "enabled" and not isinstance(thinking.budget_tokens, UnsetType):
        return next((effort for ceiling, effort in _BUDGET_EFFORTS if thinking.budget_tokens <= ceiling), "high")
    return None
