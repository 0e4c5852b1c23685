"""A programmable mock LLM provider (OpenAI Chat Completions and Anthropic Messages) for tests and benchmarks."""
