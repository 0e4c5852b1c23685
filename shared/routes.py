"""Model name -> ordered targets: the configured routes first, then `provider/model`, then the naming
conventions (`gpt-*` -> openai, `claude-*` -> anthropic, ...), each only if that provider is enabled.
"""

from __future__ import annotations

from shared.config import Config, Strategy, Target
from shared.errors import NotFound

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


class Routes:
    def __init__(self, config: Config) -> None:
        self._providers = set(config.providers)
        self._own_models = [m for settings in config.providers.values() for m in settings.public_models]
        self._routes: dict[str, list[Target]] = {route.name: list(route.targets) for route in config.models}
        self._strategies: dict[str, Strategy] = {route.name: route.strategy for route in config.models}

    def resolve(self, model: str) -> list[Target]:
        if (targets := self._routes.get(model)) is not None:
            return targets
        provider, sep, provider_model = model.partition("/")
        if sep and provider in self._providers and provider_model:
            return [Target(provider=provider, model=provider_model)]
        for prefix, provider in CONVENTIONS:
            if model.startswith(prefix):
                if provider in self._providers:
                    return [Target(provider=provider, model=model)]
                raise NotFound(
                    f"The model `{model}` belongs to provider `{provider}`, which is not enabled on this "
                    "gateway.",
                    param="model",
                )
        raise NotFound(f"The model `{model}` does not exist or you do not have access to it.", param="model")

    def strategy(self, model: str) -> Strategy:
        return self._strategies.get(model, "fallback")

    def public_models(self) -> list[str]:
        """Configured model names, then those a provider answers under its own name (the mock's `mock`)."""
        names = list(self._routes)
        return names + [m for m in dict.fromkeys(self._own_models) if m not in names]
